"""The demo: a deterministic text model and a prompt with its golden set, for `bgserve demo`."""

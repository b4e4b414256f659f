"""The ``bgserve`` command line: typer verbs over the control API, plus local verbs."""

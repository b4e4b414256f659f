"""The data-plane process: weighted routing, strict HTTP/1.1, mirroring.

It depends on the standard library, httptools, uvloop, the pure latency histogram
(:mod:`bgserve.domain.latency`) and the stdlib-only :mod:`bgserve.gcpause`, nothing else
of bgserve (``tests/unit/test_import_graph.py`` holds it to that). What the control side
and the process say to each other is defined once, in :mod:`bgserve.dataplane.wire`.
"""

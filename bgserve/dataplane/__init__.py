"""The data-plane process: weighted routing, strict HTTP/1.1, mirroring.

It depends on the standard library, httptools and uvloop only.
"""

"""Thin HTTP routes: parse, authorize, call the service, shape the answer."""

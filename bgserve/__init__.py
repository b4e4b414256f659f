"""bgserve: blue-green deployment of MLflow model + prompt releases, gated on output quality."""

__version__ = "0.1.0"

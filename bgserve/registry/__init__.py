"""MLflow: resolve model and prompt URIs, build bundles, move aliases."""

"""The Databricks backend: a deployment is a Model Serving endpoint, a release one served
entity on it (the bundle's MLflow model version), the route its traffic config (see
:mod:`.backend`)."""

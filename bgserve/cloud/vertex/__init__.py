"""The Vertex AI backend: a deployment is a dedicated endpoint, a release one model and
one deployed model on it, the route the endpoint's traffic split (see :mod:`.backend`)."""

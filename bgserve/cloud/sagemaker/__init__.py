"""The SageMaker backend: a deployment is an endpoint, a release one model and production
variant on it, the route the variants' weights (see :mod:`.backend`)."""

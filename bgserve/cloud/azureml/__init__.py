"""The Azure ML backend: a deployment is a managed online endpoint, a release one managed
online deployment on it, the route the endpoint's traffic map (see :mod:`.backend`)."""

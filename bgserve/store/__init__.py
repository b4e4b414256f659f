"""State on disk: releases, deployments and their history (see :mod:`.store`)."""

from bgserve.store.store import Event, Store, StoredDeployment, weights_of

__all__ = ["Event", "Store", "StoredDeployment", "weights_of"]

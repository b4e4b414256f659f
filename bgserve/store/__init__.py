"""State on disk: releases, deployments and their history (see :mod:`.store`)."""

from bgserve.store.records import Event, StoredDeployment, weights_of
from bgserve.store.store import Store, StoredShadow

__all__ = ["Event", "Store", "StoredDeployment", "StoredShadow", "weights_of"]

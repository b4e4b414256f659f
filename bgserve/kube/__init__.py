"""Kubernetes backends: shared client code, KServe (:mod:`.kserve`) and Seldon (:mod:`.seldon`)."""

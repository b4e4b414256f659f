"""Requests bgserve sends to a real kube-apiserver during one KServe flow.

The flow: deploy release 1, stage release 2, shift 10 -> 50 -> 100, revert. A thread
plays KServe and reports each InferenceService Ready ``--slot-start`` seconds after it
first sees its generation (a slot that takes a while to start, as in a cluster).

    python bench/kube_requests.py [--slot-start 2] [--poll 0.1]

Prints one JSON line: requests by verb (get, list, watch, create, patch, update,
delete) and the flow's duration. Needs the binaries of ``tools/kube-apiserver.sh build``
and the official CRDs (``$BGSERVE_CRD_DIR``, else fetched by ``tools/crds.py``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bgserve.domain import rollout
from bgserve.domain.rollout import DeploymentState
from bgserve.kube.kserve.backend import KServeBackend, required_rbac
from tests.support.crd_schema import crd_dir
from tests.support.kube import KSERVE, NS, Controller, perform
from tests.support.kube_namespace import KubeNamespace
from tests.support.kube_real_apiserver import ControlPlane, binaries


def slow_kserve(ns: KubeNamespace, delay: float) -> Controller:
    """Ready ``delay`` seconds after an InferenceService's generation is first seen."""
    first_seen: dict[tuple[str, int], float] = {}

    def reconcile(obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        key = (meta["name"], meta["generation"])
        started = first_seen.setdefault(key, time.monotonic())
        if time.monotonic() - started < delay:
            return
        status = {
            "observedGeneration": meta["generation"],
            "conditions": [{"type": "Ready", "status": "True"}],
            "url": f"http://{meta['name']}.{NS}.example.com",
        }
        ns.set_status(*KSERVE, NS, meta["name"], status)

    return Controller(ns, (KSERVE[1],), reconcile, lambda _: None)


def flow(backend: KServeBackend) -> DeploymentState:
    state = perform(backend, rollout.create("chat", 1))
    for step in (
        lambda s: rollout.stage_green(s, 2),
        lambda s: rollout.shift(s, 10, force=True),
        lambda s: rollout.shift(s, 50, force=True),
        lambda s: rollout.shift(s, 100, force=True),
        rollout.revert,
    ):
        state = perform(backend, step(state))
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slot-start", type=float, default=2.0)
    parser.add_argument("--poll", type=float, default=0.1, help="kube_poll_interval_seconds")
    args = parser.parse_args()
    crds = crd_dir()
    if crds is None:
        raise SystemExit("official CRDs not found: run tools/crds.py, or set BGSERVE_CRD_DIR")
    plane = ControlPlane(binaries(), Path(crds))
    try:
        cluster = plane.start()
        ns = KubeNamespace(cluster)
        settings = ns.settings(
            required_rbac("gateway"),
            kube_poll_interval_seconds=args.poll,
            slot_ready_timeout_seconds=60,
        )
        backend = KServeBackend(settings, api=ns.api_for(settings))
        started = time.monotonic()
        with slow_kserve(ns, args.slot_start):
            flow(backend)
        seconds = time.monotonic() - started
        verbs = Counter(r.verb for r in ns.requests)
        print(json.dumps({"requests": dict(verbs), "seconds": round(seconds, 1)}))
        backend.close()
        ns.close()
    finally:
        plane.stop()


if __name__ == "__main__":
    main()

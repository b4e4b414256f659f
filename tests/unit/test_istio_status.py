"""Reading istiod's report on a VirtualService: only ``Reconciled`` True for the current
generation counts, whichever way the generation is spelt."""

from __future__ import annotations

from typing import Any

import pytest

from bgserve.errors import BackendError
from bgserve.kube.istio_status import reconciled_report, reconciled_waiting_on


def service(observed: Any, state: str | None, message: str = "") -> dict[str, Any]:
    conditions = [{"type": "PassedAnalysis", "status": "False", "reason": "errorsFound"}]
    if state is not None:
        conditions.append(
            {"type": "Reconciled", "status": state, "reason": "r", "message": message}
        )
    status: dict[str, Any] = {"observedGeneration": observed, "conditions": conditions}
    meta = {"name": "chat", "namespace": "models", "generation": 3}
    return {"metadata": meta, "status": status}


@pytest.mark.parametrize("observed", [3, "3"])
def test_reconciled_for_the_current_generation_is_taken(observed: Any) -> None:
    report = reconciled_report(service(observed, "True", "5/5 complete"))
    assert report == {
        "route": "models/chat",
        "generation": 3,
        "taken_by": ["istiod (5/5 complete)"],
    }


@pytest.mark.parametrize(
    ("observed", "state", "said"),
    [
        (2, "True", "Istio reported nothing on generation 3"),  # an older generation's push
        ("3", "False", "Reconciled=False (r, 1/5 complete)"),
        (None, None, "Istio reported nothing on generation 3"),
        (3, None, "Istio reported nothing on generation 3"),  # analysis alone holds nothing
    ],
)
def test_anything_else_is_still_waiting(observed: Any, state: str | None, said: str) -> None:
    obj = service(observed, state, "1/5 complete")
    assert reconciled_report(obj) is None
    assert reconciled_waiting_on(obj) == said


def test_a_deleted_service_ends_the_wait() -> None:
    with pytest.raises(BackendError, match="deleted"):
        reconciled_report(None)
    assert reconciled_waiting_on(None) == "the VirtualService is gone"

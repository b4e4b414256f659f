"""The one error tree of bgserve.

Every failure bgserve reports is one of these. Foreign errors (MLflow, Kubernetes,
httpx, SQLAlchemy) are translated where they enter, with ``raise ... from exc``.
The HTTP mapping lives in ``bgserve.api.errors``; nothing here knows about HTTP.

::

    BgserveError
    ├── InvalidInput            bad request body, URI, name, golden set      (422)
    │   └── PayloadTooLarge     over a size limit                              (413)
    ├── NotFound                unknown release, deployment, model, prompt     (404)
    ├── Conflict                illegal transition, stale write, busy          (409)
    │   ├── IllegalTransition   the state machine refuses the step
    │   ├── StaleWrite          optimistic concurrency lost a race
    │   └── GateClosed          promotion refused by the comparison gate
    ├── Unauthorized            no or unknown bearer token                     (401)
    ├── Forbidden               token's role is too low                        (403)
    └── Unavailable             a dependency is down or not ready              (503)
        ├── RegistryUnavailable the MLflow store cannot be reached
        ├── ElectionForbidden   this replica may not take part in leader election
        └── BackendError        the serving backend failed a step
            └── ReadinessTimeout a slot did not become ready in time
"""

from __future__ import annotations

HINTS = {
    "stage": "stage a green release on the deployment",
    "compare": "compare blue and green on a golden set",
    "force": "force the step past the gate (recorded in the history)",
    "revert": "revert the deployment",
    "promote": "promote green (to 100 to finish)",
    "wait": "wait for the operation under way, then retry",
    "retry": "retry later",
    "other-name": "choose another name",
}
"""The fixes an error can name by ``hint``; front ends render them in their own terms."""


class BgserveError(Exception):
    """Base of every error bgserve raises on purpose.

    ``message`` is written for the person who made the call: it names the field or
    the thing at fault and, where one exists, the fix, in words that fit every caller
    (no HTTP route, no CLI flag). ``hint`` names the fix as one of :data:`HINTS`, so
    each front end can say it its own way (the API returns it, the CLI turns it into
    the verb to run).
    """

    def __init__(
        self, message: str, *, details: dict[str, object] | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.hint = hint


class InvalidInput(BgserveError):
    """The request is malformed: a field is missing, out of range or of the wrong shape."""

    def __init__(
        self, message: str, *, field: str | None = None, details: dict[str, object] | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.field = field


class PayloadTooLarge(InvalidInput):
    """The request (or a golden set in it) exceeds a configured size limit."""


class NotFound(BgserveError):
    """A release, deployment, model, prompt, version or alias does not exist."""


class Conflict(BgserveError):
    """The request is well formed but cannot be applied to the current state."""


class IllegalTransition(Conflict):
    """The deployment state machine refuses the transition; the message says what to do."""


class StaleWrite(Conflict):
    """Someone else changed the deployment between our read and our write."""


class GateClosed(Conflict):
    """Promotion refused because green has no passing comparison."""


class Unauthorized(BgserveError):
    """No bearer token, or a token bgserve does not know."""


class Forbidden(BgserveError):
    """The caller's role does not allow this action."""


class Unavailable(BgserveError):
    """A dependency bgserve needs is unreachable or not ready; retrying later may work."""


class RegistryUnavailable(Unavailable):
    """The MLflow tracking or registry store cannot be reached."""


class ElectionForbidden(Unavailable):
    """The lease's store refuses this replica a permission the election needs (a missing
    RBAC verb on Leases): it can never lead, so nothing advances plans through it."""


class BackendError(Unavailable):
    """The serving backend failed to perform a step; traffic stays where it was."""


class ReadinessTimeout(BackendError):
    """A slot did not report ready within the configured timeout."""

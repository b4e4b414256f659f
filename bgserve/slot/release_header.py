"""Every answer of a slot names the release it serves: ``x-bgserve-release: <id>``.

bgserve's own router and the Istio route set this header themselves (with the slot's
role, ``x-bgserve-slot``). A Gateway API route cannot without a filter on each
backendRef, and such filters make Envoy Gateway give each backend a cluster of its own,
which it drops when the backend's weight goes to 0 before the route stops naming it: a
request picked in between finds no cluster (HTTP 500, ``cluster_not_found``). So the
route carries no filter, and the slot names its release itself. bgserve's router drops
a slot's ``x-bgserve-*`` naming headers and writes its own.
"""

from __future__ import annotations

from bgserve.slot.infer_body import Asgi, Message, Receive, Scope, Send

RELEASE_HEADER = b"x-bgserve-release"


class ReleaseHeader:
    """ASGI middleware: ``x-bgserve-release`` on every HTTP answer, streamed or not."""

    def __init__(self, app: Asgi, release_id: int) -> None:
        self.app = app
        self.header = (RELEASE_HEADER, str(release_id).encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def named(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0].lower() != RELEASE_HEADER]
                message = {**message, "headers": [*headers, self.header]}
            await send(message)

        await self.app(scope, receive, named)

"""A small Kubernetes API server for tests: custom resources only, on 127.0.0.1.

The Kubernetes tests run against a real kube-apiserver (``tests/real_apiserver.py``);
this one stays for what a real server cannot be made to do on cue: a race injected
between bgserve's read and its write (:meth:`FakeApiServer.before_next_write`), and
answers a test scripts. It refuses what the real one refuses: a CRD whose schema is
not structural (``items: {}``, a node without a type) cannot be served, and an object
with unknown fields or failing the schema gets 422.

Serves every CRD it is given (group, version and plural come from the CRD files) at
``/apis/<group>/<version>/namespaces/<ns>/<plural>[/<name>[/status]]``: create (201),
get, list (with ``labelSelector``), replace, JSON merge patch, server-side apply
(approximated as a merge patch that creates a missing object; no field managers) and
delete. Watches are refused (405), so clients poll here. resourceVersion increments on
every write, a write carrying a stale one gets 409, a missing object 404. ``generation``
moves only when the spec changes. Tests play the controllers with :meth:`set_status`.
Every request is recorded.
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.crd_schema import Crd, structural_errors

Obj = dict[str, Any]
VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True)
class Recorded:
    """One request the server answered."""

    method: str
    verb: str  # the RBAC verb: get, list, create, update, patch, delete
    group: str
    resource: str  # plural, or plural/status
    name: str
    body: Obj | None
    status: int


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def body(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _matches(obj: Obj, selector: str) -> bool:
    labels = obj["metadata"].get("labels") or {}
    pairs = [term.split("=", 1) for term in selector.split(",") if term]
    return all(labels.get(k) == v for k, v in pairs)


class Store:
    """The objects, their versions and the request log; every method holds the lock."""

    def __init__(self, crds: Mapping[str, Crd]) -> None:
        for crd in crds.values():
            for version, schema in crd.schemas.items():
                if errors := structural_errors(schema):
                    raise ValueError(
                        f"CRD {crd.plural}.{crd.group} {version} would be refused with 422: "
                        + "; ".join(errors[:5])
                    )
        self.crds = {(c.group, c.plural): c for c in crds.values()}
        self.objects: dict[tuple[str, str, str, str], Obj] = {}
        self.requests: list[Recorded] = []
        self.lock = threading.RLock()
        self.version = 0
        self.hooks: list[Callable[[Store, str, str], None]] = []

    def crd(self, group: str, version: str, plural: str) -> Crd:
        crd = self.crds.get((group, plural))
        if crd is None or version not in crd.schemas:
            raise ApiError(404, "NotFound", f"the server could not find {plural}.{group}/{version}")
        return crd

    def _bump(self, obj: Obj) -> Obj:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        return obj

    def _check(self, crd: Crd, obj: Obj) -> None:
        errors = crd.validate(obj)
        if errors:
            raise ApiError(422, "Invalid", f"{crd.kind} is invalid: " + "; ".join(errors))

    def _run_hooks(self, plural: str, name: str) -> None:
        hooks, self.hooks = self.hooks, []
        for hook in hooks:
            hook(self, plural, name)

    def get(self, key: tuple[str, str, str, str]) -> Obj:
        if key not in self.objects:
            raise ApiError(404, "NotFound", f'{key[1]} "{key[3]}" not found')
        return self.objects[key]

    def create(self, crd: Crd, key: tuple[str, str, str, str], body: Obj) -> Obj:
        if body.get("metadata", {}).get("name") != key[3]:
            raise ApiError(422, "Invalid", "metadata.name is required")
        if key in self.objects:
            raise ApiError(409, "AlreadyExists", f'{key[1]} "{key[3]}" already exists')
        self._check(crd, body)
        obj = copy.deepcopy(body)
        obj.pop("status", None)
        obj["metadata"].update(
            namespace=key[2],
            uid=str(uuid.uuid4()),
            generation=1,
            creationTimestamp="2026-01-01T00:00:00Z",
        )
        self.objects[key] = self._bump(obj)
        return obj

    def write(
        self, crd: Crd, key: tuple[str, str, str, str], new: Obj, sub: str, *, put: bool = True
    ) -> Obj:
        """Replace the object (or only its status when ``sub`` is "status").

        A PUT of the main resource must carry a resourceVersion (as for real CRDs).
        """
        current = self.get(key)
        sent = new.get("metadata", {}).get("resourceVersion")
        if sent is None and put and sub != "status":
            raise ApiError(
                422, "Invalid", "metadata.resourceVersion must be specified for an update"
            )
        if sent is not None and sent != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'the object "{key[3]}" has been modified; '
                "please apply your changes to the latest version and try again",
            )
        obj = copy.deepcopy(current)
        if sub == "status":
            obj["status"] = copy.deepcopy(new.get("status", {}))
        else:
            meta = {
                k: v
                for k, v in new["metadata"].items()
                if k not in ("uid", "generation", "creationTimestamp", "namespace")
            }
            obj["metadata"].update(meta)
            obj["spec"] = copy.deepcopy(new.get("spec"))
            if obj["spec"] != current.get("spec"):
                obj["metadata"]["generation"] = current["metadata"]["generation"] + 1
        self._check(crd, obj)
        self.objects[key] = self._bump(obj)
        return obj


class FakeApiServer:
    """The test API server: start it, point a kubernetes client at :attr:`url`."""

    def __init__(self, crds: Mapping[str, Crd]) -> None:
        self.store = Store(crds)
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.store))
        self._http.daemon_threads = True
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()

    @property
    def requests(self) -> list[Recorded]:
        with self.store.lock:
            return list(self.store.requests)

    def objects(self, plural: str) -> Iterator[Obj]:
        """Copies of the stored objects of one resource (``plural`` as in the URL)."""
        with self.store.lock:
            items = [o for k, o in self.store.objects.items() if k[1] == plural]
            return iter(copy.deepcopy(items))

    def put_object(self, group: str, plural: str, obj: Obj) -> Obj:
        """Create an object directly, as another tool would (bypassing bgserve)."""
        with self.store.lock:
            meta = obj["metadata"]
            crd = self.store.crds[(group, plural)]
            return self.store.create(crd, (group, plural, meta["namespace"], meta["name"]), obj)

    def set_status(self, group: str, plural: str, namespace: str, name: str, status: Obj) -> None:
        """Play the controller: replace the object's status (resourceVersion moves)."""
        with self.store.lock:
            key = (group, plural, namespace, name)
            crd = self.store.crds[(group, plural)]
            self.store.write(crd, key, {"status": status}, "status")

    def before_next_write(self, hook: Callable[[Store, str, str], None]) -> None:
        """Run ``hook(store, plural, name)`` under the lock just before the next write."""
        with self.store.lock:
            self.store.hooks.append(hook)


def _handler(store: Store) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else keep-alive round trips stall on delayed ACKs

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output quiet

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            parts = url.path.strip("/").split("/")
            query = parse_qs(url.query)
            query["content-type"] = [self.headers.get("Content-Type", "")]
            with store.lock:
                code, answer = _dispatch(store, method, parts, query, body)
                store.requests.append(_record(method, parts, body, code))
            data = json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _record(method: str, parts: list[str], body: Obj | None, code: int) -> Recorded:
    group, plural = (parts[1], parts[5]) if len(parts) >= 6 else ("", "")
    name = parts[6] if len(parts) >= 7 else ""
    sub = f"/{parts[7]}" if len(parts) >= 8 else ""
    verb = VERBS.get(method, "get" if name else "list")
    return Recorded(method, verb, group, plural + sub, name, body, code)


def _is_apply(query: dict[str, list[str]]) -> bool:
    return query.get("content-type", [""])[0].startswith("application/apply-patch")


def _dispatch(
    store: Store, method: str, parts: list[str], query: dict[str, list[str]], body: Obj | None
) -> tuple[int, Obj]:
    try:
        if len(parts) < 6 or parts[0] != "apis" or parts[3] != "namespaces":
            raise ApiError(404, "NotFound", "only namespaced custom resources are served")
        return _handle(store, method, parts, query, body)
    except ApiError as exc:
        return exc.code, exc.body()


def _handle(
    store: Store, method: str, parts: list[str], query: dict[str, list[str]], body: Obj | None
) -> tuple[int, Obj]:
    group, version, namespace, plural = parts[1], parts[2], parts[4], parts[5]
    crd = store.crd(group, version, plural)
    name = parts[6] if len(parts) > 6 else ""
    sub = parts[7] if len(parts) > 7 else ""
    key = (group, plural, namespace, name)
    if method in ("POST", "PUT", "PATCH"):
        store._run_hooks(plural, name)
    if not name:
        if method == "POST":
            return 201, store.create(
                crd,
                (group, plural, namespace, (body or {}).get("metadata", {}).get("name", "")),
                body or {},
            )
        if query.get("watch", [""])[0].lower() == "true":
            raise ApiError(405, "MethodNotAllowed", "this test server does not serve watches")
        selector = query.get("labelSelector", [""])[0]
        items = [
            o
            for k, o in store.objects.items()
            if k[:3] == (group, plural, namespace) and _matches(o, selector)
        ]
        return 200, {
            "apiVersion": f"{group}/{version}",
            "kind": f"{crd.kind}List",
            "metadata": {"resourceVersion": str(store.version)},
            "items": items,
        }
    if method == "GET":
        return 200, store.get(key)
    if method == "PATCH" and key not in store.objects and _is_apply(query):
        return 201, store.create(crd, key, body or {})
    if method == "DELETE":
        store.get(key)
        return 200, store.objects.pop(key)
    if method == "PATCH":
        patched = merge_patch(copy.deepcopy(store.get(key)), body or {})
        if "resourceVersion" not in (body or {}).get("metadata", {}):
            patched["metadata"].pop("resourceVersion", None)
        return 200, store.write(crd, key, patched, sub, put=False)
    return 200, store.write(crd, key, body or {}, sub)

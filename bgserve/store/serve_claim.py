"""One ``serve`` per local state: the local backend's slots are its own child processes.

A second ``bgserve serve`` with the local backend on the same state would restore the same
deployments into a second set of slots and fight the first over them. The claim refuses it
at start, naming the process that holds the state: a lock file beside a SQLite database
(freed by the kernel when that process ends, however it ends), a PostgreSQL advisory lock
for any other database.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO, Protocol

from bgserve.errors import Conflict
from bgserve.store.advisory_lock import PostgresLease


class Claim(Protocol):
    """A held claim on the state; released when bgserve stops."""

    def release(self) -> None: ...


class _NoClaim:
    def release(self) -> None:
        return None


NO_CLAIM: Claim = _NoClaim()
"""The claim of a state that needs none (an in-memory database, a Kubernetes backend)."""


class _FileClaim:
    def __init__(self, handle: IO[str]) -> None:
        self._handle: IO[str] | None = handle

    def release(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()  # closing the file drops the flock


def claim_state(url: str, identity: str) -> Claim:
    """Claim the state ``url`` names for this process, described by ``identity``.

    Raises Conflict naming the holder when another process already serves this state.
    """
    if url.startswith("sqlite"):
        database = _sqlite_file(url)
        return NO_CLAIM if database is None else _claim_file(database, url, identity)
    lease = PostgresLease(url, "local-serve", identity)
    if lease.try_acquire_or_renew():
        return lease
    holder = lease.holder() or "another process"
    lease.release()
    raise _taken(url, holder)


def _claim_file(database: Path, url: str, identity: str) -> Claim:
    path = database.with_name(database.name + ".serve-lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise _taken(url, holder) from None
    handle.seek(0)
    handle.truncate()
    handle.write(identity + "\n")
    handle.flush()
    return _FileClaim(handle)


def _sqlite_file(url: str) -> Path | None:
    path = url.split(":///", 1)[1].split("?", 1)[0] if ":///" in url else ""
    return None if path in ("", ":memory:") else Path(path).expanduser()


def _taken(url: str, holder: str) -> Conflict:
    return Conflict(
        f"another bgserve serve already runs the local backend on this state ({holder}); "
        "its slots are its own child processes, so only one may: stop it first, or give "
        "this one its own BGSERVE_HOME or BGSERVE_STATE_URL",
        details={"state": _redacted(url), "holder": holder},
    )


def _redacted(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}{sep}***@{host}" if at and credentials else url


def serve_identity(host: str, port: int) -> str:
    """How a serving process names itself in the claim."""
    return f"pid {os.getpid()} on {os.uname().nodename}, control API {host}:{port}"

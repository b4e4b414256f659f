"""Pages of the list routes (``GET /deployments``, ``GET /deployments/{name}/history``).

A request with ``limit`` or ``cursor`` gets one page, ``{"items": [...], "next_cursor":
...}``; ``next_cursor`` is null on the last page. A request with neither gets the whole list
as a bare JSON array, as before paging existed, so no client written for that answer reads
a truncated list as if it were complete. The cursor is opaque: it names the last item of the
page by a key that never changes (a deployment's name, an event's id), so items appended
meanwhile never shift a page, and the next one starts right after it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Generic, Literal, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel, Field

from bgserve.errors import InvalidInput

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
CursorKind = Literal["deployments", "history"]
Item = TypeVar("Item")
Key = TypeVar("Key", str, int)


class Page(BaseModel, Generic[Item]):
    """One page of a list route."""

    items: list[Item]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page"
    )


@dataclass(frozen=True)
class PageRequest:
    """What the caller asked of a list route: a page (``limit``, ``cursor``) or everything."""

    limit: int | None
    cursor: str | None

    @property
    def paged(self) -> bool:
        """Whether the caller asked for a page rather than the whole list."""
        return self.limit is not None or self.cursor is not None

    @property
    def size(self) -> int:
        """Items on a page."""
        return self.limit or DEFAULT_LIMIT

    def after(self, kind: CursorKind, key: type[Key]) -> Key | None:
        """The key the page starts after (None: from the start). Raises InvalidInput on a
        cursor bgserve did not hand out for this route."""
        if self.cursor is None:
            return None
        try:
            padded = self.cursor + "=" * (-len(self.cursor) % 4)
            decoded = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
            after = decoded["after"] if decoded["kind"] == kind else None
        except (ValueError, KeyError, TypeError, UnicodeError, binascii.Error):
            after = None
        if not isinstance(after, key) or isinstance(after, bool):
            raise InvalidInput(
                "cursor is not one this list handed out: pass the next_cursor of the page "
                "before, or leave cursor out to start from the first page",
                field="cursor",
            )
        return after

    def split(
        self, kind: CursorKind, rows: list[Item], key: Callable[[Item], str | int]
    ) -> tuple[list[Item], str | None]:
        """This page's items of ``rows`` (read with :attr:`size` + 1 rows, to learn whether
        more follow) and the cursor of the next page, None when there is none."""
        items = rows[: self.size]
        more = len(rows) > self.size
        return items, cursor_after(kind, key(items[-1])) if more else None


def page_request(
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_LIMIT,
            description=f"Items a page (1 to {MAX_LIMIT}; {DEFAULT_LIMIT} when only `cursor` "
            "is given). With `limit` or `cursor` the answer is a page "
            '`{"items", "next_cursor"}`; with neither, the whole list as an array.',
        ),
    ] = None,
    cursor: Annotated[
        str | None,
        Query(max_length=512, description="The `next_cursor` of the page before"),
    ] = None,
) -> PageRequest:
    """The paging query parameters of a list route."""
    return PageRequest(limit, cursor)


PageDep = Annotated[PageRequest, Depends(page_request)]


def cursor_after(kind: CursorKind, key: str | int) -> str:
    """The opaque cursor of a page whose last item has ``key``."""
    raw = json.dumps({"kind": kind, "after": key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

"""The pieces every page shares: escaping, the page frame, release labels, weight bars.

Every text that comes from a user, a model or the store goes through :func:`e`; the page
frame carries no inline script or style, so the Content-Security-Policy can forbid both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from html import escape
from typing import Any

from bgserve.domain.release import Release
from bgserve.ui.assets import VERSION

ROLE_CLASSES = ("blue", "green", "standby")


def e(value: object) -> str:
    """``value`` as text, HTML-escaped (quotes too, so it is safe in attributes)."""
    return escape(str(value), quote=True)


def when(moment: datetime | None) -> str:
    """A UTC time as people read it, in a ``<time>`` element."""
    if moment is None:
        return ""
    return (
        f"<time datetime='{e(moment.isoformat())}'>{e(moment.strftime('%Y-%m-%d %H:%M:%S'))}</time>"
    )


def num(value: Any, digits: int = 3) -> str:
    """A number for a table cell: floats rounded, anything else as text."""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value else f"{value:.{digits}f}"
    return e(value)


def release_label(release: Release | None, release_id: int) -> str:
    """``#3 chat-v2`` with the model and prompt versions, the URIs in a tooltip."""
    if release is None:
        return f"<span class='rel'>#{release_id}</span>"
    title = f"{release.model_uri} + {release.prompt_uri}"
    return (
        f"<span class='rel' title='{e(title)}'>#{release.id} {e(release.name)} "
        f"<small>model v{release.model_version} · prompt v{release.prompt_version}</small></span>"
    )


def weight_bar(blue: int, green: int) -> str:
    """Blue and green weights as a bar, with the numbers in text beside it."""
    label = f"blue {blue}%" + (f", green {green}%" if green else "")
    return (
        f"<span class='bar'><svg viewBox='0 0 100 10' preserveAspectRatio='none' "
        f"role='img' aria-label='{e(label)}'>"
        f"<rect class='fill-blue' x='0' y='0' height='10' width='{blue}'/>"
        f"<rect class='fill-green' x='{blue}' y='0' height='10' width='{green}'/></svg>"
        f"<span class='weights'>{e(label)}</span></span>"
    )


def badge(text: str, kind: str) -> str:
    """A short coloured word (kind: pass, fail, warn, idle)."""
    return f"<span class='badge {e(kind)}'>{e(text)}</span>"


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], caption: str = "") -> str:
    """A table whose cells are already HTML; headers are escaped here."""
    head = "".join(f"<th scope='col'>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    cap = f"<caption>{e(caption)}</caption>" if caption else ""
    return (
        f"<div class='scroll'><table>{cap}<thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table></div>"
    )


def key_values(pairs: Mapping[str, str]) -> str:
    """A two-column table of names and (already HTML) values."""
    rows = "".join(f"<tr><th scope='row'>{e(k)}</th><td>{v}</td></tr>" for k, v in pairs.items())
    return f"<div class='scroll'><table class='kv'><tbody>{rows}</tbody></table></div>"


def page(title: str, body: str, *, csrf: str, who: str, logout: bool) -> str:
    """A whole document: the frame, the CSRF token for the script, and ``body``."""
    out = (
        "<form data-action='/ui/logout' class='logout'>"
        "<button type='submit'>Sign out</button></form>"
        if logout
        else ""
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<meta name='bgserve-csrf' content='{e(csrf)}'>"
        f"<title>{e(title)} · bgserve</title>"
        f"<link rel='stylesheet' href='/ui/static/ui.css?v={VERSION}'>"
        f"<script src='/ui/static/ui.js?v={VERSION}' defer></script></head><body>"
        "<a class='skip' href='#main'>Skip to content</a>"
        "<header><nav aria-label='bgserve'><a href='/ui' class='brand'>bgserve</a></nav>"
        f"<span class='who'>{e(who)}</span>{out}</header>"
        f"<main id='main'>{body}</main>"
        "<p id='status' role='status' aria-live='polite'></p></body></html>\n"
    )

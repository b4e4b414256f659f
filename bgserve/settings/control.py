"""Limits of the control API's connections, and who may reach it without a token
(``settings.control``). Flat variables: ``BGSERVE_CONTROL_<FIELD>``.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from bgserve.settings.groups import Group, spelt_flat


class ControlGroup(Group):
    """Connection limits, allowed hosts and dashboard sessions (``BGSERVE_CONTROL_*``)."""

    model_config = spelt_flat("control_")

    header_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="How long a client may take to send a whole request head, counted from "
        "the connection's opening or the end of its previous answer; a connection still "
        "without a complete head then is closed. Half nginx's `client_header_timeout` "
        "(60 s): the control API's callers send a head in one packet.",
    )
    idle_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="How long a kept-alive connection may wait, silent, for its next request.",
    )
    max_connections: int = Field(
        256,
        ge=8,
        le=65536,
        description="Open connections the control API keeps at most. A new connection beyond "
        "it closes the oldest one that is still waiting for a request head (else the new "
        "one), so connections that never finish a request cannot lock callers out, and "
        "bgserve keeps file descriptors for its database, slots and Kubernetes client "
        "(a common `ulimit -n` is 1024).",
    )
    max_header_bytes: int = Field(
        65536,
        ge=1024,
        description="Largest request head (request line and headers) the control API reads; "
        "a longer one is answered 431 and the connection closed.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Without auth tokens, the API answers only requests whose `Host` names "
        "the bind address, `localhost`, `127.0.0.1` or `[::1]` (any port), against DNS "
        'rebinding; these names (a JSON list, e.g. `["bgserve.internal"]`, no port) are '
        "allowed too, e.g. behind a local proxy. Unused when tokens are configured.",
    )
    trusted_proxies: str = Field(
        "127.0.0.1",
        description="Comma-separated addresses (or CIDR ranges, `*` for any) whose "
        "`X-Forwarded-Proto` and `X-Forwarded-For` the control API believes: a request "
        "forwarded as https from one of them gets a `Secure` dashboard cookie, and sign-in "
        "throttling counts the forwarded client's address.",
    )
    session_ttl_seconds: float = Field(
        8 * 3600.0,
        gt=0,
        description="How long a dashboard sign-in lasts; signing out ends it at once. "
        "Sessions live in the process: a restart signs everyone out, and with several "
        "replicas the dashboard needs session affinity.",
    )
    sign_in_failures_per_minute: int = Field(
        5,
        ge=1,
        description="Wrong tokens one client address may send to the dashboard's sign-in in "
        "a minute; further attempts (right or wrong) are answered 429 with `Retry-After` "
        "until the oldest failure is a minute old.",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _plain_names(cls, hosts: list[str]) -> list[str]:
        cleaned = [h.strip().lower() for h in hosts if h.strip()]
        for host in cleaned:
            if "/" in host or (":" in host and not host.startswith("[")):
                raise ValueError(
                    f"BGSERVE_CONTROL_ALLOWED_HOSTS: {host!r} is not a host name: give names "
                    "or addresses without a scheme or port (IPv6 in brackets)"
                )
        return cleaned

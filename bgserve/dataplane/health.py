"""Readiness probes the router runs against a slot it stopped routing to."""

from __future__ import annotations

import asyncio

_PROBE = b"GET /v2/health/ready HTTP/1.1\r\nhost: %s\r\nconnection: close\r\n\r\n"


async def probe_ready(host: str, port: int, timeout: float) -> bool:
    """True if the slot at ``host:port`` answers ``/v2/health/ready`` with 200 in time.

    Never raises: any failure to connect or answer is a False.
    """
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(_PROBE % host.encode())
                status_line = await reader.readuntil(b"\r\n")
                return status_line[9:12] == b"200"
            finally:
                writer.close()
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return False

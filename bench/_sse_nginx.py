"""nginx as a streaming reverse proxy: the benchmarks' nginx with ``proxy_buffering off``."""

from __future__ import annotations

from _nginx import Nginx

# What a reverse proxy in front of an SSE stream is configured with: every chunk passed on
# as it arrives, HTTP/1.1 and keep-alive to the upstream, no cap on a long generation.
STREAMING = """            proxy_http_version 1.1;
            proxy_buffering off;
            proxy_cache off;
            proxy_read_timeout 300s;
"""


class StreamingNginx(Nginx):
    """nginx (one worker) relaying SSE chunk by chunk to the same upstreams."""

    def config(self) -> str:
        base = super().config()
        plain = "            proxy_http_version 1.1;\n"
        if plain not in base:
            raise RuntimeError("bench/_nginx.py's config changed: update _sse_nginx.py")
        return base.replace(plain, STREAMING)

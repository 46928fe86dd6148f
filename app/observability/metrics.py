"""The API's Prometheus families and the listener that serves them.

One registry per app (not prometheus-client's global one: tests build many apps in one
process). The listener serves prometheus-client's WSGI app on `METRICS_PORT`, a port of
its own: /metrics is never routed through the public app.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    make_wsgi_app,
)

# No `_created` series beside every counter: twice the series for a timestamp Prometheus does not need.
disable_created_metrics()

UNMATCHED = "<unmatched>"  # the route label of a path no route matches (never the raw path)


@dataclass
class ApiMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time until the response's headers were sent, by method and route template "
            "(for an event stream: until it opened)",
            ["method", "route"],
            registry=self.registry,
        )
        self.open_streams = Gauge("sse_open_streams", "Server-sent event streams open now", registry=self.registry)
        self.state_errors = Counter(
            "metrics_state_read_errors",
            "Failed reads behind the state gauges (validations, governor), by source",
            ["source"],
            registry=self.registry,
        )


# How often the listener's loop looks for a stop: `shutdown()` waits up to this long. prometheus-client's
# `start_http_server` serves with socketserver's default 0.5 s, which every stop of the API waited out.
_STOP_POLL_SECONDS = 0.05


class _QuietHandler(WSGIRequestHandler):
    """No access-log line per scrape (on stderr, outside the JSON logs)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Listener(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in flight does not hold up the stop

    def __init__(self, host: str, port: int) -> None:
        # IPv4 or IPv6, as `host` resolves (HOST may be `::`).
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        self.address_family = family
        super().__init__((str(address[0]), port), _QuietHandler)


@contextmanager
def listening(registry: CollectorRegistry, host: str, port: int) -> Iterator[int]:
    """Serve `registry` at http://host:port/metrics (port 0: a free one) until the block ends; yields the port."""
    server = _Listener(host, port)
    server.set_app(make_wsgi_app(registry))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": _STOP_POLL_SECONDS}, name="metrics", daemon=True
    )
    thread.start()
    try:
        yield int(server.server_port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

"""The API's Prometheus families and the listener that serves them.

One registry per app (not prometheus-client's global one: tests build many apps in one
process). The listener is prometheus-client's own HTTP server on `METRICS_PORT`, a port of
its own: /metrics is never routed through the public app.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
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


@contextmanager
def listening(registry: CollectorRegistry, host: str, port: int) -> Iterator[int]:
    """Serve `registry` at http://host:port/metrics (port 0: a free one) until the block ends; yields the port."""
    server, thread = start_http_server(port, addr=host, registry=registry)
    try:
        yield int(server.server_port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

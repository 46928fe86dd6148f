"""Per request: the request id (`X-Request-ID` accepted, echoed, generated when absent or
unusable) and the validation id its path names, both bound to every log line of the
request; and the HTTP metrics by route template (as the router recorded it in the scope,
never the raw path, whose ids would make one series per validation).

Pure ASGI: Starlette's BaseHTTPMiddleware runs the app in another task (the bound ids would
not reach the access log) and gets in the way of event streams.
"""

from __future__ import annotations

import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability import logs
from app.observability.metrics import UNMATCHED, ApiMetrics

REQUEST_ID = "X-Request-ID"
# What a client may choose as its request id: ids go into log lines, so no spaces, quotes or newlines.
_USABLE_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
_VALIDATION_PATH = re.compile(r"^/validations/([A-Za-z0-9_-]{1,128})(?:/|$)")


def request_id_of(headers: Headers) -> str:
    """The client's X-Request-ID when it is usable, else a new one."""
    given = headers.get(REQUEST_ID, "")
    return given if _USABLE_ID.fullmatch(given) else uuid.uuid4().hex


def route_template(scope: Scope) -> str:
    """The template of the route that served the request (the router records it in the scope)."""
    route = scope.get("route")
    return str(getattr(route, "path_format", None) or getattr(route, "path", None) or UNMATCHED)


def validation_id_in(path: str) -> str | None:
    """The validation a request is about, when its path names one (`/validations/{validation_id}...`)."""
    match = _VALIDATION_PATH.match(path)
    return match.group(1) if match else None


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(Headers(scope=scope))
        validation_id = validation_id_in(scope["path"])
        method = scope["method"]
        logs.clear()
        logs.bind(request_id=request_id, **({"validation_id": validation_id} if validation_id else {}))
        started = time.perf_counter()
        status, timed, streaming = 500, False, False

        async def send_observed(message: Message) -> None:
            nonlocal status, timed, streaming
            if message["type"] == "http.response.start":
                status, timed = message["status"], True
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID] = request_id
                self.metrics.latency.labels(method, route_template(scope)).observe(time.perf_counter() - started)
                if headers.get("content-type", "").startswith("text/event-stream"):
                    streaming = True
                    self.metrics.open_streams.inc()
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            if streaming:
                self.metrics.open_streams.dec()
            route = route_template(scope)
            if not timed:  # failed before answering: the outer error handler answers 500
                self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
            self.metrics.requests.labels(method, route, str(status)).inc()

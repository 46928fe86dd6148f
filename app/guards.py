"""Issue 14's guards, wired in one place: middleware at `create_app`, per-process state in the lifespan.

Middleware, outermost first: `LastResort` (problem+json for whatever escapes), `BodyLimit`
(bodies counted as they stream), `Authenticate` (the caller before any body byte). State:
the authenticator (and its stream re-check cache), the stream caps, the readiness cache,
the limiter of submissions tokenized at once and the gate of submission bytes in memory. All of it is per API process.
"""

from __future__ import annotations

import anyio
from fastapi import FastAPI

from app.auth.authenticator import Authenticator
from app.auth.middleware import Authenticate
from app.aws.clients import AWSClients
from app.events.streams import StreamSlots
from app.failures import LastResort
from app.health.readiness import Readiness
from app.limits import FRAMING_BYTES, BodyLimit, ByteGate, tune_malloc
from app.settings import Settings
from app.stream_tokens.dependencies import stream_token_service
from app.users.dependencies import get_user_service
from app.web import PUBLIC_PATHS as PAGE_PATHS

# The one probe anonymous callers may hit while authenticated callers get details.
OPTIONAL_AUTH = frozenset({"/readyz"})


def install(app: FastAPI) -> None:
    """Add the middleware (Starlette runs the last added first)."""
    docs = [app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url]
    public = frozenset(["/healthz", *(path for path in docs if path), *PAGE_PATHS])
    app.add_middleware(Authenticate, public=public, optional=OPTIONAL_AUTH)
    app.add_middleware(BodyLimit)
    app.add_middleware(LastResort)


def start(app: FastAPI, settings: Settings, clients: AWSClients) -> None:
    """The per-process state the guards keep, on `app.state` (called in the lifespan)."""
    tune_malloc()
    app.state.authenticator = Authenticator(
        get_user_service(settings, clients),
        settings.admin_api_key,
        # A little under the poll interval: each poll of a stream's feed re-reads its caller once.
        recheck_seconds=settings.sse_poll_seconds * 0.9,
    )
    app.state.stream_tokens = stream_token_service(settings, clients)  # `?token=` on the events route
    app.state.streams = StreamSlots(settings.max_streams, settings.max_streams_total)
    app.state.readiness = Readiness(clients, settings)
    app.state.plan_limiter = anyio.CapacityLimiter(settings.plan_concurrency)
    # One maximum-size submission in memory at a time; smaller ones share the allowance.
    app.state.intake_gate = ByteGate(settings.max_request_bytes + FRAMING_BYTES)

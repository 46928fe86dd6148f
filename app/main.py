"""create_app(settings): routers, error handlers, and the lifespan that builds clients once."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from app import errors, guards, observability
from app.admin.router import router as admin_router
from app.aws.clients import open_clients
from app.events.hub import EventHub
from app.events.router import router as events_router
from app.events.store import EventStore
from app.health.router import router as health_router
from app.models.router import offered_router as offered_models_router
from app.models.router import router as models_router
from app.pricing.router import router as pricing_router
from app.rulesets.router import router as rulesets_router
from app.settings import Mode, Settings
from app.stream_tokens.router import router as stream_tokens_router
from app.uploads.router import router as uploads_router
from app.users.router import router as users_router
from app.validations.router import router as validations_router
from app.web import router as web
from app.webhooks.router import router as webhooks_router

log = logging.getLogger(__name__)


def _local_runtime(settings: Settings) -> AbstractAsyncContextManager[Settings]:
    """The embedded AWS and the simulator around the API (local mode only: in aws mode
    nothing of the `local` package, moto or werkzeug is imported)."""
    try:
        from local.runtime import local_runtime
    except ImportError as exc:  # the production image carries the API only
        raise RuntimeError(
            "MODE=local needs the `local` dependency group (moto): install requirements.lock, "
            "or set MODE=aws with the resources from `terraform output api_environment`."
        ) from exc
    return local_runtime(settings)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            effective = (
                await stack.enter_async_context(_local_runtime(settings)) if settings.mode is Mode.LOCAL else settings
            )
            app.state.settings = effective
            app.state.clients = await open_clients(stack, effective.aws_region, effective.aws_endpoint_url)
            app.state.hub = EventHub(
                EventStore(app.state.clients, effective), effective.sse_poll_seconds, effective.sse_gap_wait_seconds
            )
            await observability.start(stack, app, effective, local_lambdas=settings.mode is Mode.LOCAL)
            guards.start(app, effective, app.state.clients)
            try:
                yield
            finally:
                await app.state.hub.close()

    app = FastAPI(
        title="Validation service",
        version="0.1.0",
        description="Validate batches of text files against rules with an LLM, orchestrated by AWS Step Functions.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    errors.install(app)
    observability.install(app)
    guards.install(app)
    app.include_router(health_router)
    app.include_router(validations_router)
    app.include_router(admin_router)
    app.include_router(events_router)
    app.include_router(webhooks_router)
    app.include_router(stream_tokens_router)
    app.include_router(users_router)
    app.include_router(rulesets_router)
    app.include_router(pricing_router)
    app.include_router(models_router)
    app.include_router(offered_models_router)
    app.include_router(uploads_router)
    web.install(app)  # the page at `/` (static files)
    return app

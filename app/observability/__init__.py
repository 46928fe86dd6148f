"""Operating the API: JSON logs with request and validation ids, Prometheus metrics on a
listener of their own (README "Operating it").

    install(app)                       # in create_app: the per-request middleware, the registry
    await start(stack, app, settings)  # in the lifespan: state gauges, the listener
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack

from fastapi import FastAPI

from app.observability.metrics import ApiMetrics, listening
from app.observability.middleware import ObservabilityMiddleware
from app.observability.state import StateCollector, StateReader
from app.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["install", "start"]


def install(app: FastAPI) -> ApiMetrics:
    metrics = ApiMetrics()
    app.state.metrics = metrics
    app.add_middleware(ObservabilityMiddleware, metrics=metrics)
    return metrics


async def start(stack: AsyncExitStack, app: FastAPI, settings: Settings, *, local_lambdas: bool) -> int:
    """Register the state gauges (and in local mode what the Lambdas report) and serve them
    on METRICS_PORT until the stack closes; returns the port."""
    metrics: ApiMetrics = app.state.metrics
    reader = StateReader(app.state.clients, settings)
    collector = StateCollector(
        lambda: reader.snapshot(metrics.state_errors), asyncio.get_running_loop(), settings.metrics_cache_seconds
    )
    metrics.registry.register(collector)
    stack.callback(metrics.registry.unregister, collector)
    if local_lambdas:
        # The embedded AWS runs the handlers in this process (a separate `python -m local.aws`
        # runs them there: its Lambdas print their metrics as EMF instead, and these stay 0).
        from local.lambda_metrics import exported

        stack.enter_context(exported(metrics.registry, settings.name_prefix))
    port = stack.enter_context(listening(metrics.registry, settings.host, settings.metrics_port))
    app.state.metrics_port = port
    log.info("metrics on http://%s:%s/metrics", settings.host, port)
    return port

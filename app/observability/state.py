"""Gauges of the service's state, read from DynamoDB (and SSM) when /metrics is scraped:
validations per non-terminal status, the queue's depth and oldest entry, and what the TPM
governor is doing.

The reads go through the API's aioboto3 clients on the app's event loop (the listener
scrapes on its own thread) and are kept `METRICS_CACHE_SECONDS`, so scrapes, however many,
cost at most one round of reads per period:
- validations: one Query per status on the validations table's `by_status` index (keys and
  `queue_key` only), reading only validations that are QUEUED, RUNNING or CANCELLING;
- governor: the live settings and the list of models (two SSM GetParameters), then per model
  of the list its budget (GetItem) and usage (BatchGetItem), and 8 `Select=COUNT` Queries of
  open leases (every model's). The budget's gauges carry a `model` label: one budget per model.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.admin.parallelism import GovernorView, ParallelismSettings, limits_of
from app.aws.clients import AWSClients
from app.models.catalog import ModelCatalog
from app.settings import Settings
from core.dynamo import from_item, to_item
from core.quota import queued_since
from core.records import ValidationStatus

log = logging.getLogger(__name__)

COUNTED = (ValidationStatus.QUEUED, ValidationStatus.RUNNING, ValidationStatus.CANCELLING)
READ_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Queue:
    depth: int
    oldest_seconds: float  # 0 when empty


def queue_of(queue_keys: Iterable[str], now: float) -> Queue:
    """Depth and the oldest entry's age from the queued validations' `queue_key`s."""
    since = [queued_since(key) for key in queue_keys]
    return Queue(len(since), max(0.0, now - min(since)) if since else 0.0)


@dataclass(frozen=True)
class Snapshot:
    by_status: dict[str, int] | None  # None: that read failed
    queue: Queue | None
    governor: dict[str, Any] | None


class StateReader:
    """The reads behind the gauges, with the API's clients."""

    def __init__(self, clients: AWSClients, settings: Settings) -> None:
        self._clients, self._settings = clients, settings
        self._db = clients.dynamodb
        self._table = settings.table("validations")

    async def _query(self, status: str, **extra: Any) -> list[dict[str, Any]]:
        pages, start = [], None
        while True:
            kwargs: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": "by_status",
                "KeyConditionExpression": "#status = :status",
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": to_item({":status": status}),
                **extra,
            }
            if start:
                kwargs["ExclusiveStartKey"] = start
            page = await self._db.query(**kwargs)
            pages.append(page)
            start = page.get("LastEvaluatedKey")
            if not start:
                return pages

    async def validations(self, now: float) -> tuple[dict[str, int], Queue]:
        queued = [from_item(item) for page in await self._query("QUEUED") for item in page["Items"]]
        counts = {"QUEUED": len(queued)}
        for status in COUNTED[1:]:
            counts[status.value] = sum(page["Count"] for page in await self._query(status.value, Select="COUNT"))
        return counts, queue_of((v["queue_key"] for v in queued if v.get("queue_key")), now)

    async def governor(self) -> dict[str, Any]:
        """The window, the calls in flight, and per model its budget (`GovernorView.models`)."""
        configured = await ParallelismSettings(self._clients, self._settings).read()
        catalog = await ModelCatalog(self._clients, self._settings).catalog()
        view = GovernorView(self._clients, self._settings)
        return {
            "window_seconds": self._settings.governor_window_seconds,
            "calls_in_flight": await view.calls_in_flight(),
            "models": await view.models(catalog, limits_of(configured)),
        }

    async def snapshot(self, errors: Counter) -> Snapshot:
        now = time.time()
        validations, governor = await asyncio.gather(self.validations(now), self.governor(), return_exceptions=True)
        for source, result in (("validations", validations), ("governor", governor)):
            if isinstance(result, BaseException):
                errors.labels(source).inc()
                # No traceback: the count is on /metrics, the reason here (an index missing, AWS down).
                log.warning("metrics: reading the %s state failed: %s: %s", source, type(result).__name__, result)
        by_status, queue = validations if isinstance(validations, tuple) else (None, None)
        return Snapshot(by_status, queue, governor if isinstance(governor, dict) else None)


class StateCollector(Collector):
    """Collected on the listener's thread; the reads run on the app's loop, at most once per `cache_seconds`."""

    def __init__(
        self,
        read: Callable[[], Coroutine[Any, Any, Snapshot]],
        loop: asyncio.AbstractEventLoop,
        cache_seconds: float,
    ) -> None:
        self._read, self._loop, self._cache_seconds = read, loop, cache_seconds
        self._lock = threading.Lock()
        self._cached: Snapshot | None = None
        self._read_at = -float("inf")

    def snapshot(self) -> Snapshot | None:
        with self._lock:
            if time.monotonic() - self._read_at < self._cache_seconds or self._on_loop():
                return self._cached  # never block the loop the reads need
            try:
                self._cached = asyncio.run_coroutine_threadsafe(self._read(), self._loop).result(READ_TIMEOUT_SECONDS)
            except Exception as exc:  # noqa: BLE001 - the loop is gone (shutdown) or the read hung: keep the last values
                log.warning("metrics: state not read: %s: %s", type(exc).__name__, exc)
            self._read_at = time.monotonic()
            return self._cached

    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def describe(self) -> Iterable[Metric]:
        return families(None)

    def collect(self) -> Iterable[Metric]:
        return families(self.snapshot())


def families(snapshot: Snapshot | None) -> list[Metric]:
    """The gauges of a snapshot; a family whose read failed is left out (absent, not zero)."""
    by_status = GaugeMetricFamily("validations", "Validations per non-terminal status", labels=["status"])
    depth = GaugeMetricFamily("validation_queue_depth", "Validations waiting in the queue (QUEUED)")
    oldest = GaugeMetricFamily(
        "validation_queue_oldest_age_seconds", "How long the oldest queued validation has waited (0: queue empty)"
    )
    per_window = GaugeMetricFamily(
        "governor_tokens_per_window",
        "Tokens the model's governor budget grants per window now: target_tpm x throttle_threshold x the 429 factor",
        labels=["model"],
    )
    used = GaugeMetricFamily(
        "governor_tokens_used_last_window", "Tokens sent to the model in the last window", labels=["model"]
    )
    in_flight = GaugeMetricFamily("governor_calls_in_flight", "Call slots held now (open leases, every model's)")
    factor = GaugeMetricFamily(
        "governor_rate_factor", "The model's budget's 429 backoff factor (1: no recent 429)", labels=["model"]
    )
    window = GaugeMetricFamily("governor_window_seconds", "The window target_tpm is per")
    shown: list[Metric] = []
    if snapshot is None:
        return [by_status, depth, oldest, per_window, used, in_flight, factor, window]
    if snapshot.by_status is not None and snapshot.queue is not None:
        for status, value in snapshot.by_status.items():
            by_status.add_metric([status], value)
        depth.add_metric([], snapshot.queue.depth)
        oldest.add_metric([], snapshot.queue.oldest_seconds)
        shown += [by_status, depth, oldest]
    if snapshot.governor is not None:
        for model, budget in snapshot.governor["models"].items():
            per_window.add_metric([model], budget["tokens_per_window"])
            used.add_metric([model], budget["tokens_last_window"])
            factor.add_metric([model], budget["factor"])
        in_flight.add_metric([], snapshot.governor["calls_in_flight"])
        window.add_metric([], snapshot.governor["window_seconds"])
        shown += [per_window, used, in_flight, factor, window]
    return shown

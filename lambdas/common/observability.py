"""Logs and metrics of the Lambdas: Powertools Logger (JSON lines) and Powertools' CloudWatch
embedded metric format (EMF), one metric document per invocation.

    @observed
    def lambda_handler(event, context): ...

Every log line written during an invocation (by any `lambdas.*` logger) carries the
deployment (`service`), `function_name`, `function_request_id`, `cold_start`, and from the
event `validation_id`, `run` and the part (`part_range`) or file range (`file_range`).
Metrics are counted while the invocation runs (`count("ModelCalls")`) and written once at
its end as one EMF document: printed on AWS, where CloudWatch turns it into metrics with
no API call. In local mode the embedded AWS runs the handlers inside the API's process,
and a sink (`add_sink`, used by local/lambda_metrics.py) receives the same document
instead and feeds the API's Prometheus registry: one counting path for both.

An invocation that ends with an error the state machine retries (CapacityUnavailable, a
429, ...) or that fails a part on purpose (ModelRejected, AnswerTooLong) logs one line
without a traceback; any other error logs one line with its traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

from core import lambda_env
from lambdas.common.errors import (
    AnswerTooLong,
    BatchIncomplete,
    CapacityUnavailable,
    DeliveryFailed,
    InvalidAnswer,
    ModelRejected,
    ModelUnavailable,
    RateLimited,
    StoreUnavailable,
    TargetRefused,
    UpstreamTimeout,
    WebhookGone,
)

DEFAULT_SERVICE = "validation"  # POWERTOOLS_SERVICE_NAME: the deployment's name prefix
DEFAULT_NAMESPACE = "ValidationService"  # POWERTOOLS_METRICS_NAMESPACE

# Conditions the design expects: Step Functions retries them (the ASL's Retry entries), the
# first group being the governor's and the batch's own signals (INFO), the second failures
# of something outside (WARNING). Neither has a traceback worth reading.
SIGNALS: tuple[type[Exception], ...] = (CapacityUnavailable, RateLimited, BatchIncomplete)
RETRIED_FAILURES: tuple[type[Exception], ...] = (
    UpstreamTimeout,
    ModelUnavailable,
    StoreUnavailable,
    InvalidAnswer,
    DeliveryFailed,  # a webhook receiver's non-2xx: the notify machine retries over ~24 h
)
# Not retried: the part (or file) ends FAILED with the reason, as does a webhook delivery
# to a refused target or one that answered 410 Gone.
PART_FAILURES: tuple[type[Exception], ...] = (ModelRejected, AnswerTooLong, TargetRefused, WebhookGone)


class Kind(StrEnum):
    COUNTER = "counter"  # summed over an invocation
    GAUGE = "gauge"  # the last value of an invocation


@dataclass(frozen=True)
class MetricSpec:
    name: str  # CloudWatch metric name (EMF)
    unit: str  # CloudWatch unit
    kind: Kind
    prometheus: str  # the family in local mode (counters get `_total` from prometheus-client)
    help: str
    by_model: bool = False  # also a `model` dimension (label): counted per model


def _counter(name: str, prometheus: str, help: str, unit: str = "Count", by_model: bool = False) -> MetricSpec:
    return MetricSpec(name, unit, Kind.COUNTER, prometheus, help, by_model)


def _gauge(name: str, prometheus: str, help: str, unit: str = "Count", by_model: bool = False) -> MetricSpec:
    return MetricSpec(name, unit, Kind.GAUGE, prometheus, help, by_model)


# Every metric the Lambdas write; README "Operating it" lists them with what to do.
METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        _counter("ModelCalls", "validation_model_calls", "Model calls answered"),
        _counter("ModelCallSeconds", "validation_model_call_seconds", "Time spent in model calls", "Seconds"),
        _counter("PromptTokens", "validation_prompt_tokens", "Prompt tokens of answered calls"),
        _counter("CompletionTokens", "validation_completion_tokens", "Completion tokens of answered calls"),
        _counter(
            "CachedPromptTokens",
            "validation_cached_prompt_tokens",
            "Of the prompt tokens, those served from the provider's prompt cache",
        ),
        _counter(
            "CostUSD",
            "validation_cost_usd",
            "USD of settled runs, at the tiers that served their calls, per model",
            unit="None",
            by_model=True,
        ),
        _counter("RateLimited", "validation_model_rate_limited", "Model calls refused with 429"),
        _counter(
            "UpstreamFailures",
            "validation_model_failures",
            "Model calls that timed out, failed (5xx, connection) or were refused (4xx other than 429)",
        ),
        _counter("AnswersCut", "validation_answers_cut", "Answers cut by max_tokens and asked again"),
        _counter(
            "FlexUnavailable",
            "validation_flex_unavailable",
            'Flex calls answered 429 "resource unavailable" (no capacity; not a rate limit)',
        ),
        _counter(
            "FlexFallbacks", "validation_flex_fallbacks", "Flex calls asked at the standard tier past their deadline"
        ),
        _counter(
            "FilesRejected", "validation_files_rejected", "Uploaded files the plan step refused (not text, empty)"
        ),
        _counter("BatchesSubmitted", "validation_batches_submitted", "Batches created at the Batch API (batch lane)"),
        _counter(
            "BatchRequestsLeft",
            "validation_batch_requests_left",
            "Batched requests answered with an error or a malformed line: asked synchronously instead",
        ),
        _counter(
            "BatchRequestsExpired",
            "validation_batch_requests_expired",
            "Batched requests a batch's 24 h window left unexecuted (resubmitted once, then failed)",
        ),
        _counter(
            "FindingsChecked",
            "validation_findings_checked",
            "Findings and evidence whose quote was looked up in the text, per model",
            by_model=True,
        ),
        _counter(
            "FindingsUngrounded",
            "validation_findings_ungrounded",
            "Findings and evidence whose quote was found nowhere in the text (not delivered), per model; "
            "÷ validation_findings_checked is the model's ungrounded rate",
            by_model=True,
        ),
        _counter(
            "FindingsRelocated", "validation_findings_relocated", "Findings moved to the line where their quote is"
        ),
        _counter("Reasks", "validation_reasks", "Questions asked again because a failure had no grounded finding"),
        _counter(
            "LeaseWaits",
            "validation_lease_waits",
            "Waits of a validator for a call slot or for its place in the token budget",
        ),
        _counter("LeaseWaitSeconds", "validation_lease_wait_seconds", "Time spent in those waits", "Seconds"),
        _counter(
            "SlotWaits",
            "validation_slot_waits",
            "Of those waits, the ones for a call slot of the validation (none while its live cap is the planned one)",
        ),
        _counter(
            "CapacityUnavailable",
            "validation_capacity_unavailable",
            "Invocations that found no call slot or no tokens within their wait (retried by Step Functions)",
        ),
        _counter(
            "Retries",
            "validation_task_retries",
            "Invocations that ended with an error Step Functions retries (CapacityUnavailable included)",
        ),
        _counter(
            "UnexpectedErrors",
            "validation_lambda_errors",
            "Invocations that ended with an unexpected error (logged with its traceback)",
        ),
        _counter(
            "ReconcilerFixes",
            "validation_reconciler_fixes",
            "Validations the reconciler ended (execution gone or ended without a final status) or stopped again",
        ),
        _counter("ValidationsSucceeded", "validation_succeeded", "Validations that ended SUCCEEDED"),
        _counter("ValidationsFailed", "validation_failed", "Validations that ended FAILED"),
        _gauge(
            "BudgetTokensPerWindow",
            "validation_plan_budget_tokens_per_window",
            "The effective tokens per window of the model's governor budget, as the last plan saw it",
            by_model=True,
        ),
        _gauge(
            "TokensUsedLastWindow",
            "validation_plan_tokens_used_last_window",
            "Tokens sent to the model in the last window, as the last plan saw it",
            by_model=True,
        ),
        _gauge(
            "QueuedSeconds",
            "validation_admission_queued_seconds",
            "How long the validation the Admit step last looked at had been queued",
            "Seconds",
        ),
    )
}

Document = dict[str, Any]  # one EMF document, as Powertools serializes it
Sink = Callable[[Document], None]

logger = Logger(service="lambdas", stream=sys.stderr, use_rfc3339=True, utc=True, serialize_stacktrace=False)
# Records of `lambdas.*` go to this logger's handler only, not also to a root handler
# (in local mode the API's own handler sits there).
logging.getLogger("lambdas").propagate = False
log = logging.getLogger(__name__)

_sinks: dict[str, list[Sink]] = {}
_sinks_lock = threading.Lock()
_warm: set[str] = set()  # functions that already ran in this process (cold_start)


@dataclass
class Invocation:
    """The metrics of one invocation, written once at its end."""

    service: str
    namespace: str
    values: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    by_model: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> metric -> value

    def _emf(self, values: dict[str, float], model: str | None = None) -> Document:
        emf = AmazonCloudWatchEMFProvider(namespace=self.namespace, service=self.service)
        if model is not None:
            emf.add_dimension(name="model", value=model)
        for name, value in values.items():
            emf.add_metric(name=name, unit=METRICS[name].unit, value=value)
        document: Document = dict(emf.serialize_metric_set())
        return document

    def document(self) -> Document | None:
        return self._emf(self.values) if self.values else None

    def documents(self) -> list[Document]:
        """The invocation's metrics, then one document per model for the metrics counted per model."""
        first = self.document()
        return ([first] if first else []) + [self._emf(v, model) for model, v in self.by_model.items() if v]


_current: ContextVar[Invocation | None] = ContextVar("lambda_invocation", default=None)


def _values_of(name: str, kind: Kind, model: str | None) -> dict[str, float] | None:
    """Where the running invocation keeps metric `name` (per model when it is so counted); None
    outside an invocation."""
    spec = METRICS[name]  # a misspelt name fails here too (KeyError), in tests as well
    if spec.kind is not kind:
        raise ValueError(f"{name} is a {spec.kind.value}")
    if spec.by_model != (model is not None):
        raise ValueError(f"{name} is {'' if spec.by_model else 'not '}counted per model")
    invocation = _current.get()
    if invocation is None:
        return None
    return invocation.values if model is None else invocation.by_model.setdefault(model, defaultdict(float))


def count(name: str, value: float = 1.0, *, model: str | None = None) -> None:
    """Add to a counter of the running invocation (nothing happens outside one); a metric counted
    per model needs its `model`."""
    values = _values_of(name, Kind.COUNTER, model)
    if values is not None:
        values[name] += value


def gauge(name: str, value: float, *, model: str | None = None) -> None:
    """Set a gauge of the running invocation (its last value is written); a gauge per model
    (a governor budget's) needs its `model`."""
    values = _values_of(name, Kind.GAUGE, model)
    if values is not None:
        values[name] = value


def add_sink(service: str, sink: Sink) -> Callable[[], None]:
    """Send this deployment's metric documents to `sink` instead of stdout; returns the undo."""
    with _sinks_lock:
        _sinks.setdefault(service, []).append(sink)

    def remove() -> None:
        with _sinks_lock:
            _sinks[service].remove(sink)

    return remove


def emit(document: Document) -> None:
    """An EMF document to the sinks of its deployment, else to stdout (what CloudWatch reads)."""
    with _sinks_lock:
        sinks = list(_sinks.get(str(document.get("service")), ()))
    if not sinks:
        print(json.dumps(document, separators=(",", ":")), flush=True)
    for sink in sinks:
        sink(document)


def correlation(event: Any) -> dict[str, Any]:
    """The ids in a state's input that tie its log lines to a validation."""
    if not isinstance(event, dict):
        return {}
    keys: dict[str, Any] = {}
    if event.get("validation_id"):
        keys["validation_id"] = event["validation_id"]
    if event.get("run") is not None:
        keys["run"] = event["run"]
    for name, key in (("parts", "part_range"), ("files", "file_range")):
        span = event.get(name)
        if isinstance(span, dict) and "first" in span:
            keys[key] = f"{span['first']}..{span.get('last', span['first'])}"
    return keys


@contextmanager
def invocation(event: Any, context: Any) -> Iterator[Invocation]:
    environment = lambda_env.current()
    service = environment.get("POWERTOOLS_SERVICE_NAME") or DEFAULT_SERVICE
    function = str(getattr(context, "function_name", "") or environment.get("AWS_LAMBDA_FUNCTION_NAME", ""))
    cold = function not in _warm
    _warm.add(function)
    current = Invocation(service, environment.get("POWERTOOLS_METRICS_NAMESPACE") or DEFAULT_NAMESPACE)
    token = _current.set(current)
    logger.thread_safe_append_keys(
        service=service,
        function_name=function,
        function_request_id=getattr(context, "aws_request_id", None),
        cold_start=cold,
        **correlation(event),
    )
    try:
        yield current
    finally:
        _current.reset(token)
        try:
            for document in current.documents():
                emit(document)
        except Exception as exc:  # noqa: BLE001 - metrics never fail (or mask the error of) an invocation
            log.warning("metrics not written: %s: %s", type(exc).__name__, exc)
        logger.thread_safe_clear_keys()


def report_failure(exc: Exception) -> None:
    """One log line for the error an invocation ends with, and its count."""
    name = type(exc).__name__
    if isinstance(exc, SIGNALS + RETRIED_FAILURES):
        count("Retries")
        if isinstance(exc, CapacityUnavailable):
            count("CapacityUnavailable")
        level = logging.INFO if isinstance(exc, SIGNALS) else logging.WARNING
        log.log(level, "%s: %s; Step Functions retries", name, exc, extra={"error": name})
    elif isinstance(exc, PART_FAILURES):
        log.warning("%s: %s; not retried, recorded as the reason", name, exc, extra={"error": name})
    else:
        count("UnexpectedErrors")
        log.exception("%s: %s", name, exc, extra={"error": name})


Event = TypeVar("Event")
Result = TypeVar("Result")


def observed(handler: Callable[[Event, Any], Result]) -> Callable[[Event, Any], Result]:
    """Wrap a Lambda handler: correlated JSON logs, one EMF document, one line per failure."""

    @functools.wraps(handler)
    def wrapper(event: Event, context: Any) -> Result:
        with invocation(event, context):
            try:
                return handler(event, context)
            except Exception as exc:
                report_failure(exc)
                raise

    return wrapper

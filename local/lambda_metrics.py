"""Local mode: what the Lambdas report, on the API's /metrics.

The embedded AWS runs the Lambda handlers inside the API's process. Each invocation ends
by writing one CloudWatch EMF document (lambdas/common/observability.py); on AWS it is
printed and CloudWatch makes metrics of it. Here a sink receives the same document and
adds it to Prometheus families (`METRICS`: counters summed, gauges set), so the numbers
on /metrics come from the code path that feeds CloudWatch, not from a second count.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from lambdas.common import observability
from lambdas.common.observability import METRICS, Document, Kind


class LambdaMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.families: dict[str, Counter | Gauge] = {
            spec.name: (Counter if spec.kind is Kind.COUNTER else Gauge)(
                spec.prometheus, spec.help, ["model"] if spec.by_model else [], registry=registry
            )
            for spec in METRICS.values()
        }

    def receive(self, document: Document) -> None:
        """Add one EMF document: every metric its directives name that we know."""
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                family = self.families.get(metric["Name"])
                if family is None:
                    continue
                values: list[float] = _values(document[metric["Name"]])
                if METRICS[metric["Name"]].by_model:  # its document carries the model as a dimension
                    family = family.labels(model=str(document.get("model", "")))
                if isinstance(family, Counter):
                    family.inc(sum(values))
                elif values:
                    family.set(values[-1])


def _values(raw: Any) -> list[float]:
    """EMF allows one value or an array of them."""
    return [float(v) for v in raw] if isinstance(raw, list) else [float(raw)]


@contextmanager
def exported(registry: CollectorRegistry, service: str) -> Iterator[LambdaMetrics]:
    """The Lambdas of deployment `service` (POWERTOOLS_SERVICE_NAME = NAME_PREFIX) report into `registry`."""
    metrics = LambdaMetrics(registry)
    remove = observability.add_sink(service, metrics.receive)
    try:
        yield metrics
    finally:
        remove()
        for family in metrics.families.values():
            registry.unregister(family)

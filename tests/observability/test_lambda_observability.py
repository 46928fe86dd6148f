"""lambdas/common/observability.py and local/lambda_metrics.py: what one invocation logs and
the one EMF document it writes, and that document as Prometheus families in local mode."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from core import lambda_env
from lambdas.common import observability
from lambdas.common.errors import CapacityUnavailable, InvalidAnswer
from lambdas.common.observability import count, gauge, observed
from local.lambda_metrics import LambdaMetrics, exported


class Context:
    function_name = "t-validate-part"
    aws_request_id = "req-1"


EVENT = {"validation_id": "v1", "run": 2, "parts": {"first": "000001#0000", "last": "000001#0003"}}


@pytest.fixture
def lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The JSON lines the Lambdas' logger writes, formatted as they are written."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(observability.logger.registered_formatter)
    logging.getLogger("lambdas").addHandler(handler)
    try:
        yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    finally:
        logging.getLogger("lambdas").removeHandler(handler)


@pytest.fixture
def documents() -> Iterator[list[dict[str, Any]]]:
    """EMF documents of the deployment `t-obs` (its functions' POWERTOOLS_SERVICE_NAME)."""
    received: list[dict[str, Any]] = []
    remove = observability.add_sink("t-obs", received.append)
    token = lambda_env.use({"POWERTOOLS_SERVICE_NAME": "t-obs"})
    try:
        yield received
    finally:
        lambda_env.reset(token)
        remove()


def _raising(error: Exception) -> Callable[[Any, Any], Any]:
    @observed
    def handler(event: Any, context: Any) -> Any:
        count("ModelCalls")
        raise error

    return handler


def test_an_expected_condition_is_one_info_line_without_a_traceback_and_is_counted(
    lines: Callable[[], list[dict[str, Any]]], documents: list[dict[str, Any]]
) -> None:
    with pytest.raises(CapacityUnavailable):  # still raised: Step Functions retries it by its name
        _raising(CapacityUnavailable("all 1 call slots of this validation are busy"))(EVENT, Context())

    [line] = lines()
    assert line["level"] == "INFO" and "exception" not in line
    assert (
        line["message"] == "CapacityUnavailable: all 1 call slots of this validation are busy; Step Functions retries"
    )
    assert (line["validation_id"], line["run"], line["part_range"]) == ("v1", 2, "000001#0000..000001#0003")
    assert (line["service"], line["function_name"], line["function_request_id"]) == (
        "t-obs",
        Context.function_name,
        "req-1",
    )
    assert isinstance(line["cold_start"], bool)
    [document] = documents
    assert {m["Name"] for m in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]} == {
        "ModelCalls",
        "Retries",
        "CapacityUnavailable",
    }
    assert (document["Retries"], document["CapacityUnavailable"]) == ([1.0], [1.0])


def test_a_retried_failure_outside_is_a_warning_without_a_traceback(
    lines: Callable[[], list[dict[str, Any]]], documents: list[dict[str, Any]]
) -> None:
    with pytest.raises(InvalidAnswer):
        _raising(InvalidAnswer("part 3: rule r1 answered twice"))(EVENT, Context())

    [line] = lines()
    assert line["level"] == "WARNING" and "exception" not in line and line["error"] == "InvalidAnswer"
    assert documents[0]["Retries"] == [1.0] and "CapacityUnavailable" not in documents[0]


def test_an_unexpected_error_is_one_error_line_with_one_traceback(
    lines: Callable[[], list[dict[str, Any]]], documents: list[dict[str, Any]]
) -> None:
    with pytest.raises(KeyError):
        _raising(KeyError("files"))(EVENT, Context())

    [line] = lines()
    assert line["level"] == "ERROR" and line["validation_id"] == "v1"
    assert line["exception"].count("Traceback (most recent call last)") == 1
    assert documents[0]["UnexpectedErrors"] == [1.0] and "Retries" not in documents[0]


def test_an_invocation_writes_one_emf_document_with_summed_counters_and_the_last_gauge(
    documents: list[dict[str, Any]],
) -> None:
    @observed
    def handler(event: Any, context: Any) -> str:
        for tokens in (100, 250):
            count("ModelCalls")
            count("PromptTokens", tokens)
        gauge("QueuedSeconds", 5)
        gauge("QueuedSeconds", 7)
        return "done"

    assert handler(EVENT, Context()) == "done"
    [document] = documents
    directive = document["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "ValidationService" and directive["Dimensions"] == [["service"]]
    assert document["service"] == "t-obs"
    assert (document["ModelCalls"], document["PromptTokens"], document["QueuedSeconds"]) == ([2.0], [350.0], [7.0])
    assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == {
        "ModelCalls": "Count",
        "PromptTokens": "Count",
        "QueuedSeconds": "Seconds",
    }


def test_without_a_sink_the_document_is_printed_for_cloudwatch_and_nothing_outside_an_invocation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    count("ModelCalls")  # outside an invocation: dropped
    token = lambda_env.use({"POWERTOOLS_SERVICE_NAME": "t-nobody-listens"})
    try:
        observed(lambda event, context: count("AnswersCut"))(EVENT, Context())
    finally:
        lambda_env.reset(token)
    [printed] = capsys.readouterr().out.splitlines()
    document = json.loads(printed)
    assert document["service"] == "t-nobody-listens" and document["AnswersCut"] == [1.0]
    assert "ModelCalls" not in document


def test_local_mode_adds_the_documents_to_prometheus_families() -> None:
    registry = CollectorRegistry()
    token = lambda_env.use({"POWERTOOLS_SERVICE_NAME": "t-local"})
    try:
        with exported(registry, "t-local"):

            @observed
            def handler(event: Any, context: Any) -> None:
                count("ModelCalls")
                count("LeaseWaitSeconds", 1.5)
                gauge("BudgetTokensPerWindow", 45_000, model="gpt-a")

            handler(EVENT, Context())
            handler(EVENT, Context())
            assert registry.get_sample_value("validation_model_calls_total") == 2
            assert registry.get_sample_value("validation_lease_wait_seconds_total") == 3.0
            budget = registry.get_sample_value("validation_plan_budget_tokens_per_window", {"model": "gpt-a"})
            assert budget == 45_000  # a gauge: set, not summed
            assert registry.get_sample_value("validation_model_rate_limited_total") == 0
    finally:
        lambda_env.reset(token)
    assert registry.get_sample_value("validation_model_calls_total") is None  # unregistered with the app


def test_metrics_counted_per_model_get_a_model_dimension_and_label() -> None:
    registry = CollectorRegistry()
    token = lambda_env.use({"POWERTOOLS_SERVICE_NAME": "t-model"})
    try:
        with exported(registry, "t-model"):

            @observed
            def handler(event: Any, context: Any) -> None:
                count("FindingsChecked", 10, model="gpt-a")
                count("FindingsUngrounded", 2, model="gpt-a")
                count("FindingsChecked", 5, model="gpt-b")
                count("Reasks")
                gauge("TokensUsedLastWindow", 700, model="gpt-b")  # a governor budget's: one per model
                gauge("TokensUsedLastWindow", 900, model="gpt-b")

            handler(EVENT, Context())
            checked = {m: registry.get_sample_value("validation_findings_checked_total", {"model": m}) for m in "ab"}
            assert registry.get_sample_value("validation_findings_checked_total", {"model": "gpt-a"}) == 10
            assert registry.get_sample_value("validation_findings_checked_total", {"model": "gpt-b"}) == 5
            assert registry.get_sample_value("validation_findings_ungrounded_total", {"model": "gpt-a"}) == 2
            assert registry.get_sample_value("validation_reasks_total") == 1
            assert registry.get_sample_value("validation_plan_tokens_used_last_window", {"model": "gpt-b"}) == 900
            assert checked == {"a": None, "b": None}  # labelled by the model's name only
    finally:
        lambda_env.reset(token)
    with pytest.raises(ValueError, match="counted per model"):
        count("FindingsChecked", 1)
    with pytest.raises(ValueError, match="not counted per model"):
        count("Reasks", 1, model="gpt-a")
    with pytest.raises(ValueError, match="counted per model"):
        gauge("BudgetTokensPerWindow", 1)


def test_an_emf_document_with_single_values_and_unknown_names_is_read() -> None:
    registry = CollectorRegistry()
    LambdaMetrics(registry).receive(
        {
            "_aws": {"CloudWatchMetrics": [{"Metrics": [{"Name": "RateLimited"}, {"Name": "ColdStart"}]}]},
            "RateLimited": 3,
            "ColdStart": 1,  # Powertools' own metric: not one of ours, left out
        }
    )
    assert registry.get_sample_value("validation_model_rate_limited_total") == 3
    assert not [f for f in registry.collect() if "cold" in f.name.lower()]

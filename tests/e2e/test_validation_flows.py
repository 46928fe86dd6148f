"""Whole validations through the API, the embedded Step Functions engine, the Lambdas and the simulator."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from app.settings import Settings
from core.records import ITEMS_FOR_FULL_MAP, MAX_MAP_ITEMS
from local.aws import lambda_router
from local.simulator.server import SimulatorServer
from tests.support.stack import (
    Aws,
    HeldCalls,
    MakeApi,
    all_results,
    lines_document,
    set_parallelism,
    submit,
    wait_for,
    wait_for_status,
)

NO_SECRET = {"id": "no-secret", "text": 'The file must not contain "secret".'}
HAS_ROW = {"id": "has-row", "text": 'Every part must contain "row".'}


class Invocations:
    """What the embedded Lambda route ran of one function: how many run now, what each returned."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, function_name: str) -> None:
        self.running = 0
        self.returned: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        original = lambda_router.invoke

        def invoke(function: lambda_router.Function, payload: bytes) -> tuple[int, dict[str, str], bytes]:
            if function.name != function_name:
                return original(function, payload)
            with self._lock:
                self.running += 1
            body = b"{}"  # if the route itself raised (handler errors are answers)
            try:
                status, headers, body = original(function, payload)
                return status, headers, body
            finally:
                with self._lock:  # what it returned is kept before it counts as returned
                    self.returned.append(json.loads(body))
                    self.running -= 1

        monkeypatch.setattr(lambda_router, "invoke", invoke)


def test_three_files_two_rules_succeed_with_per_file_per_rule_results(api: Any, simulator: SimulatorServer) -> None:
    created = submit(
        api,
        {
            "clean.txt": lines_document(5),
            "leaky.csv": lines_document(6, marker_every=3),
            "notes.md": "row one\nrow two\n",
        },
        [NO_SECRET, HAS_ROW],
    )
    assert created["status"] == "RUNNING"
    assert created["links"]["self"] == f"/validations/{created['id']}"

    done = wait_for_status(api, created["id"])
    results = {r["file"]: r for r in all_results(api, created["id"])}

    assert done["status"] == "SUCCEEDED"
    assert done["progress"] == {"total": 3, "succeeded": 3, "failed": 0, "pending": 0}
    assert done["usage"]["prompt_tokens"] > 0 and done["usage"]["completion_tokens"] > 0
    assert set(results) == {"clean.txt", "leaky.csv", "notes.md"}
    assert all(
        r["status"] == "SUCCEEDED" and [v["id"] for v in r["rules"]] == ["no-secret", "has-row"]
        for r in results.values()
    )
    leaky = {v["id"]: v for v in results["leaky.csv"]["rules"]}
    assert leaky["no-secret"]["passed"] is False
    assert [f["location"] for f in leaky["no-secret"]["findings"]] == ["line 3", "line 6"]
    assert leaky["has-row"] == {"id": "has-row", "passed": True, "findings": [], "ungrounded": [], "undecided": None}
    assert {v["id"]: v["passed"] for v in results["clean.txt"]["rules"]} == {"no-secret": True, "has-row": True}
    assert simulator.stats.part_calls == 3


@pytest.mark.slow(20)
def test_at_parallelism_five_never_more_than_five_calls_are_in_flight(
    make_api: MakeApi,
    aws: Aws,
    settings: Settings,
    simulator: SimulatorServer,
    hold_calls: Callable[[int], HeldCalls],
) -> None:
    api = make_api(part_max_tokens=100)
    set_parallelism(aws, settings, 5)
    simulator.reconfigure(latency_seconds=0.05)
    documents = {f"part-{i}.txt": lines_document(240) for i in range(2)}
    calls = hold_calls(0)  # every call waits at the model until released: the slots alone decide how many

    created = submit(api, documents, [NO_SECRET])
    wait_for(lambda: calls.waiting == 5, timeout=120, what="five calls held at once")
    calls.release()
    done = wait_for_status(api, created["id"], timeout=240)

    assert done["progress"]["total"] >= 50  # the Map runs ten validators at once: the call slots hold them to five
    assert done["status"] == "SUCCEEDED", (done, [r.get("error") for r in all_results(api, created["id"])])
    assert simulator.stats.part_calls == done["progress"]["total"]
    assert simulator.stats.peak_in_flight <= 5
    assert calls.peak_waiting == 5  # the limit was reached, never passed: it is what held calls back


@pytest.mark.slow(18)
def test_every_part_finishes_when_thirty_percent_of_calls_get_429(
    make_api: MakeApi, simulator: SimulatorServer
) -> None:
    # Eight retries: a part fails only if nine calls in a row get 429 (0.3^9, about 2e-5).
    api = make_api(part_max_tokens=100, sfn_retry_max_attempts=8)
    simulator.reconfigure(rate_limit_rate=0.3, seed=7)

    created = submit(api, {"a.txt": lines_document(60), "b.txt": lines_document(60)}, [NO_SECRET])
    done = wait_for_status(api, created["id"], timeout=240)

    assert done["status"] == "SUCCEEDED", done
    assert done["progress"]["succeeded"] == done["progress"]["total"] >= 10
    assert simulator.stats.rate_limited > 0  # retries did the work
    assert simulator.stats.part_calls == done["progress"]["total"]  # each part answered once
    assert (
        simulator.stats.requests
        == simulator.stats.part_calls + simulator.stats.combine_calls + simulator.stats.rate_limited
    )
    # Every attempt is on the validation's usage: refused ones as attempts, answered ones as calls with tokens.
    usage = done["usage"]
    assert usage["attempts"] == simulator.stats.requests
    assert usage["model_calls"] == simulator.stats.part_calls + simulator.stats.combine_calls
    assert usage["prompt_tokens"] + usage["completion_tokens"] == simulator.stats.billed_tokens


def test_cancel_mid_run_keeps_partial_results_and_starts_no_call_after_the_stop(
    make_api: MakeApi,
    aws: Aws,
    settings: Settings,
    simulator: SimulatorServer,
    hold_calls: Callable[[int], HeldCalls],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = make_api(part_max_tokens=100, cancel_settle_seconds=0)  # the stop settles once the held calls answer
    set_parallelism(aws, settings, 2)
    validators = Invocations(monkeypatch, f"{settings.name_prefix}-validate-part")
    held = hold_calls(0)  # every call waits at the simulator until released
    created = submit(api, {"long.txt": lines_document(1400)}, [NO_SECRET])
    vid, total = created["id"], created["progress"]["total"]
    assert total > ITEMS_FOR_FULL_MAP  # two or more parts per invocation: each has a next part to refuse
    # Both call slots are taken by calls held mid-call, each its invocation's first part: no
    # validator is between its check of the status and its call.
    wait_for(lambda: held.waiting == 2, what="two calls in flight")

    cancelled = api.delete(f"/validations/{vid}")  # CANCELLING is stored before the execution is stopped
    assert cancelled.status_code == 202
    assert cancelled.json()["status"] in ("CANCELLING", "CANCELLED")
    held.release()  # the calls in flight at the stop answer now
    final = wait_for_status(api, vid, statuses=("CANCELLED",))
    wait_for(
        lambda: validators.running == 0 and len(validators.returned) >= 2,
        what="the validators in flight at the stop to return",
    )

    summaries = [r for r in validators.returned if "validated" in r]  # the others raised (e.g. no call slot in time)
    assert held.arrived == 2  # no call reached the model after the stop
    assert sum(s["validated"] for s in summaries) == 2  # the two in flight kept their results...
    assert all(s["stopped"] for s in summaries)  # ...and every validator stopped before its next part
    assert final["finished_at"] is not None
    after = api.get(f"/validations/{vid}").json()
    assert after["status"] == "CANCELLED"
    assert after["progress"]["succeeded"] == simulator.stats.part_calls == 2
    results = all_results(api, vid)
    assert results[0]["parts"]["succeeded"] == 2
    assert results[0]["rules"] and results[0]["rules"][0]["id"] == "no-secret"
    assert api.delete(f"/validations/{vid}").json()["status"] == "CANCELLED"  # repeated DELETE, same answer
    history = api.get(f"/validations/{vid}/history", params={"limit": 100}).json()
    assert history["events"][0]["type"] == "ExecutionStarted"


def test_delete_on_an_ended_validation_is_409(api: Any) -> None:
    created = submit(api, {"a.txt": "row 1\n"}, [NO_SECRET])
    wait_for_status(api, created["id"])

    answer = api.delete(f"/validations/{created['id']}")

    assert answer.status_code == 409
    assert answer.headers["content-type"] == "application/problem+json"


@pytest.mark.slow(6)
def test_failed_parts_make_the_validation_failed_with_reasons_and_retry_is_refused_while_running(
    make_api: MakeApi, simulator: SimulatorServer
) -> None:
    api = make_api(part_max_tokens=100, sfn_retry_max_attempts=1)
    simulator.reconfigure(error_rate=1.0)  # every call fails: parts exhaust their retries
    vid = submit(api, {"a.txt": lines_document(30)}, [NO_SECRET])["id"]

    failed = wait_for_status(api, vid, timeout=240)

    assert failed["status"] == "FAILED"
    assert failed["error"]["type"] == "parts_failed"
    assert failed["progress"]["failed"] == failed["progress"]["total"] >= 2
    result = all_results(api, vid)[0]
    assert result["status"] == "FAILED"
    assert result["error"]["type"] == "ModelUnavailable"
    assert "500" in result["error"]["message"]

    assert api.post(f"/validations/{vid}/retry").status_code == 202
    refused = api.post(f"/validations/{vid}/retry")  # the rerun is RUNNING now
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    assert wait_for_status(api, vid, timeout=240)["run"] == 2


@pytest.mark.slow(6)
def test_retry_after_partial_failure_redoes_nothing_that_succeeded(
    make_api: MakeApi, simulator: SimulatorServer
) -> None:
    api = make_api(part_max_tokens=100, sfn_retry_max_attempts=0)  # a failed call fails its part
    simulator.reconfigure(error_rate=0.5, seed=3)
    vid = submit(api, {"a.txt": lines_document(80)}, [NO_SECRET])["id"]
    first = wait_for_status(api, vid, timeout=240)
    assert first["status"] == "FAILED"
    assert 0 < first["progress"]["failed"] < first["progress"]["total"]
    calls_before = simulator.stats.part_calls
    simulator.reconfigure(error_rate=0.0)

    retried = api.post(f"/validations/{vid}/retry")
    assert retried.status_code == 202
    assert retried.json()["run"] == 2
    done = wait_for_status(api, vid, timeout=240)

    total = first["progress"]["total"]
    assert done["status"] == "SUCCEEDED"
    assert done["progress"] == {"total": total, "succeeded": total, "failed": 0, "pending": 0}
    assert simulator.stats.part_calls - calls_before == first["progress"]["failed"]  # only the failed ones
    assert api.post(f"/validations/{vid}/retry").status_code == 409  # nothing failed any more


@pytest.mark.slow(40)
def test_a_many_part_validation_stays_inside_step_functions_limits_even_at_the_largest_size(
    make_api: MakeApi, aws: Aws, settings: Settings, simulator: SimulatorServer
) -> None:
    """Measured on a few hundred parts, scaled to the largest validation: both Map states at MAX_MAP_ITEMS items."""
    api = make_api(part_max_tokens=100)
    set_parallelism(aws, settings, 10)
    documents = {f"part-{i}.log": lines_document(700, marker_every=97) for i in range(2)}

    created = submit(api, documents, [NO_SECRET])
    done = wait_for_status(api, created["id"], timeout=300)

    failures = (
        {}
        if done["status"] == "SUCCEEDED"
        else {
            "error": done.get("error"),
            "parts": [r.get("error") for r in all_results(api, created["id"]) if r.get("error")][:5],
        }
    )
    assert done["status"] == "SUCCEEDED", failures
    assert done["progress"]["total"] > ITEMS_FOR_FULL_MAP  # several parts per Map item, as at any larger size
    assert simulator.stats.part_calls == done["progress"]["total"]
    sfn = aws.client("stepfunctions")
    machine = aws.machine_arn(settings.state_machine_name)
    execution = sfn.describe_execution(
        executionArn=f"{machine.replace(':stateMachine:', ':execution:')}:{created['id']}"
    )
    pages = sfn.get_paginator("get_execution_history").paginate(
        executionArn=execution["executionArn"], PaginationConfig={"PageSize": 1000}
    )
    events = [event for page in pages for event in page["events"]]
    given = json.loads(execution["input"])
    items = len(given["batches"]) + len(given["combine"])
    iterations = sum(e["type"] == "MapIterationStarted" for e in events)
    assert iterations == items  # one iteration per Map item
    # Every event and input byte counted as if it grew with the items (the fixed ones too): an upper bound.
    largest = 2 * MAX_MAP_ITEMS
    assert len(events) / items * largest < 25_000  # events in one execution's history
    assert len(execution["input"].encode()) / items * largest < 256 * 1024  # a state's payload
    flagged = [r for r in all_results(api, created["id"]) if not r["rules"][0]["passed"]]
    assert len(flagged) == 2  # every file has marker lines

"""The queue's sans-IO rules (core/queue.py), driven with scripted answers: how the head is
found past stale index entries, who gets woken, and how queued validations are counted."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from core.dynamo import to_item, typed
from core.queue import (
    PARK_TIMEOUT_SECONDS,
    WAKE_OUTPUT,
    Head,
    QueueFull,
    enqueue_steps,
    head_steps,
    join_queue_steps,
    leave_queue_steps,
    park_steps,
    release_steps,
)
from core.quota import Admission, Quota, admission_steps
from core.steps import GET, QUERY, SEND_TASK_SUCCESS, TRANSACT, Cancelled, StepAnswer, cancelled
from local.aws.provision import render_template
from tests.test_steps import scripted

ASL = Path(__file__).resolve().parents[1] / "infra" / "terraform" / "statemachine" / "validation.asl.json"


def _index(*ids: str) -> dict[str, Any]:
    """A page of the queue_by_owner index, oldest first."""
    return {"Items": [typed({"id": i, "owner": "u1", "queue_key": f"k-{i}", "run": 1}) for i in ids]}


def _record(vid: str, status: str = "QUEUED", token: str | None = None, key: str | None = None) -> StepAnswer:
    item: dict[str, Any] = {"id": vid, "status": status, "run": 1}
    if status == "QUEUED":
        item["queue_key"] = key or f"k-{vid}"
    if token:
        item["park_token"] = token
    return {"Item": typed(item)}


def test_the_head_is_the_oldest_entry_still_queued_skipping_stale_index_entries() -> None:
    # The index (eventually consistent) still lists v1, admitted meanwhile, and v2, cancelled and
    # requeued under a new key by a retry; v3 is the real head.
    answers = [_index("v1", "v2", "v3"), _record("v1", "RUNNING"), _record("v2", key="k-newer"), _record("v3")]

    taken, head = scripted(head_steps("validations", "u1"), answers)

    assert head == Head("v3", 1, None)
    assert [op for op, _ in taken] == [QUERY, GET, GET, GET]
    assert all(request["ConsistentRead"] for op, request in taken if op == GET)


def test_the_head_check_of_an_admission_reads_nothing_more_when_it_is_the_head() -> None:
    taken, head = scripted(head_steps("validations", "u1", me="v1"), [_index("v1", "v2")])
    assert head == Head("v1", 1, None) and [op for op, _ in taken] == [QUERY]


def test_the_head_search_follows_pages_and_ends_empty() -> None:
    first = {**_index("v1"), "LastEvaluatedKey": {"id": {"S": "v1"}}}
    taken, head = scripted(head_steps("validations", "u1"), [first, _record("v1", "CANCELLED"), _index()])
    assert head is None
    assert taken[2][1]["ExclusiveStartKey"] == {"id": {"S": "v1"}}


def test_release_wakes_a_parked_head_with_its_token() -> None:
    taken, woken = scripted(release_steps("validations", "u1"), [_index("v1"), _record("v1", token="tok-1"), {}])

    assert woken == "v1"
    assert taken[-1] == (SEND_TASK_SUCCESS, {"taskToken": "tok-1", "output": WAKE_OUTPUT})


def test_release_sends_nothing_when_the_head_is_not_parked_or_nothing_is_queued() -> None:
    taken, woken = scripted(release_steps("validations", "u1"), [_index("v1"), _record("v1")])
    assert woken is None and SEND_TASK_SUCCESS not in [op for op, _ in taken]

    taken, woken = scripted(release_steps("validations", "u1"), [_index()])
    assert woken is None and [op for op, _ in taken] == [QUERY]


def test_a_spent_token_is_an_answer_not_an_error() -> None:
    step = (SEND_TASK_SUCCESS, {"taskToken": "t", "output": "{}"})
    for code in ("InvalidToken", "TaskTimedOut", "TaskDoesNotExist"):
        assert cancelled({"Error": {"Code": code}}, step) == Cancelled([{"Code": code}])
    assert cancelled({"Error": {"Code": "ThrottlingException"}}, step) is None  # raised: retried

    _, woken = scripted(
        release_steps("validations", "u1"),
        [_index("v1"), _record("v1", token="old"), Cancelled([{"Code": "TaskTimedOut"}])],
    )
    assert woken is None


def test_parking_stores_the_token_only_on_the_queued_run() -> None:
    taken, stored = scripted(park_steps("validations", "v1", 2, "tok", "2026-01-01T00:00:00Z"), [{}])
    update = taken[0][1]["TransactItems"][0]["Update"]
    assert stored is True
    assert update["ConditionExpression"] == "#status = :queued AND #run = :run"
    assert update["ExpressionAttributeValues"][":run"] == {"N": "2"}

    _, stored = scripted(
        park_steps("validations", "v1", 2, "tok", "t"), [Cancelled([{"Code": "ConditionalCheckFailed"}])]
    )
    assert stored is False


def _lost_on_bucket(queued: int) -> Cancelled:
    return Cancelled(
        [{"Code": "None"}, {"Code": "ConditionalCheckFailed", "Item": to_item({"queued": queued, "tat": 12.5})}]
    )


def test_a_new_validation_is_stored_and_counted_in_one_transaction_or_refused_past_max_queued() -> None:
    record = {"id": "v9", "owner": "u1", "status": "QUEUED", "queue_key": "k", "run_cost": 700}

    taken, full = scripted(enqueue_steps("validations", "buckets", record, 3), [{}])
    items = taken[0][1]["TransactItems"]
    assert full is None and [op for op, _ in taken] == [TRANSACT]
    assert items[0]["Put"]["Item"]["id"] == {"S": "v9"}
    assert items[1]["Update"]["ConditionExpression"] == "attribute_not_exists(#queued) OR #queued < :max"
    assert items[1]["Update"]["ExpressionAttributeValues"][":max"] == {"N": "3"}

    _, full = scripted(enqueue_steps("validations", "buckets", record, 3), [_lost_on_bucket(3)])
    assert full == QueueFull(queued=3, tat=12.5)

    taken, full = scripted(enqueue_steps("validations", "buckets", record, None), [{}])  # no quota: not counted
    assert full is None and len(taken[0][1]["TransactItems"]) == 1


def test_a_rerun_joins_the_queue_counted_or_is_refused_or_finds_it_moved_on() -> None:
    def join(answer: StepAnswer) -> Any:
        return scripted(join_queue_steps("validations", "buckets", "v1", "u1", 2, "k2", 5), [answer])[1]

    assert join({}) is True
    assert join(_lost_on_bucket(5)) == QueueFull(5, 12.5)
    assert join(Cancelled([{"Code": "ConditionalCheckFailed"}, {"Code": "None"}])) is False


def test_leaving_the_queue_removes_the_key_and_counts_it_off_once() -> None:
    taken, left = scripted(leave_queue_steps("validations", "buckets", "v1", "u1", counted=True), [{}])
    remove, count = (i["Update"] for i in taken[0][1]["TransactItems"])
    assert left is True
    assert remove["ConditionExpression"] == "attribute_exists(#queue_key)"  # a second call writes nothing
    assert "REMOVE #queue_key, #park_token" in remove["UpdateExpression"]
    assert count["UpdateExpression"] == "SET #queued = if_not_exists(#queued, :one) - :one"

    _, left = scripted(
        leave_queue_steps("validations", "buckets", "v1", "u1", counted=True),
        [Cancelled([{"Code": "ConditionalCheckFailed"}, {"Code": "None"}])],
    )
    assert left is False


def test_admission_of_a_queued_validation_counts_it_off_with_the_grant() -> None:
    quota = Quota(10_000, 6_000, 2, max_queued=4)
    admission = Admission("validations", "buckets", "v1", "u1", "k-v1", 1, 500, 0, quota)

    taken, outcome = scripted(admission_steps(admission, 1000.0, "now"), [_index("v1"), {}])

    grant, start = (i["Update"] for i in taken[1][1]["TransactItems"])
    assert outcome.admitted
    assert "#queued = if_not_exists(#queued, :one) - :one" in grant["UpdateExpression"]
    assert "attribute_exists(#queue_key)" in start["ConditionExpression"]  # only a counted one is counted off
    assert "REMOVE #queue_key, #park_token" in start["UpdateExpression"]


def test_an_admission_behind_an_older_queued_validation_is_refused_without_a_grant() -> None:
    admission = Admission("validations", "buckets", "v2", "u1", "k-v2", 1, 500, 0, Quota(10_000, 6_000, 2))

    taken, outcome = scripted(admission_steps(admission, 1000.0, "now"), [_index("v1", "v2"), _record("v1")])

    assert outcome.behind == "v1" and not outcome.admitted
    assert TRANSACT not in [op for op, _ in taken]


def test_the_state_machine_parks_for_seven_days_and_never_retries_the_timeout() -> None:
    template = ASL.read_text()
    rendered = render_template(template, dict.fromkeys(re.findall(r"\$\{(\w+)\}", template), 1))
    states = json.loads(rendered)["States"]
    parked = states["WaitForSlot"]
    assert parked["Resource"] == "arn:aws:states:::lambda:invoke.waitForTaskToken"
    assert parked["Parameters"]["Payload"]["task_token.$"] == "$$.Task.Token"
    assert parked["TimeoutSeconds"] == PARK_TIMEOUT_SECONDS
    assert parked["Retry"][0] == {"ErrorEquals": ["States.Timeout"], "MaxAttempts": 0}
    assert parked["Next"] == "Admit" and states["WaitForTokens"]["Next"] == "Admit"

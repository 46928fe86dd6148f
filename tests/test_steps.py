"""The sans-IO DynamoDB rules (core/steps.py), driven with scripted answers: what each rule
asks for, and what it makes of the answers (both real drivers run them in the e2e tests)."""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

from core import events
from core.dynamo import typed
from core.quota import Quota, settle_steps
from core.records import parts_query
from core.steps import PUT, QUERY, TRANSACT, UPDATE, Cancelled, Step, StepAnswer, cancelled, query_all

_LOST = {"Error": {"Code": "TransactionCanceledException"}}


def scripted(steps: Generator[Step, StepAnswer, Any], answers: list[StepAnswer]) -> tuple[list[Step], Any]:
    """Drive a rule with the given answers, in order; the steps it took and its result."""
    taken: list[Step] = []
    try:
        step = next(steps)
        for answer in answers:
            taken.append(step)
            step = steps.send(answer)
        raise AssertionError(f"the rule asked for more than {len(answers)} steps: {step}")
    except StopIteration as done:
        return taken, done.value


def test_query_all_follows_last_evaluated_key_until_the_last_page() -> None:
    request = parts_query("parts", "v1", "00000-", "00000-~")
    pages: list[StepAnswer] = [
        {"Items": [typed({"part_id": "00000-000000", "n": 1})], "LastEvaluatedKey": {"k": {"S": "a"}}},
        {"Items": [typed({"part_id": "00000-000001", "n": 2})]},
    ]

    taken, items = scripted(query_all(request), pages)

    assert [op for op, _ in taken] == [QUERY, QUERY]
    assert "ExclusiveStartKey" not in taken[0][1] and taken[1][1]["ExclusiveStartKey"] == {"k": {"S": "a"}}
    assert items == [{"part_id": "00000-000000", "n": 1}, {"part_id": "00000-000001", "n": 2}]


def _admitted(**fields: Any) -> dict[str, Any]:
    return {
        "id": "v1",
        "owner": "u1",
        "reserved": 1000,
        "reserved_run": 1,
        "usage_at_start": 0,
        "prompt_tokens": 300,
        "completion_tokens": 100,
        **fields,
    }


def test_settlement_is_one_transaction_and_a_lost_race_settles_nothing() -> None:
    quota = Quota(10_000, 6_000, 2)

    taken, settled = scripted(settle_steps("validations", "buckets", _admitted(), quota), [{}])
    assert settled is True and [op for op, _ in taken] == [TRANSACT]
    assert len(taken[0][1]["TransactItems"]) == 2  # the validation's settled_run and the bucket's refund

    _, settled = scripted(settle_steps("validations", "buckets", _admitted(), quota), [Cancelled([{}, {}])])
    assert settled is False


def test_nothing_to_settle_takes_no_step() -> None:
    quota = Quota(10_000, 6_000, 2)
    for record, quota_ in ((_admitted(settled_run=1), quota), (_admitted(), None), ({"id": "v1"}, quota)):
        taken, settled = scripted(settle_steps("validations", "buckets", record, quota_), [])
        assert (taken, settled) == ([], False)


def test_append_numbers_the_event_from_the_allocation_and_builds_it_from_that_record() -> None:
    record = {"id": "v1", "event_seq": 7, "status": "RUNNING", "run": 2}
    steps = events.append_steps("validations", "events", "v1", events.STATUS, events.status_of)

    taken, returned = scripted(steps, [{"Attributes": typed(record)}, {}])

    assert [op for op, _ in taken] == [UPDATE, PUT]
    item = taken[1][1]["Item"]
    assert item["seq"] == {"N": "7"} and item["type"] == {"S": "status"}
    assert json.loads(item["data"]["S"]) == {"status": "RUNNING", "run": 2, "error": None}
    assert returned["event_seq"] == 7


def test_only_a_cancelled_transaction_is_an_answer_other_errors_are_raised() -> None:
    items: list[dict[str, Any]] = [{"Update": {}}, {"Update": {}}]
    lost = cancelled(
        {**_LOST, "CancellationReasons": [{"Code": "None"}, {"Code": "ConditionalCheckFailed"}]},
        (TRANSACT, {"TransactItems": items}),
    )
    assert lost == Cancelled([{"Code": "None"}, {"Code": "ConditionalCheckFailed"}])
    assert cancelled(_LOST, (TRANSACT, {"TransactItems": items})) == Cancelled([{"Code": "ConditionalCheckFailed"}] * 2)
    throttled = {"Error": {"Code": "ThrottlingException"}}
    assert cancelled(throttled, (TRANSACT, {"TransactItems": items})) is None
    assert cancelled({"Error": {"Code": "ConditionalCheckFailedException"}}, (PUT, {})) is None

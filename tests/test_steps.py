"""The sans-IO DynamoDB rules (core/steps.py), driven with scripted answers: what each rule
asks for, and what it makes of the answers (both real drivers run them in the e2e tests)."""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

from core import events, tallies
from core.dynamo import typed
from core.quota import Quota, settle_steps
from core.records import parts_query
from core.steps import GET, PUT, QUERY, TRANSACT, UPDATE, Cancelled, Step, StepAnswer, cancelled, query_all

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


def test_a_settled_parts_events_take_their_numbers_in_one_write_and_count_from_the_tallies() -> None:
    steps = events.append_all_steps(
        "validations",
        "events",
        "v1",
        [(events.PROGRESS, events.progress_of), (events.RESULT, lambda _: {"file": "a.txt"})],
        "parts",
    )
    record = {"id": "v1", "total_parts": 4, "succeeded": 1, "expires_at": 99}  # a count kept on an older record
    counts = [{"part_id": "tally~0", "succeeded": 1, "settled_0": 2}, {"part_id": "tally~5", "failed": 1}]

    taken, returned = scripted(
        steps,
        [
            {"Attributes": typed({"event_seq": 9})},
            {"Item": typed(record)},
            {"Items": [typed(c) for c in counts]},
            {},
            {},
        ],
    )

    assert [op for op, _ in taken] == [UPDATE, GET, QUERY, PUT, PUT]
    assert taken[0][1]["UpdateExpression"] == "ADD #event_seq :add_event_seq"
    assert taken[0][1]["ExpressionAttributeValues"][":add_event_seq"] == {"N": "2"}
    assert taken[0][1]["ReturnValues"] == "UPDATED_NEW"  # not the whole record: the counts are elsewhere
    progress, result = (taken[3][1]["Item"], taken[4][1]["Item"])
    assert (progress["seq"], result["seq"]) == ({"N": "8"}, {"N": "9"})
    assert json.loads(progress["data"]["S"]) == {
        "total": 4,
        "succeeded": 2,
        "failed": 1,
        "pending": 1,
        "file_parts_settled": {"0": 2},
    }
    assert progress["expires_at"] == {"N": "99"} and returned["event_seq"] == 9


def test_tallies_merge_into_the_record_and_their_writes_land_on_one_of_a_few_items() -> None:
    record = {"id": "v1", "succeeded": 2, "file_settled": {"0": 2}, "files": [{}, {}, {}]}
    merged = tallies.merge(
        record,
        [
            {"part_id": "tally~1", "succeeded": 3, "prompt_tokens": 10, "settled_1": 3, "served_model": "m-1"},
            {"part_id": "tally~2", "failed": -1, "settled_0": -1, "expires_at": 5},  # a retry's reset
        ],
    )
    assert merged["succeeded"] == 5 and merged["prompt_tokens"] == 10 and merged["failed"] == -1
    assert merged["file_settled"] == {"0": 1, "1": 3, "2": 0} and merged["served_model"] == "m-1"
    assert "expires_at" not in merged and "part_id" not in merged
    keys = {tallies.shard_for(f"{i:05d}-000000") for i in range(200)}
    assert keys == {tallies.shard_key(n) for n in range(tallies.SHARDS)}  # spread over every tally
    assert tallies.shard_for("00003-000001") == tallies.shard_for("00003-000001")  # a retried write: the same one
    change = tallies.update("parts", "v1", "00003-000001", {"succeeded": 1, "failed": 0}, settled={3: 1}, expires_at=7)
    assert change["Key"] == {"validation_id": {"S": "v1"}, "part_id": {"S": tallies.shard_for("00003-000001")}}
    assert change["UpdateExpression"].startswith("SET #expires_at = if_not_exists(#expires_at, :expires) ADD ")
    assert "failed" not in change["ExpressionAttributeNames"].values()  # nothing written for a zero


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

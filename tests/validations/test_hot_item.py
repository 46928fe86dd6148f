"""A validation's record is not a hot item: the model calls of its run write it at most once each
(counted, through the real stack), and its counters live on its tallies (core/tallies.py)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from app.settings import Settings
from core import lambda_env, tallies
from local.simulator.server import SimulatorServer
from tests.support.stack import Aws, MakeApi, make_user, record_dynamodb_calls, wait_for_status
from tests.validations.ledger import counted

RULES = [{"id": "R1", "text": "Every row has a value."}, {"id": "R2", "text": "No row is empty."}]
LONG = "".join(f"row {i}: a value worth checking on its own line\n" for i in range(60))  # several parts
SHORT = [{"name": f"f{i}.txt", "content": f"row one of {i}\nrow two\n"} for i in range(8)]


class _RecordWrites:
    """Writes (a transaction's items one by one) on one table's items, by the function making them."""

    def __init__(self, table: str) -> None:
        self.table, self.lock = table, threading.Lock()
        self.by_function: Counter[tuple[str, str]] = Counter()  # (function, validation id)

    def _one(self, request: dict[str, Any]) -> None:
        if request.get("TableName") != self.table or "Key" not in request:
            return
        key = request["Key"]["id"]
        validation_id = key["S"] if isinstance(key, dict) else str(key)
        function = lambda_env.current().get("AWS_LAMBDA_FUNCTION_NAME", "api").rsplit("-", 1)[-1]
        self.by_function[(function, validation_id)] += 1

    def record(self, operation: str, params: dict[str, Any]) -> None:
        with self.lock:
            if operation in ("UpdateItem", "PutItem", "DeleteItem"):
                self._one(params)
            elif operation == "TransactWriteItems":
                for entry in params.get("TransactItems", []):
                    for kind, request in entry.items():
                        if kind != "ConditionCheck":
                            self._one(request)

    def of(self, validation_id: str, *functions: str) -> int:
        return sum(n for (f, v), n in self.by_function.items() if v == validation_id and f in functions)

    def all_of(self, validation_id: str) -> int:
        return sum(n for (_, v), n in self.by_function.items() if v == validation_id)


@pytest.fixture
def record_writes(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Iterator[_RecordWrites]:
    """Every DynamoDB write on the validations table of the Lambdas (boto3, in this process)."""
    counted_writes = _RecordWrites(settings.table("validations"))
    record_dynamodb_calls(monkeypatch, counted_writes.record)
    yield counted_writes


@pytest.mark.slow(6)
def test_a_runs_model_calls_write_the_validation_record_at_most_once_each(
    make_api: MakeApi, aws: Aws, settings: Settings, simulator: SimulatorServer, record_writes: _RecordWrites
) -> None:
    api = make_api(part_max_tokens=120)
    _, auth = make_user(api, quota={"capacity_tokens": 10**7, "refill_tokens_per_minute": 10**7, "max_running": 2})
    documents = [*SHORT, {"name": "long.txt", "content": LONG}]
    created = api.post("/validations", json={"documents": documents, "rules": RULES, "reuse": False}, headers=auth)
    assert created.status_code == 202, created.text
    validation_id = created.json()["id"]

    shown = wait_for_status(api, validation_id, headers=auth)

    assert shown["status"] == "SUCCEEDED", shown
    calls = simulator.stats.part_calls + simulator.stats.combine_calls
    parts = shown["progress"]["total"]
    assert parts > len(documents) and simulator.stats.combine_calls >= 1  # the long file took several parts
    assert shown["usage"]["model_calls"] == calls and shown["progress"]["succeeded"] == parts
    # The calls' writes on the record: one per settled part (its progress event's number, with
    # the result of the file it completes) and one per file whose verdict the combine step
    # decides (its claim and its result's number); the effective parallelism when it first shows.
    in_calls = record_writes.of(validation_id, "part", "file")  # validate-part, combine-file
    assert in_calls <= parts + 2 + 1, record_writes.by_function  # here 17 parts: 17 + 2 writes
    assert in_calls <= calls + 3
    # Whatever the run's size, the rest is a bounded number of writes per run: intake, plan,
    # admission, the run's end and its announcement.
    assert record_writes.all_of(validation_id) - in_calls <= 12, record_writes.by_function
    # The counts the record once held live on its tallies, and add up to what was shown.
    record = counted(aws, settings, validation_id)
    stored = aws.client("dynamodb").get_item(
        TableName=settings.table("validations"), Key={"id": {"S": validation_id}}, ConsistentRead=True
    )["Item"]
    assert not {"succeeded", "model_calls", "attempts", "prompt_tokens"} & {
        k for k, v in stored.items() if v != {"N": "0"}
    }
    assert record["model_calls"] == calls and record["succeeded"] == parts
    assert sum(record["file_settled"].values()) == parts
    found = aws.client("dynamodb").query(**tallies.query(settings.table("parts"), validation_id))["Items"]
    assert 1 < len(found) <= tallies.SHARDS  # the writes spread over several small items


def _size(item: dict[str, dict[str, Any]]) -> int:
    """What DynamoDB bills a stored item at, by its size rules: names and strings in UTF-8 bytes,
    a number 1 byte per two significant digits plus 1, a list or map 3 bytes plus 1 per element."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: dict[str, Any]) -> int:
    ((kind, v),) = value.items()
    if kind == "S":
        return len(v.encode())
    if kind == "N":
        digits = v.lstrip("-").replace(".", "").strip("0") or "0"
        return (len(digits) + 1) // 2 + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(1 + _value_size(e) for e in v)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + _value_size(e) for k, e in v.items())
    if kind == "SS":
        return sum(len(e.encode()) for e in v)
    raise AssertionError(f"an attribute of type {kind} in the record")


def test_the_record_stays_small_whatever_the_submission(make_api: MakeApi, aws: Aws, settings: Settings) -> None:
    """Files and rules live on the validation's `~detail` item (core/detail.py): a submission
    of many files and long rules leaves its record the size of a small one's."""
    api = make_api()
    _, auth = make_user(api, quota={"capacity_tokens": 10**7, "refill_tokens_per_minute": 10**7, "max_running": 2})
    rules = [{"id": f"R{i}", "text": f"Rule {i}: " + "every row names its owner and its date. " * 20} for i in range(8)]
    small = {"documents": SHORT[:1], "rules": RULES[:1], "reuse": False}
    large = {"documents": [{**d, "name": f"{n}-{d['name']}"} for n in range(5) for d in SHORT], "rules": rules}
    sizes, shown = [], []
    for body in (small, {**large, "reuse": False}):
        created = api.post("/validations", json=body, headers=auth)
        assert created.status_code == 202, created.text
        validation_id = created.json()["id"]
        shown.append(wait_for_status(api, validation_id, headers=auth))
        stored = aws.client("dynamodb").get_item(
            TableName=settings.table("validations"), Key={"id": {"S": validation_id}}, ConsistentRead=True
        )["Item"]
        sizes.append(_size(stored))

    assert [s["status"] for s in shown] == ["SUCCEEDED", "SUCCEEDED"]
    assert len(shown[1]["files"]) == 40 and len(shown[1]["rules"]) == 8  # read back from the detail
    assert sum(len(r["text"]) for r in rules) > 6_000
    # Under 1 KB, so one WCU a write (measured: 847 and 860 bytes as DynamoDB counts them; counters at 0
    # are not stored): 40 files and 6 KB of rules add a few digits.
    print("record sizes", sizes)
    assert sizes[1] <= 1_024 - 100 and sizes[1] - sizes[0] < 128, sizes

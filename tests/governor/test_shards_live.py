"""A budget split over shards, through the real grant path (tests/governor/fleet.py): every grant
one conditional UpdateItem, no transaction, the writes spread over the shards, and every token
granted and not given back sent to the model."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from app.settings import Settings
from core import governor as g
from local.simulator.server import SimulatorServer
from tests.governor.fleet import Fleet, deployment, spent
from tests.support.stack import Aws, record_dynamodb_calls

WINDOW = 6.0  # seconds standing for a minute
TPM, RPM = 10**9, 10**7  # a budget whose burst holds thousands of calls: split over every shard


class _Writes:
    """The DynamoDB writes of this process on the governor's table: operations, and writes per item."""

    def __init__(self, table: str) -> None:
        self.table, self.lock = table, threading.Lock()
        self.operations: Counter[str] = Counter()
        self.items: Counter[str] = Counter()

    def record(self, operation: str, params: dict[str, Any]) -> None:
        with self.lock:
            if operation == "TransactWriteItems":
                self.operations[operation] += 1
            elif operation in ("UpdateItem", "PutItem", "DeleteItem") and params.get("TableName") == self.table:
                self.operations[operation] += 1
                self.items[params["Key"]["pk"]["S"]] += 1


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Iterator[_Writes]:
    counted = _Writes(settings.table("governor"))
    record_dynamodb_calls(monkeypatch, counted.record)
    yield counted


@pytest.mark.slow(8)
def test_grants_on_a_sharded_budget_are_single_updates_spread_over_the_shards(
    aws: Aws, settings: Settings, simulator: SimulatorServer, writes: _Writes
) -> None:
    simulator.reconfigure(tpm=TPM, rpm=RPM, window_seconds=WINDOW, latency_seconds=0.05)
    parameters = {"target-tpm": TPM, "target-rpm": RPM, "max-parallelism": 12, "throttle-threshold": 0.9}
    config = deployment(aws, settings, parameters, governor_window_seconds=WINDOW)
    whole = g.Budget(g.Limits(12, TPM, 0.9, target_rpm=RPM), g.BudgetState(), WINDOW)
    assert whole.shard_count(g.SHARDS) == g.SHARDS

    outcome = Fleet(aws, config, processes=8).run(files=64)

    assert outcome.answered == 64 and simulator.stats.part_calls == 64
    assert writes.operations["TransactWriteItems"] == 0
    shards = {pk: n for pk, n in writes.items.items() if pk == "budget" or pk.startswith("budget~")}
    assert len(shards) > 1  # leases hash to different shards
    # Each lease (one call here) writes its shard twice: its grant and its give-back of the
    # unused part of its block. No shard takes a write per call, let alone the five of one item.
    assert max(shards.values()) < 64
    # Borrowing and giving back never created or lost a token: what the shards granted and did
    # not get back is what the simulator admitted.
    assert spent(aws.client("dynamodb"), config.governor_table) == sum(t for _, t in simulator.stats.admitted)

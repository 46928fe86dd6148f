"""The plan step's rules: a file's plan is the inline path's, and the reservation correction
(core/quota.plan_correction) moves the owner's bucket by exactly the difference, once."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from core.bounds import size_cost_floor
from core.dynamo import from_item
from core.planning import plan_file, size_guess
from core.quota import Quota, plan_correction
from core.tokens import max_token_bytes

QUOTA = Quota.of({"capacity_tokens": 100_000, "refill_tokens_per_minute": 6_000, "max_running": 2})
RULES = [{"id": "r1", "text": "no secrets"}]


def _record(status: str, **extra: Any) -> dict[str, Any]:
    return {"id": "v1", "owner": "alice", "run": 1, "status": status, **extra}


def _update(item: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    update = item["Update"]
    return update["UpdateExpression"], from_item(update["ExpressionAttributeValues"])


def test_a_queued_run_reserved_nothing_yet_so_only_its_cost_changes() -> None:
    items = plan_correction("validations", "buckets", _record("QUEUED"), QUOTA, 4_000, {"total_parts": 3})

    assert len(items) == 1
    expression, values = _update(items[0])
    assert values[":set_run_cost"] == 4_000 and values[":set_total_parts"] == 3
    assert "REMOVE #unplanned" in expression
    assert "attribute_exists(#unplanned)" in items[0]["Update"]["ConditionExpression"]


def test_an_owner_without_a_quota_reserved_nothing_whether_queued_or_running() -> None:
    (item,) = plan_correction("validations", "buckets", _record("RUNNING"), None, 4_000, {})

    condition = item["Update"]["ConditionExpression"]
    assert "IN (:queued, :running)" in condition and "reserved" not in item["Update"]["UpdateExpression"]


@pytest.mark.parametrize(("reserved", "estimate"), [(10_000, 4_000), (4_000, 10_000)])
def test_an_admitted_run_moves_its_owners_bucket_by_the_difference(reserved: int, estimate: int) -> None:
    record = _record("RUNNING", reserved=reserved, reserved_run=1)

    validation, bucket = plan_correction("validations", "buckets", record, QUOTA, estimate, {})

    _, values = _update(validation)
    assert values[":reserved"] == estimate
    expression, moved = _update(bucket)
    assert expression == "SET #tat = #tat + :inc"
    # 6,000 tokens a minute: 100 a second; a refund moves tat back, an overrun forward.
    assert moved[":inc"] == pytest.approx(Decimal(estimate - reserved) / 100)
    assert "#settled_run" in validation["Update"]["ConditionExpression"]  # never after settlement


@pytest.mark.parametrize(
    "content", [b"a\n" * 3000, b"The quick brown fox.\n" * 500, ((" " * 400) + "x\n").encode() * 50]
)
def test_the_size_floor_holds_whatever_the_text_and_the_guess_is_only_a_guess(content: bytes) -> None:
    planned = plan_file("v", 0, "f.txt", "k", content, RULES, 1500, 512)

    assert size_cost_floor(len(content), 1500, 512, max_token_bytes()) <= planned.estimate
    tokens, calls = size_guess("f.txt", len(content), RULES, 1500, 512)
    assert tokens > 0 and calls >= 1

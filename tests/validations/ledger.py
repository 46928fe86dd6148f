"""What a test reads back to check a validation's accounting: records as plain values, the
owner's bucket, and each run's settlement (shared by the crash-window tests)."""

from __future__ import annotations

from typing import Any

from app.settings import Settings
from core import tallies
from core.dynamo import from_item
from tests.support.stack import Aws


def item(aws: Aws, table: str, key: dict[str, str]) -> dict[str, Any]:
    """An item as plain values (numbers as int or float)."""
    stored = aws.client("dynamodb").get_item(
        TableName=table, Key={k: {"S": v} for k, v in key.items()}, ConsistentRead=True
    )["Item"]
    return from_item(stored)


def counted(aws: Aws, settings: Settings, validation_id: str) -> dict[str, Any]:
    """A validation's record with its tallies' counts added (core/tallies.py), as the API shows it."""
    record = item(aws, settings.table("validations"), {"id": validation_id})
    found = aws.client("dynamodb").query(**tallies.query(settings.table("parts"), validation_id))["Items"]
    return tallies.merge(record, [from_item(i) for i in found])


def running(aws: Aws, settings: Settings, user_id: str) -> int:
    return int(item(aws, settings.table("buckets"), {"user_id": user_id})["running"])


def settled_once(
    aws: Aws, settings: Settings, validation_id: str, before: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The current run's settlement: what it reserved and did not use came back, what it used was
    charged (`refunded` and `charged_tokens` add up over runs: compared with `before` this run)."""
    record = counted(aws, settings, validation_id)
    assert record["settled_run"] == record["reserved_run"] == record["run"], record
    earlier = before or {}
    used = (
        int(record.get("prompt_tokens", 0))
        + int(record.get("completion_tokens", 0))
        - int(record.get("usage_at_start", 0))
    )
    assert int(record["refunded"]) - int(earlier.get("refunded", 0)) == int(record["reserved"]) - used
    assert int(record["charged_tokens"]) - int(earlier.get("charged_tokens", 0)) == used
    return record

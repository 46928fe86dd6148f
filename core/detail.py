"""A validation's files and rules, kept off its record: the record is read before every model
call and written once per settled part, each billed at its whole size, so what grows with the
submission (a file list of up to `max_files` entries, the rules' text) lives on one item of the
parts table instead (`~detail`, sorting after every part, node, verdict and tally), read once per
invocation by the Lambdas that need it and by the API with the record.

Records written before the detail moved hold `files` and `rules` themselves; `merge` keeps
theirs when there is no detail item.

The request builders are shared by the API (aioboto3) and the Lambdas (boto3).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.dynamo import Marshal, Update, typed

KEY = "~detail"
FIELDS = ("files", "rules")


def key(validation_id: str) -> dict[str, str]:
    return {"validation_id": validation_id, "part_id": KEY}


def split(record: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the record without its files and rules, the detail item holding them) for a new validation;
    the detail expires with the record."""
    slim = {k: v for k, v in record.items() if k not in FIELDS}
    item = {**key(str(record["id"])), **{k: record[k] for k in FIELDS if k in record}}
    if "expires_at" in record:
        item["expires_at"] = record["expires_at"]
    return slim, item


def get(parts_table: str, validation_id: str, fields: tuple[str, ...] = FIELDS) -> dict[str, Any]:
    """GetItem of the detail's `fields`, read consistently."""
    return {
        "TableName": parts_table,
        "Key": typed(key(validation_id)),
        "ConsistentRead": True,
        "ProjectionExpression": ", ".join(f"#{f}" for f in fields),
        "ExpressionAttributeNames": {f"#{f}": f for f in fields},
    }


def set_files(
    parts_table: str, validation_id: str, files: list[dict[str, Any]], marshal: Marshal = typed
) -> dict[str, Any]:
    """The Update (a transaction's too) replacing the detail's file list (the plan step's files)."""
    return Update().set(files=files).item(parts_table, key(validation_id), marshal)


def merge(
    record: Mapping[str, Any], detail: Mapping[str, Any] | None, fields: tuple[str, ...] = FIELDS
) -> dict[str, Any]:
    """The record with its detail's files and rules (of `fields`): a record without a detail keeps
    its own, and one with neither (its data purged) has none."""
    merged = dict(record)
    for name in fields:
        if detail and name in detail:
            merged[name] = detail[name]
        merged.setdefault(name, [])
    return merged


def wanted(attributes: tuple[str, ...]) -> tuple[str, ...]:
    """Of a read's `attributes` (none: all), those the detail holds."""
    return FIELDS if not attributes else tuple(a for a in attributes if a in FIELDS)

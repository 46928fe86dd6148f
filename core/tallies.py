"""A validation's counters, kept off its record: the usage of every model attempt, the parts
settled (per file too), the grounding checks, the combined files. Every model call bumps some
of them; on the validation's own item they made it the deployment's hottest item (one write
per counter change, billed at the whole record's size). They live on `SHARDS` small items of
the parts table instead (`tally~<n>`, sorting after every part, combine node and verdict), so
at most a few writes a second land on any one of them whatever the deployment's rate.

A writer picks a shard by a key of its own (a part's id: a retried write lands where the first
did), adds with ADD (the item appears with its first write), and joins a transaction where the
change must be atomic with another item (a part's settlement). A reader queries the shards and
`merge`s them into the record: the sums added to what the record itself holds (records written
before the counters moved keep theirs there).

The request builders are shared by the API (aioboto3) and the Lambdas (boto3).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from core import pricing
from core.dynamo import Marshal, Update, typed

SHARDS = 8
PREFIX = "tally~"
# Counters a tally may hold, summed by `merge` (per-file settled counts are `settled_<index>`).
COUNTERS = (
    "attempts",
    "model_calls",
    *pricing.USAGE_FIELDS,
    "succeeded",
    "failed",
    "reused_parts",
    "relocated",
    "ungrounded",
    "reasked",
    "combined",
    "combine_failed",
)
_SETTLED = "settled_"


def shard_key(shard: int) -> str:
    return f"{PREFIX}{shard % SHARDS}"


def shard_for(key: str) -> str:
    """The tally a writer keyed by `key` (a part id, a file's verdict) adds to: always the same one."""
    return shard_key(zlib.crc32(key.encode()))


def settled_field(file_index: int) -> str:
    return f"{_SETTLED}{file_index}"


def update(
    parts_table: str,
    validation_id: str,
    key: str,
    counters: Mapping[str, int],
    *,
    settled: Mapping[int, int] | None = None,
    served_model: str | None = None,
    expires_at: int | None = None,
    marshal: Marshal = typed,
) -> dict[str, Any]:
    """The UpdateItem (a transaction's Update too) adding `counters`, and per file index the
    parts `settled` (negative: reset for a retry), to the tally of `key`; the tally expires with
    the validation (`expires_at`, DynamoDB's TTL: set by its first write). `marshal` None for
    boto3's resources, which marshal values themselves."""
    change = Update().add(**{k: v for k, v in counters.items() if v})
    for index, n in (settled or {}).items():
        change.add(**{settled_field(index): n})
    if expires_at is not None:
        change.set_to("expires_at", "if_not_exists({expires_at}, :expires)", expires=int(expires_at))
    if served_model:
        change.set_to("served_model", "if_not_exists({served_model}, :served)", served=served_model)
    return change.item(parts_table, {"validation_id": validation_id, "part_id": shard_for(key)}, marshal)


def query(parts_table: str, validation_id: str) -> dict[str, Any]:
    """The Query of a validation's tallies (a few small items; core/steps.query_all pages it)."""
    return {
        "TableName": parts_table,
        "KeyConditionExpression": "validation_id = :v AND begins_with(part_id, :tally)",
        "ExpressionAttributeValues": typed({":v": validation_id, ":tally": PREFIX}),
        "ConsistentRead": True,
    }


def is_tally(part_id: str) -> bool:
    return part_id.startswith(PREFIX)


def merge(record: Mapping[str, Any], tallies: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The record with its tallies' counters added (and their per-file settled counts in
    `file_settled`, a map of file index to count, for every file the record lists)."""
    merged = {**dict.fromkeys(COUNTERS, 0), **record}  # a record stores no counter at 0
    settled: dict[str, int] = {str(k): int(v) for k, v in (record.get("file_settled") or {}).items()}
    files = record.get("files")
    if isinstance(files, list):
        for i in range(len(files)):
            settled.setdefault(str(i), 0)
    for tally in tallies:
        for name, value in tally.items():
            if name in COUNTERS:
                merged[name] = int(merged.get(name) or 0) + int(value)
            elif name.startswith(_SETTLED):
                index = name.removeprefix(_SETTLED)
                settled[index] = settled.get(index, 0) + int(value)
        if tally.get("served_model") and not merged.get("served_model"):
            merged["served_model"] = tally["served_model"]
    if settled:
        merged["file_settled"] = dict(sorted(settled.items(), key=lambda kv: int(kv[0])))
    return merged

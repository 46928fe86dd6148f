"""The per-validation event log behind server-sent events.

Every event gets the next number of the validation's own sequence (`event_seq` on the
validation record, incremented atomically), then is stored under (validation_id, seq) in
the events table. Ids come from storage, not process memory, so `Last-Event-ID` resumes
across reconnects, API restarts and API instances. Allocation and write are two calls:
a writer that dies between them leaves a gap, which readers wait out briefly, then skip.

The numbering is the one write a settled part makes on its validation's record: a part's
progress event, and the result of the file it completes, take their numbers together. Counts
come from the validation's tallies (core/tallies.py), not from the record.

The request builders are shared by the API (aioboto3) and the Lambdas (boto3).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any

from core import tallies
from core.dynamo import Update, from_item, typed
from core.steps import GET, PUT, UPDATE, Step, StepAnswer, query_all, response

STATUS, PROGRESS, RESULT, END = "status", "progress", "result", "end"


def allocate(validations_table: str, validation_id: str, count: int = 1, whole: bool = True) -> dict[str, Any]:
    """UpdateItem that takes the next `count` sequence numbers; with `whole`, ALL_NEW also returns
    the record as of them (else only the new `event_seq`)."""
    update = Update().add(event_seq=count).when("attribute_exists({id})")
    returned = "ALL_NEW" if whole else "UPDATED_NEW"
    return {**update.item(validations_table, {"id": validation_id}), "ReturnValues": returned}


# What a `progress` event is built from: the record's own fields, and its tallies' counters.
PROGRESS_FIELDS = ("id", "total_parts", "parallelism", "expires_at", "succeeded", "failed", "file_settled")


def event_put(
    events_table: str, validation_id: str, seq: int, kind: str, data: dict[str, Any], expires_at: int | None = None
) -> dict[str, Any]:
    """The event item; it expires with its validation (`expires_at`, DynamoDB's TTL)."""
    item: dict[str, Any] = {
        "validation_id": validation_id,
        "seq": seq,
        "type": kind,
        "data": json.dumps(data),
        "at": time.time().__round__(3).__str__(),
    }
    if expires_at is not None:
        item["expires_at"] = expires_at
    return {
        "TableName": events_table,
        "Item": typed(item),
        "ConditionExpression": "attribute_not_exists(seq)",
    }


Builder = Callable[[dict[str, Any]], dict[str, Any]]


def append_steps(
    validations_table: str,
    events_table: str,
    validation_id: str,
    kind: str,
    data: Builder,
) -> Generator[Step, StepAnswer, dict[str, Any]]:
    """A sans-IO append (core/steps.py): take the next number, store the event that `data`
    builds from the validation record as of this number; returns that record."""
    return (yield from append_all_steps(validations_table, events_table, validation_id, [(kind, data)]))


def append_all_steps(
    validations_table: str,
    events_table: str,
    validation_id: str,
    built: Sequence[tuple[str, Builder]],
    parts_table: str | None = None,
) -> Generator[Step, StepAnswer, dict[str, Any]]:
    """Append several events with one write on the validation's record (their numbers are taken
    together), each built from the record as of them; returns that record.

    With `parts_table`, the events are built from the record's `PROGRESS_FIELDS` and its tallies'
    counters (core/tallies.py), read after the numbers are taken: a progress event carries counts
    at least as recent as its number. Without, from the whole record the numbering returned
    (a status event's status is the one its number was taken with)."""
    allocated = response((yield (UPDATE, allocate(validations_table, validation_id, len(built), parts_table is None))))
    record = from_item(allocated["Attributes"])
    if parts_table is not None:
        got = response((yield (GET, record_get(validations_table, validation_id, PROGRESS_FIELDS))))
        counts = yield from query_all(tallies.query(parts_table, validation_id))
        record = {**tallies.merge(from_item(got.get("Item", {})), counts), "event_seq": record["event_seq"]}
    last = int(record["event_seq"])
    expires_at = int(record["expires_at"]) if "expires_at" in record else None
    for seq, (kind, data) in enumerate(built, start=last - len(built) + 1):
        yield (PUT, event_put(events_table, validation_id, seq, kind, data(record), expires_at))
    return record


def record_get(validations_table: str, validation_id: str, fields: Sequence[str]) -> dict[str, Any]:
    """GetItem of the record's `fields`, read consistently."""
    return {
        "TableName": validations_table,
        "Key": typed({"id": validation_id}),
        "ConsistentRead": True,
        "ProjectionExpression": ", ".join(f"#f{i}" for i in range(len(fields))),
        "ExpressionAttributeNames": {f"#f{i}": name for i, name in enumerate(fields)},
    }


def status_of(record: dict[str, Any]) -> dict[str, Any]:
    return {"status": record["status"], "run": record["run"], "error": record.get("error")}


def claim_file_report(validations_table: str, validation_id: str, run: int, file_index: int) -> dict[str, Any]:
    """UpdateItem that succeeds for one writer only: the result event of file N in run R is written once."""
    mark = f"{run}:{file_index}"
    return (
        Update()
        .add(reported={mark})
        .when("attribute_not_exists({reported}) OR NOT contains({reported}, :one)", one=mark)
        .item(validations_table, {"id": validation_id})
    )


def progress_of(record: dict[str, Any]) -> dict[str, Any]:
    total, succeeded, failed = (
        int(record.get("total_parts", 0)),
        int(record.get("succeeded", 0)),
        int(record.get("failed", 0)),
    )
    progress: dict[str, Any] = {
        "total": total,
        "succeeded": succeeded,
        "failed": failed,
        "pending": max(0, total - succeeded - failed),
    }
    if record.get("parallelism") is not None:
        progress["parallelism"] = int(record["parallelism"])  # the validation's effective parallelism
    settled = record.get("file_settled")
    if isinstance(settled, dict) and settled:
        # Parts settled (result or failure) per file index: a client's per-file progress.
        progress["file_parts_settled"] = {str(k): int(v) for k, v in settled.items()}
    return progress

"""The per-validation event log behind server-sent events.

Every event gets the next number of the validation's own sequence (`event_seq` on the
validation record, incremented atomically), then is stored under (validation_id, seq) in
the events table. Ids come from storage, not process memory, so `Last-Event-ID` resumes
across reconnects, API restarts and API instances. Allocation and write are two calls:
a writer that dies between them leaves a gap, which readers wait out briefly, then skip.

The request builders are shared by the API (aioboto3) and the Lambdas (boto3).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator
from typing import Any

from core.dynamo import Update, from_item, typed
from core.steps import PUT, UPDATE, Step, StepAnswer, response

STATUS, PROGRESS, RESULT, END = "status", "progress", "result", "end"


def allocate(validations_table: str, validation_id: str) -> dict[str, Any]:
    """UpdateItem that takes the next sequence number; ALL_NEW also returns the counters."""
    update = Update().add(event_seq=1).when("attribute_exists({id})")
    return {**update.item(validations_table, {"id": validation_id}), "ReturnValues": "ALL_NEW"}


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


def append_steps(
    validations_table: str,
    events_table: str,
    validation_id: str,
    kind: str,
    data: Callable[[dict[str, Any]], dict[str, Any]],
) -> Generator[Step, StepAnswer, dict[str, Any]]:
    """A sans-IO append (core/steps.py): take the next number, store the event that `data`
    builds from the validation record as of this number; returns that record."""
    record = from_item(response((yield (UPDATE, allocate(validations_table, validation_id))))["Attributes"])
    expires_at = int(record["expires_at"]) if "expires_at" in record else None
    yield (PUT, event_put(events_table, validation_id, int(record["event_seq"]), kind, data(record), expires_at))
    return record


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

"""Announcing a run's end: its terminal status event and the owner's webhook notification.

Whoever writes a terminal status (Finalize/MarkFailed, the API's cancel settlement and
`_abandon_run`, the reconciler) writes the marker `notify_pending` in that same write. It
then appends the status event, starts the notification (one execution per event, named
after its `webhook-id`: never twice) and removes the marker. A writer that dies in between
leaves the marker, and the validation sits in the sparse `notify_pending` index (only
marked items are in it); each reconciler pass queries the index and announces what is
missing: the status event only if the log lacks it, the notification (a repeated start is
refused by Step Functions), then the marker off. A retry of a validation whose end is still
marked starts that notification before it claims the new run.

The marker's value is a shard of the index (`SHARDS` values, from the validation id): a
single key would put every ending validation's index write on one partition. Request
builders only (sans-IO): the API and the Lambdas send them with their own clients.
"""

from __future__ import annotations

import hashlib
from typing import Any

from core.dynamo import Update, typed

MARKER = "notify_pending"  # the attribute, and the index over it (infra/terraform/resources.json)
SHARDS = 8


def shard_of(validation_id: str) -> str:
    """The marker's value: one of SHARDS index partitions, fixed per validation."""
    return str(int(hashlib.sha256(validation_id.encode()).hexdigest()[:8], 16) % SHARDS)


def shards() -> list[str]:
    return [str(i) for i in range(SHARDS)]


def clear_update(validations_table: str, validation_id: str, run: int) -> dict[str, Any]:
    """UpdateItem that removes the marker of run `run`'s end (fails its condition when the
    validation has moved on to another run, or the marker is gone already)."""
    return (
        Update()
        .remove(MARKER)
        .when(f"attribute_exists({{{MARKER}}}) AND {{run}} = :run", run=run)
        .item(validations_table, {"id": validation_id})
    )


def pending_query(validations_table: str, shard: str) -> dict[str, Any]:
    """Query of one shard of the sparse index: validations whose end may not be announced."""
    return {
        "TableName": validations_table,
        "IndexName": MARKER,
        "KeyConditionExpression": "#marker = :shard",
        "ExpressionAttributeNames": {"#marker": MARKER},
        "ExpressionAttributeValues": typed({":shard": shard}),
    }

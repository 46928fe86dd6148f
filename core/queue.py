"""The per-user queue, waiting without polling (sans-IO rules, core/steps.py).

A queued validation is an execution that the `Admit` Lambda could not admit. When only the
token bucket's refill is missing it waits in one timed Wait of exactly the seconds the
bucket needs. When a running slot (`max_running`) is missing, or an older validation of
the same user is queued ahead of it (FIFO: only the head may be admitted), it *parks*: the
`WaitForSlot` task (`lambda:invoke.waitForTaskToken`) stores its task token on the
validation record (`park_token`) and the execution waits, adding no history and running no
Lambda, until someone sends that token back:

- whoever frees a slot: the `Finalize` Lambda after settling a run, the API after settling
  a cancel, the reconciler;
- whoever moves the queue: the `Admit` Lambda after admitting the head (the next one may
  fit too), the API after a queued validation was cancelled.

Each calls `release_steps(owner)`: find the owner's queue head and, if it is parked, send
its token (`SendTaskSuccess`); the execution goes back to `Admit` and tries again.

The race: a slot frees between "cannot admit" and "token stored", the releaser finds no
token, and nobody would ever wake the parked execution. The parker closes it by trying
the admission again *after* storing its token (the re-check in `lambdas/admit`): a release
that came before the token was stored is seen by the re-check (the bucket's `running`
went down, or the head moved), and one that comes after finds the token. When the
re-check admits (or finds the validation gone, or only tokens missing) the parker sends
its own token.

Counting (`max_queued`): the user's bucket item keeps `queued`, the number of the user's
validations holding a `queue_key`. It goes up in the same transaction that stores a new
queued validation (`enqueue_steps`, refused past `max_queued`) or re-queues one for a retry
(`join_queue_steps`), and down in the same transaction that removes the `queue_key`:
admission (core/quota.py), `leave_queue_steps` (cancel, a submission undone, and whatever
else takes a validation out of the queue).
"""

from __future__ import annotations

import json
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from core.dynamo import Update, from_item, to_item, typed
from core.steps import GET, QUERY, SEND_TASK_SUCCESS, Cancelled, Step, StepAnswer, response, transact

# How long a validation may stay parked (the WaitForSlot task's TimeoutSeconds in the ASL).
PARK_TIMEOUT_SECONDS = 7 * 24 * 3600
# What a woken execution receives (the state machine drops it: ResultPath null).
WAKE_OUTPUT = json.dumps({"woken": True})
# Index entries read per page when looking for the head (stale ones are skipped).
_CANDIDATES = 10
_QUEUED = "QUEUED"


@dataclass(frozen=True)
class Head:
    """The oldest validation of a user that is still QUEUED, and its parked task's token if any."""

    id: str
    run: int
    park_token: str | None


@dataclass(frozen=True)
class QueueFull:
    """The user already has `max_queued` validations queued (the bucket as it was: `queued`, `tat`)."""

    queued: int
    tat: float


def head_steps(
    validations_table: str, owner: str, *, me: str | None = None
) -> Generator[Step, StepAnswer, Head | None]:
    """The owner's queue head, or None when nothing is queued.

    The `queue_by_owner` index gives queued validations oldest first, but it is eventually
    consistent on AWS: an entry may outlive its validation's admission or cancel. Each
    candidate is confirmed with a consistent read (still QUEUED with the same queue_key);
    `me`, the caller's own validation, needs no read (its own transaction decides).
    """
    request: dict[str, Any] = {
        "TableName": validations_table,
        "IndexName": "queue_by_owner",
        "KeyConditionExpression": "#owner = :owner",
        "ExpressionAttributeNames": {"#owner": "owner"},
        "ExpressionAttributeValues": typed({":owner": owner}),
        "Limit": _CANDIDATES,
    }
    while True:
        page = response((yield (QUERY, request)))
        for entry in page["Items"]:
            candidate = from_item(entry)
            if candidate["id"] == me:
                return Head(str(me), int(candidate.get("run", 0)), None)
            read = response(
                (
                    yield (
                        GET,
                        {
                            "TableName": validations_table,
                            "Key": typed({"id": candidate["id"]}),
                            "ConsistentRead": True,
                            "ProjectionExpression": "id, #status, run, queue_key, park_token",
                            "ExpressionAttributeNames": {"#status": "status"},
                        },
                    )
                )
            )
            item = from_item(read.get("Item") or {})
            if item.get("status") == _QUEUED and item.get("queue_key") == candidate.get("queue_key"):
                token = item.get("park_token")
                return Head(str(item["id"]), int(item.get("run", 0)), str(token) if token else None)
        if "LastEvaluatedKey" not in page:
            return None
        request = {**request, "ExclusiveStartKey": page["LastEvaluatedKey"]}


def wake_steps(token: str) -> Generator[Step, StepAnswer, bool]:
    """Send a parked task its token: True when it was waiting on it, False when the token was spent."""
    answer = yield (SEND_TASK_SUCCESS, {"taskToken": token, "output": WAKE_OUTPUT})
    return not isinstance(answer, Cancelled)


def release_steps(validations_table: str, owner: str) -> Generator[Step, StepAnswer, str | None]:
    """Hand the queue on: wake the owner's queue head if it is parked. Returns the id woken, or None
    (nothing queued, the head is not parked, or its token was spent meanwhile).

    Safe to call any number of times, by anyone, at any moment: a woken head that still
    cannot be admitted parks again. The reconciler calls it for every owner with queued
    validations ("re-release queue heads")."""
    head = yield from head_steps(validations_table, owner)
    if head is None or head.park_token is None:
        return None
    woken = yield from wake_steps(head.park_token)
    return head.id if woken else None


def park_steps(
    validations_table: str, validation_id: str, run: int, token: str, parked_at: str
) -> Generator[Step, StepAnswer, bool]:
    """Store the parked task's token on the validation, only while it is this run and QUEUED.

    False when it is not (cancelled, admitted, or rerun meanwhile): the caller wakes itself."""
    answer = yield transact(
        [
            {
                "Update": Update()
                .set(park_token=token, parked_at=parked_at)
                .when("{status} = :queued AND {run} = :run", queued=_QUEUED, run=run)
                .item(validations_table, {"id": validation_id})
            }
        ]
    )
    return not isinstance(answer, Cancelled)


# --- counting queued validations (max_queued) -------------------------------------------


def enter_queue_update(buckets_table: str, owner: str, max_queued: int) -> dict[str, Any]:
    """One more queued validation on the owner's bucket, unless `max_queued` are queued already."""
    # A bucket written before `queued` existed counts from zero; one missing entirely is made whole.
    update = Update().set_to("queued", "if_not_exists({queued}, :zero) + :one", zero=0, one=1)
    update.set_to("tat", "if_not_exists({tat}, :zero)").set_to("running", "if_not_exists({running}, :zero)")
    update.when("attribute_not_exists({queued}) OR {queued} < :max", max=max_queued)
    return {**update.item(buckets_table, {"user_id": owner}), "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}


def leave_queue_update(buckets_table: str, owner: str) -> dict[str, Any]:
    """One queued validation fewer (never below zero for a bucket that predates the count)."""
    update = Update().set_to("queued", "if_not_exists({queued}, :one) - :one", one=1)
    return update.item(buckets_table, {"user_id": owner})


def _full(answer: Cancelled, bucket_index: int) -> QueueFull | None:
    reason = answer.reasons[bucket_index]
    if reason.get("Code") != "ConditionalCheckFailed":
        return None
    old = from_item(reason.get("Item") or {})
    return QueueFull(int(old.get("queued", 0)), float(old.get("tat", 0)))


def enqueue_steps(
    validations_table: str, buckets_table: str, record: dict[str, Any], max_queued: int | None
) -> Generator[Step, StepAnswer, QueueFull | None]:
    """Store a new QUEUED validation (`record`, with `id`, `owner` and `queue_key`) and count it
    on its owner's bucket, in one transaction; QueueFull (nothing stored) past `max_queued`.
    `max_queued` None: an owner without a quota (the bootstrap admin), nothing counted."""
    put = {"TableName": validations_table, "Item": to_item(record), "ConditionExpression": "attribute_not_exists(id)"}
    items: list[dict[str, Any]] = [{"Put": put}]
    if max_queued is not None:
        items.append({"Update": enter_queue_update(buckets_table, record["owner"], max_queued)})
    answer = yield transact(items)
    if not isinstance(answer, Cancelled):
        return None
    full = _full(answer, 1) if max_queued is not None else None
    if full is None:
        raise RuntimeError(f"validation {record['id']} could not be stored: {answer.reasons}")
    return full


def join_queue_steps(
    validations_table: str,
    buckets_table: str,
    validation_id: str,
    owner: str,
    run: int,
    queue_key: str,
    max_queued: int | None,
) -> Generator[Step, StepAnswer, QueueFull | bool]:
    """Put a QUEUED run (a retry) at the end of its owner's queue and count it, in one
    transaction. True when joined; QueueFull past `max_queued`; False when the validation is
    not this QUEUED run any more, or holds a queue_key already."""
    join = (
        Update()
        .set(queue_key=queue_key)
        .when("{status} = :queued AND {run} = :run AND attribute_not_exists({queue_key})", queued=_QUEUED, run=run)
        .item(validations_table, {"id": validation_id})
    )
    items: list[dict[str, Any]] = [{"Update": join}]
    if max_queued is not None:
        items.append({"Update": enter_queue_update(buckets_table, owner, max_queued)})
    answer = yield transact(items)
    if not isinstance(answer, Cancelled):
        return True
    if answer.reasons[0].get("Code") == "ConditionalCheckFailed":
        return False
    full = _full(answer, 1) if max_queued is not None else None
    if full is None:
        raise RuntimeError(f"joining the queue failed for {validation_id}: {answer.reasons}")
    return full


def leave_queue_steps(
    validations_table: str, buckets_table: str, validation_id: str, owner: str, counted: bool
) -> Generator[Step, StepAnswer, bool]:
    """Take a validation out of its owner's queue (REMOVE queue_key, and the parked token) and
    count it off the bucket (`counted`: the owner has a quota), in one transaction. True when
    it held a queue_key; False (nothing written) when it did not: safe to repeat."""
    remove = (
        Update()
        .remove("queue_key", "park_token")
        .when("attribute_exists({queue_key})")
        .item(validations_table, {"id": validation_id})
    )
    items: list[dict[str, Any]] = [{"Update": remove}]
    if counted:
        items.append({"Update": leave_queue_update(buckets_table, owner)})
    answer = yield transact(items)
    return not isinstance(answer, Cancelled)

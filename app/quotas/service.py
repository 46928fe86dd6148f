"""Token-bucket quotas for the API: admit a validation now, or say why not; settle a run;
count the user's queued validations (max_queued) and hand the queue on (core/queue.py)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from app.aws.clients import AWSClients
from app.aws.errors import error_code
from app.aws.steps import drive
from app.errors import TooManyRequests
from app.settings import Settings
from app.validations.records import Validation
from core.clock import now_iso
from core.dynamo import from_item, typed
from core.queue import QueueFull, enqueue_steps, join_queue_steps, leave_queue_steps, release_steps
from core.quota import Admission, Outcome, Quota, admission_steps, settle_steps


@dataclass(frozen=True)
class Bucket:
    """A user's token bucket as stored: `tat` (core/quota.py) and how many validations run."""

    tat: float
    running: int
    queued: int = 0  # the user's validations holding a queue_key (core/queue.py)

    @classmethod
    def of(cls, item: dict[str, Any]) -> Bucket:
        return cls(float(item.get("tat", 0)), int(item.get("running", 0)), int(item.get("queued", 0)))


class QuotaService:
    def __init__(self, clients: AWSClients, settings: Settings) -> None:
        self._db = clients.dynamodb
        self._sfn = clients.sfn
        self._validations = settings.table("validations")
        self._buckets = settings.table("buckets")
        self._spend = settings.table("spend")

    async def create_bucket(self, user_id: str) -> None:
        """A full bucket, no validation running. Idempotent (kept if it exists)."""
        try:
            await self._db.put_item(
                TableName=self._buckets,
                Item=typed({"user_id": user_id, "tat": 0, "running": 0, "queued": 0}),
                ConditionExpression="attribute_not_exists(user_id)",
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise

    async def bucket(self, user_id: str) -> Bucket:
        answer = await self._db.get_item(TableName=self._buckets, Key=typed({"user_id": user_id}), ConsistentRead=True)
        return Bucket.of(from_item(answer["Item"])) if "Item" in answer else Bucket(0.0, 0, 0)

    async def admit(self, validation: Validation, quota: Quota | None, fifo: bool = True) -> Outcome:
        if validation.queue_key is None:
            raise ValueError(f"validation {validation.id} is not queued")
        admission = Admission(
            validations_table=self._validations,
            buckets_table=self._buckets,
            validation_id=validation.id,
            owner=validation.owner,
            queue_key=validation.queue_key,
            run=validation.run,
            cost=validation.run_cost,
            usage_at_start=validation.used_tokens,
            quota=quota,
            fifo=fifo,
        )
        return await drive(self._db, admission_steps(admission, time.time(), now_iso()))

    async def queue_ahead(self, owner: str, queue_key: str) -> list[int]:
        """The costs of `owner`'s queued validations submitted before `queue_key`, oldest first."""
        answer = await self._db.query(
            TableName=self._validations,
            IndexName="queue_by_owner",
            KeyConditionExpression="#owner = :owner AND queue_key < :key",
            ExpressionAttributeNames={"#owner": "owner"},
            ExpressionAttributeValues=typed({":owner": owner, ":key": queue_key}),
        )
        return [int(from_item(i).get("run_cost", 0)) for i in answer["Items"]]

    async def settle(self, validation: Validation, quota: Quota | None) -> bool:
        """Refund the current run's unused reservation, once (False when nothing to do)."""
        steps = settle_steps(self._validations, self._buckets, validation.usage_record(), quota, self._spend)
        return await drive(self._db, steps)

    # --- the queue (core/queue.py) --------------------------------------------------------
    async def enqueue(self, record: dict[str, Any], quota: Quota | None) -> None:
        """Store a new QUEUED validation and count it on its owner's bucket, in one transaction;
        429 naming `max_queued` (nothing stored) when the owner has that many queued already."""
        full = await drive(
            self._db,
            enqueue_steps(self._validations, self._buckets, record, quota.max_queued if quota else None),
        )
        if full is not None and quota is not None:
            raise self._queue_full(quota, full, int(record["run_cost"]))

    async def join_queue(self, validation: Validation, queue_key: str, quota: Quota | None) -> bool:
        """Put a rerun (QUEUED, its new run) at the end of its owner's queue; 429 naming
        `max_queued` when it is full. False when the validation is not that QUEUED run any more."""
        joined = await drive(
            self._db,
            join_queue_steps(
                self._validations,
                self._buckets,
                validation.id,
                validation.owner,
                validation.run,
                queue_key,
                quota.max_queued if quota else None,
            ),
        )
        if isinstance(joined, QueueFull):
            assert quota is not None  # only a counted queue is ever full
            raise self._queue_full(quota, joined, validation.run_cost)
        return joined

    async def leave_queue(self, validation_id: str, owner: str, quota: Quota | None) -> bool:
        """Take a validation out of its owner's queue and count it off, once (False: it was not queued)."""
        return await drive(
            self._db, leave_queue_steps(self._validations, self._buckets, validation_id, owner, quota is not None)
        )

    async def release_head(self, owner: str) -> str | None:
        """Wake the owner's queue head if it is parked (the id woken, or None). Safe to repeat."""
        return await drive(self._db, release_steps(self._validations, owner), sfn=self._sfn)

    @staticmethod
    def _queue_full(quota: Quota, full: QueueFull, cost: int) -> TooManyRequests:
        # A place frees when the head starts: at the soonest when the bucket holds this much again.
        wait = max(5, math.ceil(quota.wait_for(cost, full.tat, time.time())))
        return TooManyRequests(
            f"Queue limit reached: you have {full.queued} validations queued, at most {quota.max_queued} may wait. "
            "Retry once some have started, or cancel queued ones.",
            headers={"Retry-After": str(wait)},
            limit="max_queued",
            limit_value=quota.max_queued,
            queued=full.queued,
            retry_after=wait,
        )

"""Token-bucket quotas for the API: admit a validation now, or say why not; settle a run."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from app.aws.clients import AWSClients
from app.aws.errors import error_code
from app.aws.steps import drive
from app.settings import Settings
from app.validations.records import Validation
from core.clock import now_iso
from core.dynamo import from_item, typed
from core.quota import Admission, Outcome, Quota, admission_steps, settle_steps


@dataclass(frozen=True)
class Bucket:
    """A user's token bucket as stored: `tat` (core/quota.py) and how many validations run."""

    tat: float
    running: int

    @classmethod
    def of(cls, item: dict[str, Any]) -> Bucket:
        return cls(float(item.get("tat", 0)), int(item.get("running", 0)))


class QuotaService:
    def __init__(self, clients: AWSClients, settings: Settings) -> None:
        self._db = clients.dynamodb
        self._validations = settings.table("validations")
        self._buckets = settings.table("buckets")

    async def create_bucket(self, user_id: str) -> None:
        """A full bucket, no validation running. Idempotent (kept if it exists)."""
        try:
            await self._db.put_item(
                TableName=self._buckets,
                Item=typed({"user_id": user_id, "tat": 0, "running": 0}),
                ConditionExpression="attribute_not_exists(user_id)",
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise

    async def bucket(self, user_id: str) -> Bucket:
        answer = await self._db.get_item(TableName=self._buckets, Key=typed({"user_id": user_id}), ConsistentRead=True)
        return Bucket.of(from_item(answer["Item"])) if "Item" in answer else Bucket(0.0, 0)

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
        return await drive(self._db, settle_steps(self._validations, self._buckets, validation.usage_record(), quota))

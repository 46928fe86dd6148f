"""The `spend` table as the API uses it (core/spend.py holds the rules): budget reservations at
submission, the periods' totals, the per-model ratio histograms estimates draw on."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from app.aws.clients import AWSClients
from app.settings import Settings
from core import spend
from core.aws_codes import CONDITION_CODES
from core.dynamo import from_item, to_item, typed
from core.spend import Budget


class SpendStore:
    def __init__(self, clients: AWSClients, settings: Settings) -> None:
        self._db = clients.dynamodb
        self._table = settings.table("spend")

    async def period(self, user_id: str, key: str) -> dict[str, Any] | None:
        answer = await self._db.get_item(
            TableName=self._table, Key=typed({"user_id": user_id, "period": key}), ConsistentRead=True
        )
        return from_item(answer["Item"]) if "Item" in answer else None

    async def periods(
        self, user_id: str, prefix: str, limit: int, start: dict[str, Any] | None
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """A user's periods of one kind (`day#` or `month#`), newest first."""
        return await self._page(
            {
                "KeyConditionExpression": "user_id = :user AND begins_with(#period, :prefix)",
                "ExpressionAttributeNames": {"#period": "period"},
                "ExpressionAttributeValues": typed({":user": user_id, ":prefix": prefix}),
                "ScanIndexForward": False,
            },
            limit,
            start,
        )

    async def of_period(
        self, key: str, limit: int, start: dict[str, Any] | None
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Every user's spend in one period (the `by_period` index), by user id."""
        return await self._page(
            {
                "IndexName": "by_period",
                "KeyConditionExpression": "listing = :key",
                "ExpressionAttributeValues": typed({":key": key}),
            },
            limit,
            start,
        )

    async def _page(
        self, query: dict[str, Any], limit: int, start: dict[str, Any] | None
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """One page of a Query, and the key to continue from (None on the last page)."""
        kwargs = {"TableName": self._table, **query, "Limit": limit}
        if start:
            kwargs["ExclusiveStartKey"] = to_item(start)
        answer = await self._db.query(**kwargs)
        last = answer.get("LastEvaluatedKey")
        return [from_item(i) for i in answer["Items"]], from_item(last) if last else None

    async def reserve(self, user_id: str, key: str, amount: Decimal, budget: Budget, expires_at: int) -> bool:
        """Reserve `amount` in the period; False when the budget has less room left."""
        try:
            await self._db.update_item(**spend.reserve_update(self._table, user_id, key, amount, budget, expires_at))
        except ClientError as exc:
            if exc.response["Error"]["Code"] in CONDITION_CODES:
                return False
            raise
        return True

    async def release(self, user_id: str, key: str, amount: Decimal) -> None:
        await self._db.update_item(**spend.release_update(self._table, user_id, key, amount))

    async def mark_alerted(self, user_id: str, key: str, budget: Budget) -> bool:
        """True for the one call that finds the period past the budget's threshold first."""
        try:
            await self._db.update_item(**spend.threshold_update(self._table, user_id, key, budget))
        except ClientError as exc:
            if exc.response["Error"]["Code"] in CONDITION_CODES:
                return False
            raise
        return True

    async def ratios(self, model: str) -> tuple[float, float] | None:
        """The model's completion ÷ prompt ratio at p50 and p90 over ended runs (None: no history)."""
        item = await self.period(spend.RATIOS_USER, f"model#{model}")
        found = spend.ratio_percentiles(item, 0.5, 0.9)
        return (found[0], found[1]) if found else None

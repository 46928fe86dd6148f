"""Webhooks in DynamoDB: the URL (`webhooks`), the secret (`webhook_secrets`, read only by the
notify Lambda), and the delivery attempts (`webhook_deliveries`, written by it)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from app.aws.clients import AWSClients
from app.aws.errors import condition_failed
from app.settings import Settings
from app.webhooks.records import Delivery, Webhook
from core.dynamo import from_item, to_item


class WebhookStore:
    def __init__(self, clients: AWSClients, settings: Settings) -> None:
        self._db = clients.dynamodb
        self._hooks = settings.table("webhooks")
        self._secrets = settings.table("webhook_secrets")
        self._deliveries = settings.table("webhook_deliveries")

    async def get(self, owner: str) -> Webhook | None:
        answer = await self._db.get_item(TableName=self._hooks, Key=to_item({"owner": owner}), ConsistentRead=True)
        return Webhook.of(from_item(answer["Item"])) if "Item" in answer else None

    async def put(self, webhook: Webhook, secret: str) -> None:
        """URL and secret together: a delivery never signs with another registration's secret."""
        await self._db.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": self._hooks, "Item": to_item(webhook.item())}},
                {
                    "Put": {
                        "TableName": self._secrets,
                        "Item": to_item({"owner": webhook.owner, "secret": secret, "created_at": webhook.updated_at}),
                    }
                },
            ]
        )

    async def delete(self, owner: str) -> bool:
        """False when there was none."""
        try:
            await self._db.transact_write_items(
                TransactItems=[
                    {
                        "Delete": {
                            "TableName": self._hooks,
                            "Key": to_item({"owner": owner}),
                            "ConditionExpression": "attribute_exists(#o)",
                            "ExpressionAttributeNames": {"#o": "owner"},
                        }
                    },
                    {"Delete": {"TableName": self._secrets, "Key": to_item({"owner": owner})}},
                ]
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    async def deliveries(
        self, owner: str, limit: int, start: dict[str, Any] | None
    ) -> tuple[list[Delivery], dict[str, Any] | None]:
        """The owner's delivery attempts, newest first (the sort key starts with the attempt's time)."""
        kwargs: dict[str, Any] = {
            "TableName": self._deliveries,
            "KeyConditionExpression": "#o = :owner",
            "ExpressionAttributeNames": {"#o": "owner"},
            "ExpressionAttributeValues": to_item({":owner": owner}),
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if start:
            kwargs["ExclusiveStartKey"] = to_item(start)
        page = await self._db.query(**kwargs)
        last = from_item(page["LastEvaluatedKey"]) if "LastEvaluatedKey" in page else None
        return [Delivery.of(from_item(i)) for i in page["Items"]], last

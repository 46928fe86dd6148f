"""The event log in DynamoDB, for the API: append (status changes) and read (feeds)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.aws.clients import AWSClients
from app.aws.steps import drive
from app.settings import Settings
from core import events
from core.dynamo import from_item, to_item


@dataclass(frozen=True)
class Event:
    seq: int
    type: str
    data: dict[str, Any]


class EventStore:
    def __init__(self, clients: AWSClients, settings: Settings) -> None:
        self._db = clients.dynamodb
        self._validations = settings.table("validations")
        self._events = settings.table("events")
        self.reads = 0  # Query calls made, for the viewers-do-not-multiply-reads guarantee

    async def append(self, validation_id: str, kind: str, data: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
        """Append an event (core/events.append_steps); its number."""
        steps = events.append_steps(self._validations, self._events, validation_id, kind, data)
        return int((await drive(self._db, steps))["event_seq"])

    async def append_status(self, validation_id: str) -> int:
        return await self.append(validation_id, events.STATUS, events.status_of)

    async def after(self, validation_id: str, seq: int) -> list[Event]:
        """Every stored event with a number above `seq`, in order."""
        kwargs: dict[str, Any] = {
            "TableName": self._events,
            "KeyConditionExpression": "validation_id = :v AND seq > :seq",
            "ExpressionAttributeValues": to_item({":v": validation_id, ":seq": seq}),
            "ConsistentRead": True,
        }
        found: list[Event] = []
        while True:
            self.reads += 1
            page = await self._db.query(**kwargs)
            for item in page["Items"]:
                row = from_item(item)
                found.append(Event(int(row["seq"]), row["type"], json.loads(row["data"])))
            if "LastEvaluatedKey" not in page:
                return found
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def delete_all(self, validation_id: str) -> int:
        """Remove every stored event of the validation (its data was purged); how many there were."""
        kwargs: dict[str, Any] = {
            "TableName": self._events,
            "KeyConditionExpression": "validation_id = :v",
            "ExpressionAttributeValues": to_item({":v": validation_id}),
            "ProjectionExpression": "seq",
        }
        deleted = 0
        while True:
            page = await self._db.query(**kwargs)
            keys = [{"validation_id": validation_id, "seq": from_item(i)["seq"]} for i in page["Items"]]
            await asyncio.gather(*(self._db.delete_item(TableName=self._events, Key=to_item(k)) for k in keys))
            deleted += len(keys)
            if "LastEvaluatedKey" not in page:
                return deleted
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

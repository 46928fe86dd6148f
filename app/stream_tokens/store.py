"""Stream tokens in DynamoDB (`stream_tokens`, keyed by the token's SHA-256, TTL `expires_at`)."""

from __future__ import annotations

from app.aws.clients import AWSClients
from app.settings import Settings
from app.stream_tokens.records import StreamToken
from core.dynamo import from_item, to_item


class StreamTokenStore:
    def __init__(self, clients: AWSClients, settings: Settings) -> None:
        self._db = clients.dynamodb
        self._table = settings.table("stream_tokens")

    async def put(self, token: StreamToken) -> None:
        await self._db.put_item(TableName=self._table, Item=to_item(token.item()))

    async def get(self, token_hash: str) -> StreamToken | None:
        answer = await self._db.get_item(
            TableName=self._table, Key=to_item({"token_hash": token_hash}), ConsistentRead=True
        )
        return StreamToken.of(from_item(answer["Item"])) if "Item" in answer else None

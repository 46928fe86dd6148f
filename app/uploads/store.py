"""Uploads in DynamoDB (`uploads`, keyed by `upload_id`, TTL `expires_at`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from botocore.exceptions import ClientError

from app.aws.clients import AWSClients
from app.aws.errors import condition_failed
from app.settings import Settings
from app.uploads.records import Upload, UploadState
from core.dynamo import Update, from_item, to_item

_TRANSACTION_ITEMS = 100  # DynamoDB's cap on one TransactWriteItems
_BATCH_GET_KEYS = 100  # and on one BatchGetItem


class UploadStore:
    def __init__(self, clients: AWSClients, settings: Settings) -> None:
        self._db = clients.dynamodb
        self._table = settings.table("uploads")

    async def put_all(self, uploads: Sequence[Upload]) -> None:
        """Write new uploads, a transaction per 100 (so one request's uploads are written together)."""
        for start in range(0, len(uploads), _TRANSACTION_ITEMS):
            await self._db.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": to_item(upload.to_item()),
                            "ConditionExpression": "attribute_not_exists(upload_id)",
                        }
                    }
                    for upload in uploads[start : start + _TRANSACTION_ITEMS]
                ]
            )

    async def delete_all(self, upload_ids: Sequence[str]) -> None:
        for upload_id in upload_ids:
            await self._db.delete_item(TableName=self._table, Key=to_item({"upload_id": upload_id}))

    async def get(self, upload_id: str) -> Upload | None:
        answer = await self._db.get_item(
            TableName=self._table, Key=to_item({"upload_id": upload_id}), ConsistentRead=True
        )
        return Upload.of(from_item(answer["Item"])) if "Item" in answer else None

    async def get_many(self, upload_ids: Sequence[str]) -> dict[str, Upload]:
        """The uploads stored under these ids (an unknown id is left out)."""
        found: dict[str, Upload] = {}
        unique = list(dict.fromkeys(upload_ids))
        for start in range(0, len(unique), _BATCH_GET_KEYS):
            keys = [to_item({"upload_id": i}) for i in unique[start : start + _BATCH_GET_KEYS]]
            request: dict[str, Any] = {self._table: {"Keys": keys, "ConsistentRead": True}}
            while request:
                answer = await self._db.batch_get_item(RequestItems=request)
                for item in answer["Responses"].get(self._table, []):
                    upload = Upload.of(from_item(item))
                    found[upload.upload_id] = upload
                request = answer.get("UnprocessedKeys") or {}
        return found

    async def mark_uploaded(self, upload: Upload, etag: str, at: str) -> Upload:
        """`upload` confirmed: uploaded, with the ETag of what S3 holds. A concurrent confirmation
        that won keeps its record, which is returned."""
        update = (
            Update()
            .set(state=UploadState.UPLOADED.value, etag=etag, uploaded_at=at)
            .when("{state} = :pending", pending=UploadState.PENDING.value)
        )
        try:
            await self._db.update_item(**update.item(self._table, {"upload_id": upload.upload_id}))
        except ClientError as exc:
            if not condition_failed(exc):
                raise
            current = await self.get(upload.upload_id)
            if current is None:  # deleted by its TTL meanwhile
                raise
            return current
        return replace(upload, state=UploadState.UPLOADED, etag=etag, uploaded_at=at)

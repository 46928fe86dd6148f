"""Users, API keys (stored as hashes) and the admin audit trail, in DynamoDB."""

from __future__ import annotations

import uuid
from typing import Any

from botocore.exceptions import ClientError

from app.aws.clients import AWSClients
from app.aws.errors import condition_failed
from app.settings import Settings
from app.users.records import AuditRecord, User
from core.clock import expiry, now_iso
from core.dynamo import Update, from_item, to_item


class UserStore:
    def __init__(self, clients: AWSClients, settings: Settings) -> None:
        self._db = clients.dynamodb
        self._users = settings.table("users")
        self._keys = settings.table("api_keys")
        self._audit = settings.table("audit")
        self._audit_days = settings.audit_retention_days
        self._default_max_queued = settings.default_max_queued  # for quotas stored without max_queued

    async def get(self, user_id: str) -> User | None:
        answer = await self._db.get_item(TableName=self._users, Key=to_item({"user_id": user_id}), ConsistentRead=True)
        return User.of(from_item(answer["Item"]), self._default_max_queued) if "Item" in answer else None

    async def page(self, limit: int, start: dict[str, Any] | None) -> tuple[list[User], dict[str, Any] | None]:
        """Up to `limit` users in the table's order (a Scan page: admins list users rarely)."""
        kwargs: dict[str, Any] = {"TableName": self._users, "Limit": limit, "ConsistentRead": True}
        if start:
            kwargs["ExclusiveStartKey"] = to_item(start)
        page = await self._db.scan(**kwargs)
        return [User.of(from_item(i)) for i in page["Items"]], (
            from_item(page["LastEvaluatedKey"]) if "LastEvaluatedKey" in page else None
        )

    async def user_of_key(self, key_hash: str) -> str | None:
        answer = await self._db.get_item(TableName=self._keys, Key=to_item({"key_hash": key_hash}), ConsistentRead=True)
        return from_item(answer["Item"])["user_id"] if "Item" in answer else None

    async def create(self, user: User) -> bool:
        """User and key together; False when the user id is taken."""
        try:
            await self._db.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._users,
                            "Item": to_item(user.item()),
                            "ConditionExpression": "attribute_not_exists(user_id)",
                        }
                    },
                    {
                        "Put": {
                            "TableName": self._keys,
                            "Item": to_item(
                                {
                                    "key_hash": user.key_hash,
                                    "user_id": user.user_id,
                                    "created_at": user.created_at,
                                }
                            ),
                        }
                    },
                ]
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    async def update(self, user_id: str, changes: dict[str, Any]) -> None:
        """Set these stored attributes (names as on `User`) of an existing user."""
        update = Update().set(**changes).when("attribute_exists({user_id})")
        await self._db.update_item(**update.item(self._users, {"user_id": user_id}, to_item))

    async def replace_key(self, user_id: str, old_hash: str, new_hash: str) -> bool:
        """Rotate: the new key works and the old one stops, atomically."""
        try:
            await self._db.transact_write_items(
                TransactItems=[
                    {
                        "Update": Update()
                        .set(key_hash=new_hash, updated_at=now_iso())
                        .when("{key_hash} = :old", old=old_hash)
                        .item(self._users, {"user_id": user_id}, to_item)
                    },
                    {"Delete": {"TableName": self._keys, "Key": to_item({"key_hash": old_hash})}},
                    {
                        "Put": {
                            "TableName": self._keys,
                            "Item": to_item({"key_hash": new_hash, "user_id": user_id, "created_at": now_iso()}),
                        }
                    },
                ]
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    async def audit(self, actor: str, action: str, target: str, old: Any, new: Any) -> None:
        record = AuditRecord(
            f"{now_iso()}#{uuid.uuid4().hex[:8]}", actor, action, target, old, new, expiry(self._audit_days)
        )
        await self._db.put_item(TableName=self._audit, Item=to_item(record.item()))

    async def audit_page(
        self, limit: int, start: dict[str, Any] | None
    ) -> tuple[list[AuditRecord], dict[str, Any] | None]:
        kwargs: dict[str, Any] = {
            "TableName": self._audit,
            "KeyConditionExpression": "#stream = :admin",
            "ExpressionAttributeNames": {"#stream": "stream"},
            "ExpressionAttributeValues": to_item({":admin": "admin"}),
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if start:
            kwargs["ExclusiveStartKey"] = to_item(start)
        page = await self._db.query(**kwargs)
        return [AuditRecord.of(from_item(i)) for i in page["Items"]], (
            from_item(page["LastEvaluatedKey"]) if "LastEvaluatedKey" in page else None
        )

"""A user as the API reads it from DynamoDB: typed at the store boundary.

Field names are the stored attribute names of the `users` table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.identity.principal import OnLimit, Principal, Role
from core.quota import DEFAULT_MAX_QUEUED, Quota


@dataclass(frozen=True)
class User:
    user_id: str
    role: Role
    quota: Quota
    on_limit: OnLimit
    disabled: bool
    key_hash: str  # SHA-256 of the current API key (app/identity/keys.py); never shown
    created_at: str
    updated_at: str | None = None

    @classmethod
    def of(cls, item: dict[str, Any], default_max_queued: int = DEFAULT_MAX_QUEUED) -> User:
        """From a stored record (core/dynamo.from_item's plain values); a quota stored without
        `max_queued` gets `default_max_queued` (the setting DEFAULT_MAX_QUEUED)."""
        return cls(
            user_id=item["user_id"],
            role="admin" if item["role"] == "admin" else "user",
            quota=Quota.of(item["quota"], default_max_queued),
            on_limit="reject" if item["on_limit"] == "reject" else "queue",
            disabled=bool(item.get("disabled", False)),
            key_hash=item["key_hash"],
            created_at=item["created_at"],
            updated_at=item.get("updated_at"),
        )

    def item(self) -> dict[str, Any]:
        """The record to store (core/dynamo.to_item's plain values)."""
        return {**self.public(), "key_hash": self.key_hash}

    def public(self) -> dict[str, Any]:
        """What may be shown (the audit trail's old and new values): all but the key hash."""
        values: dict[str, Any] = {
            "user_id": self.user_id,
            "role": self.role,
            "quota": self.quota.as_dict(),
            "on_limit": self.on_limit,
            "disabled": self.disabled,
            "created_at": self.created_at,
        }
        if self.updated_at is not None:
            values["updated_at"] = self.updated_at
        return values

    def principal(self) -> Principal:
        """Who the holder of this user's key acts as."""
        return Principal(user_id=self.user_id, role=self.role, quota=self.quota, on_limit=self.on_limit)


@dataclass(frozen=True)
class AuditRecord:
    """One admin change in the `audit` table: who, when, what, old → new (public values only)."""

    at: str  # ISO time + "#" + a random suffix: unique, and sorts newest last
    actor: str
    action: str
    target: str
    old: Any = None
    new: Any = None
    expires_at: int | None = None  # DynamoDB TTL (AUDIT_RETENTION_DAYS)

    @classmethod
    def of(cls, item: dict[str, Any]) -> AuditRecord:
        return cls(
            at=item["at"],
            actor=item["actor"],
            action=item["action"],
            target=item["target"],
            old=item.get("old"),
            new=item.get("new"),
            expires_at=int(item["expires_at"]) if "expires_at" in item else None,
        )

    def item(self) -> dict[str, Any]:
        """The stored record: every entry lives in the one `admin` stream, newest first on read."""
        return {
            "stream": "admin",
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "old": self.old,
            "new": self.new,
            **({"expires_at": self.expires_at} if self.expires_at is not None else {}),
        }

"""A stream token as stored in DynamoDB (`stream_tokens`): typed at the store boundary.

Only the token's SHA-256 is stored; the token itself is in one answer only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StreamToken:
    token_hash: str  # SHA-256 of the token (the table's key)
    validation_id: str  # the one validation whose events it opens
    user_id: str  # who asked for it
    key_hash: str  # SHA-256 of the API key it was issued to: a rotated key or a disabled user revokes it
    expires_at: int  # epoch seconds: after this it opens nothing (also DynamoDB's TTL attribute)
    created_at: str

    @classmethod
    def of(cls, item: dict[str, Any]) -> StreamToken:
        return cls(
            token_hash=item["token_hash"],
            validation_id=item["validation_id"],
            user_id=item["user_id"],
            key_hash=item["key_hash"],
            expires_at=int(item["expires_at"]),
            created_at=item["created_at"],
        )

    def item(self) -> dict[str, Any]:
        return {
            "token_hash": self.token_hash,
            "validation_id": self.validation_id,
            "user_id": self.user_id,
            "key_hash": self.key_hash,
            "expires_at": self.expires_at,
            "created_at": self.created_at,
        }

    def opens(self, validation_id: str, now: float) -> bool:
        """Whether it may open `validation_id`'s events at `now` (DynamoDB's TTL deletes late: check)."""
        return self.validation_id == validation_id and now < self.expires_at

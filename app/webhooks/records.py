"""A webhook and its delivery attempts as the API reads them: typed at the store boundary.

Field names are the stored attribute names of the `webhooks` and `webhook_deliveries` tables;
the secret lives in `webhook_secrets` and is never read back by the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Webhook:
    owner: str
    url: str
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, item: dict[str, Any]) -> Webhook:
        return cls(
            owner=item["owner"],
            url=item["url"],
            created_at=item["created_at"],
            updated_at=item.get("updated_at", item["created_at"]),
        )

    def item(self) -> dict[str, Any]:
        return {"owner": self.owner, "url": self.url, "created_at": self.created_at, "updated_at": self.updated_at}


@dataclass(frozen=True)
class Delivery:
    """One attempt of the notify Lambda (lambdas/notify/delivery.py writes it)."""

    attempted_at: str
    event_id: str
    event_type: str
    validation_id: str
    attempt: int
    url: str
    duration_ms: int
    status_code: int | None = None
    error: str | None = None

    @classmethod
    def of(cls, item: dict[str, Any]) -> Delivery:
        return cls(
            attempted_at=item["attempted_at"],
            event_id=item["event_id"],
            event_type=item["event_type"],
            validation_id=item["validation_id"],
            attempt=int(item["attempt"]),
            url=item.get("url", ""),
            duration_ms=int(item.get("duration_ms", 0)),
            status_code=int(item["status_code"]) if item.get("status_code") is not None else None,
            error=item.get("error"),
        )

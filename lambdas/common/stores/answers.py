"""The reuse table: a question's digest (core/prompt.question_digest) → its grounded answer."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from core.clock import expiry
from core.dynamo import plain
from lambdas.common.stores.base import Clients


@dataclass(frozen=True)
class Answers:
    clients: Clients

    def stored(self, digest: str) -> dict[str, Any] | None:
        """The answer (a part's or a combine call's) stored for this digest, unless expired."""
        config = self.clients.config
        if not config.reuse_table:
            return None
        item = self.clients.table(config.reuse_table).get_item(Key={"digest": digest}, ConsistentRead=True).get("Item")
        if item is None or int(item.get("expires_at", 0)) < time.time():  # TTL deletes lazily
            return None
        found: dict[str, Any] = plain(item)
        return found

    def store(self, digest: str, answer: dict[str, Any]) -> None:
        """Keep an answer for reuse (`retention_days`); the latest answer wins."""
        config = self.clients.config
        if config.reuse_table:
            self.clients.table(config.reuse_table).put_item(
                Item={**answer, "digest": digest, "expires_at": expiry(config.retention_days)}
            )

"""Timestamps as records store them: UTC, ISO 8601, milliseconds, `Z` (they sort as text)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

DAY_SECONDS = 86_400


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_of(epoch: float) -> str:
    """`now_iso`'s form of an epoch time."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def expiry(days: float, now: float | None = None) -> int:
    """The `expires_at` of a record kept `days` (epoch seconds: DynamoDB's TTL attribute)."""
    return int((time.time() if now is None else now) + days * DAY_SECONDS)


def epoch_of(iso: str) -> float:
    """Seconds since the epoch of a timestamp as `now_iso` writes it."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()

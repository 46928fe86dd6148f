"""Timestamps as records store them: UTC, ISO 8601, milliseconds, `Z` (they sort as text)."""

from __future__ import annotations

from datetime import UTC, datetime


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_of(iso: str) -> float:
    """Seconds since the epoch of a timestamp as `now_iso` writes it."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()

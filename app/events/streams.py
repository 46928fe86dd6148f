"""Caps on open event streams: per user and in all, per API process (see README, Security)."""

from __future__ import annotations

from collections import Counter

from app.errors import TooManyRequests
from app.identity.principal import Principal

RETRY_AFTER_SECONDS = 5


class StreamSlot:
    """One open stream's place; `release` is idempotent (the stream's end and the response's
    background task both call it, whichever runs)."""

    def __init__(self, slots: StreamSlots, user_id: str) -> None:
        self._slots = slots
        self._user_id = user_id
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots._release(self._user_id)


class StreamSlots:
    def __init__(self, per_user: int, total: int) -> None:
        self.per_user = per_user
        self.total = total
        self._open: Counter[str] = Counter()
        self.open = 0

    def take(self, principal: Principal) -> StreamSlot:
        """A slot for one more stream of `principal`, or 429 naming the cap. The bootstrap admin
        (not rate limited) is held to the total only."""
        if self.open >= self.total:
            raise self._refusal("max_streams_total", self.total, "open event streams on this server")
        user = principal.user_id
        if principal.quota is not None and self._open[user] >= self.per_user:
            raise self._refusal("max_streams", self.per_user, "open event streams per user")
        self._open[user] += 1
        self.open += 1
        return StreamSlot(self, user)

    def _release(self, user_id: str) -> None:
        self.open -= 1
        self._open[user_id] -= 1
        if self._open[user_id] <= 0:
            del self._open[user_id]

    @staticmethod
    def _refusal(limit: str, value: int, what: str) -> TooManyRequests:
        return TooManyRequests(
            f"At most {value} {what}; close one or retry later.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            limit=limit,
            limit_value=value,
            retry_after=RETRY_AFTER_SECONDS,
        )

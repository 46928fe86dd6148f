"""OpenAI-style rate limits: requests and tokens per minute, as token buckets.

Like OpenAI, a request is charged at admission with its prompt tokens plus its
`max_tokens` (the most it may generate), both buckets refill continuously, and the
`x-ratelimit-*` headers say what is left and when the bucket is full again. The minute
can be scaled (`window_seconds`) so benchmarks need not run for real minutes.

OpenAI may enforce a limit in shorter slices (60,000 RPM as 1,000 requests a second):
`slice_seconds` makes each bucket hold only that slice's share of the limit (at least one
request, one token), refilling at the same rate. By default a bucket holds the whole window.
A limit of 60 requests a minute with plenty of tokens is `RateLimits(rpm=60, tpm=10**9)`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from core.tokens import count_message_tokens

DEFAULT_MAX_TOKENS = 4096  # what a request without max_tokens is charged for its answer


def duration(seconds: float) -> str:
    """OpenAI's duration format: `20ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s"


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """A chat request's prompt tokens, as core.tokens counts them (each message's `content` as text)."""
    return count_message_tokens([{"content": str(m.get("content", ""))} for m in messages])


@dataclass(frozen=True)
class Charge:
    """What a chat completion request is charged at admission: its prompt tokens plus `max_tokens`."""

    prompt_tokens: int
    max_tokens: int

    @classmethod
    def of(cls, body: dict[str, Any]) -> Charge:
        """The request's charge (`max_completion_tokens`, else `max_tokens`, else DEFAULT_MAX_TOKENS);
        `messages` must be a list of objects."""
        max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS)
        return cls(prompt_tokens(body.get("messages") or []), max_tokens)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.max_tokens


@dataclass
class Bucket:
    limit: float  # per window
    window_seconds: float
    slice_seconds: float | None = None  # the bucket holds this slice's share of the limit (None: a window's)
    level: float = field(init=False)
    updated: float = field(init=False)

    def __post_init__(self) -> None:
        self.level = self.capacity
        self.updated = time.monotonic()

    @property
    def rate(self) -> float:
        return self.limit / self.window_seconds

    @property
    def capacity(self) -> float:
        if self.slice_seconds is None:
            return self.limit
        return max(1.0, min(self.limit, self.rate * self.slice_seconds))

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        return max(0.0, (amount - self.level) / self.rate)

    def until_full(self) -> float:
        return (self.capacity - self.level) / self.rate


@dataclass(frozen=True)
class Decision:
    admitted: bool
    limited_by: str | None  # "requests" or "tokens"
    retry_after: float
    headers: dict[str, str]
    used_tokens: float = 0.0


class RateLimits:
    def __init__(self, rpm: int, tpm: int, window_seconds: float = 60.0, slice_seconds: float | None = None) -> None:
        self._lock = threading.Lock()
        self.requests = Bucket(rpm, window_seconds, slice_seconds)
        self.tokens = Bucket(tpm, window_seconds, slice_seconds)

    def admit(self, tokens: int) -> Decision:
        with self._lock:
            now = time.monotonic()
            self.requests.refill(now)
            self.tokens.refill(now)
            waits = {"requests": self.requests.wait_for(1), "tokens": self.tokens.wait_for(tokens)}
            limited_by = max(waits, key=lambda name: waits[name]) if max(waits.values()) > 0 else None
            if limited_by is None:
                self.requests.level -= 1
                self.tokens.level -= tokens
            used = self.tokens.limit - self.tokens.level
            headers = {
                "x-ratelimit-limit-requests": str(int(self.requests.limit)),
                "x-ratelimit-limit-tokens": str(int(self.tokens.limit)),
                "x-ratelimit-remaining-requests": str(int(self.requests.level)),
                "x-ratelimit-remaining-tokens": str(int(self.tokens.level)),
                "x-ratelimit-reset-requests": duration(self.requests.until_full()),
                "x-ratelimit-reset-tokens": duration(self.tokens.until_full()),
            }
            retry_after = waits[limited_by] if limited_by else 0.0
            return Decision(limited_by is None, limited_by, retry_after, headers, used)

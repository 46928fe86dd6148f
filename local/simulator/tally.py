"""Calls admitted by the simulator, told apart by a marker in their prompt.

For tests and benchmarks of who got the model: each admitted call is recorded with its
time, the tokens the limiter charged (prompt + max_tokens, as `limits.py` charges them)
and the label of the first marker its prompt contains (e.g. a file-name prefix per user).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from core.tokens import count_message_tokens
from local.simulator.app import Simulator


class Tally:
    """Wraps `simulator.complete` until `close()`; `calls` holds (monotonic time, tokens, label)."""

    def __init__(self, simulator: Simulator, markers: dict[str, str], other: str = "other") -> None:
        self._simulator = simulator
        self._complete = simulator.complete
        self._markers = markers
        self._other = other
        self._lock = threading.Lock()
        self.calls: list[tuple[float, int, str]] = []
        simulator.complete = self.complete  # type: ignore[method-assign]  # the app calls the instance's attribute

    async def complete(self, body: dict[str, Any]) -> Any:
        started = time.monotonic()
        messages = [{"content": str(m.get("content", ""))} for m in body.get("messages") or []]
        text = "".join(m["content"] for m in messages)
        label = next((name for marker, name in self._markers.items() if marker in text), self._other)
        answer = await self._complete(body)
        if answer.status_code == 200:
            charged = count_message_tokens(messages) + int(
                body.get("max_completion_tokens") or body.get("max_tokens") or 4096
            )
            with self._lock:
                self.calls.append((started, charged, label))
        return answer

    def of(self, label: str) -> list[tuple[float, int]]:
        with self._lock:
            return [(t, tokens) for t, tokens, who in self.calls if who == label]

    def close(self) -> None:
        self._simulator.complete = self._complete  # type: ignore[method-assign]

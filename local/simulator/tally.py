"""Calls answered by the simulator, told apart by a marker in their prompt.

For tests and benchmarks of who got the model: each call admitted and answered is recorded
with its time, the tokens the limiter charged (prompt + max_tokens, as `limits.py` charges
them) and the label of the first marker its prompt contains (e.g. a file-name prefix per
user). Requests a batch answered (batches.py) are recorded apart, in `batched`, with the time
they were answered and the same charge, though no limiter charged them. The simulator's own
counts (calls, tokens, files, batches, batched requests) are its `Stats`.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from local.simulator.app import Simulator
from local.simulator.limits import Charge


class Tally:
    """Wraps `simulator.complete` and `simulator.answer_batched` until `close()`; `calls` and `batched`
    hold (monotonic time, tokens, label)."""

    def __init__(self, simulator: Simulator, markers: dict[str, str], other: str = "other") -> None:
        self._simulator = simulator
        self._complete = simulator.complete
        self._answer_batched = simulator.answer_batched
        self._markers = markers
        self._other = other
        self._lock = threading.Lock()
        self.calls: list[tuple[float, int, str]] = []
        self.batched: list[tuple[float, int, str]] = []
        # The app and the batches call the instance's attributes.
        simulator.complete = self.complete  # type: ignore[method-assign]
        simulator.answer_batched = self.answer_batched  # type: ignore[method-assign]

    async def complete(self, body: dict[str, Any]) -> Any:
        started = time.monotonic()
        answer = await self._complete(body)
        if answer.status_code == 200:
            self._record(self.calls, started, body)
        return answer

    def answer_batched(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        started = time.monotonic()
        status, answer = self._answer_batched(body)
        if status == 200:
            self._record(self.batched, started, body)
        return status, answer

    def of(self, label: str, batched: bool = False) -> list[tuple[float, int]]:
        with self._lock:
            return [(t, tokens) for t, tokens, who in (self.batched if batched else self.calls) if who == label]

    def close(self) -> None:
        self._simulator.complete = self._complete  # type: ignore[method-assign]
        self._simulator.answer_batched = self._answer_batched  # type: ignore[method-assign]

    def _record(self, into: list[tuple[float, int, str]], started: float, body: dict[str, Any]) -> None:
        text = "".join(str(m.get("content", "")) for m in body.get("messages") or [])
        label = next((name for marker, name in self._markers.items() if marker in text), self._other)
        with self._lock:
            into.append((started, Charge.of(body).tokens, label))

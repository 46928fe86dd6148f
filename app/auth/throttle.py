"""Failed authentication per client address: after `limit` bad keys in a minute, 429 until the
oldest of them is a minute old. Per API process (the API is stateless; see README, Security)."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

WINDOW_SECONDS = 60.0


class FailedAuthThrottle:
    def __init__(self, max_addresses: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._max_addresses = max_addresses  # the oldest address is forgotten beyond this: memory stays bounded
        self._clock = clock

    def retry_after(self, address: str, limit: int) -> float:
        """Seconds until `address` may try a key again; 0 when it may now."""
        failures = self._failures.get(address)
        if failures is None:
            return 0.0
        now = self._clock()
        while failures and failures[0] <= now - WINDOW_SECONDS:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return 0.0
        return failures[0] + WINDOW_SECONDS - now if len(failures) >= limit else 0.0

    def failed(self, address: str, limit: int) -> None:
        failures = self._failures.pop(address, None) or deque(maxlen=limit)
        failures.append(self._clock())
        self._failures[address] = failures  # most recent last
        while len(self._failures) > self._max_addresses:
            self._failures.popitem(last=False)

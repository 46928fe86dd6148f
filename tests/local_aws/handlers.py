"""Lambda handlers used by the embedded-engine tests. They count what they see."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any


class Probe:
    """Counts calls, in-flight calls and the peak of in-flight calls, per probe name."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: dict[str, int] = defaultdict(int)
        self.in_flight: dict[str, int] = defaultdict(int)
        self.peak: dict[str, int] = defaultdict(int)
        self.started_at: dict[str, list[float]] = defaultdict(list)

    def enter(self, name: str) -> None:
        with self.lock:
            self.calls[name] += 1
            self.in_flight[name] += 1
            self.peak[name] = max(self.peak[name], self.in_flight[name])
            self.started_at[name].append(time.monotonic())

    def leave(self, name: str) -> None:
        with self.lock:
            self.in_flight[name] -= 1


probe = Probe()


class RateLimited(Exception):
    """Named like the error the state machine retries on."""


class Fatal(Exception):
    pass


def sleepy(event: dict[str, Any], context: Any) -> dict[str, Any]:
    name = event["probe"]
    probe.enter(name)
    try:
        time.sleep(event.get("sleep", 0.05))
    finally:
        probe.leave(name)
    return {"item": event.get("item"), "function": context.function_name}


def flaky(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Fails with RateLimited `fail_times` times per probe, then succeeds."""
    name = event["probe"]
    probe.enter(name)
    probe.leave(name)
    if probe.calls[name] <= event.get("fail_times", 0):
        raise RateLimited(f"attempt {probe.calls[name]}")
    return {"attempts": probe.calls[name]}


def always_fails(event: dict[str, Any], context: Any) -> dict[str, Any]:
    probe.enter(event["probe"])
    probe.leave(event["probe"])
    raise Fatal("this handler always fails")


def echo_environment(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from core import lambda_env

    return {name: lambda_env.current().get(name) for name in event["names"]}

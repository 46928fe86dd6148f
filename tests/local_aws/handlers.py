"""Lambda handlers used by the embedded-engine tests. They count what they see."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any


class Probe:
    """Per probe name: calls, calls in flight and their peak; `held` calls wait until released."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: dict[str, int] = defaultdict(int)
        self.in_flight: dict[str, int] = defaultdict(int)
        self.peak: dict[str, int] = defaultdict(int)
        self._released: dict[str, threading.Event] = defaultdict(threading.Event)

    def enter(self, name: str) -> None:
        with self.lock:
            self.calls[name] += 1
            self.in_flight[name] += 1
            self.peak[name] = max(self.peak[name], self.in_flight[name])

    def leave(self, name: str) -> None:
        with self.lock:
            self.in_flight[name] -= 1

    def release(self, name: str) -> None:
        with self.lock:
            released = self._released[name]
        released.set()

    def wait_for_release(self, name: str, timeout: float = 120) -> None:
        with self.lock:
            released = self._released[name]
        if not released.wait(timeout):
            raise TimeoutError(f"probe {name} was never released")


probe = Probe()


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


def held(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Runs until the test calls `probe.release(event["probe"])`."""
    name = event["probe"]
    probe.enter(name)
    try:
        probe.wait_for_release(name)
    finally:
        probe.leave(name)
    return {"item": event.get("item")}


def always_fails(event: dict[str, Any], context: Any) -> dict[str, Any]:
    probe.enter(event["probe"])
    probe.leave(event["probe"])
    raise Fatal("this handler always fails")


def echo_environment(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from core import lambda_env

    return {name: lambda_env.current().get(name) for name in event["names"]}


parked_tokens: dict[str, list[str]] = defaultdict(list)


def park(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda of a `.waitForTaskToken` task: keeps the token (by probe name) and returns;
    the task waits until someone sends the token back."""
    probe.enter(event["probe"])
    probe.leave(event["probe"])
    parked_tokens[event["probe"]].append(event["token"])
    return {"parked": True}

"""Per-process guards as plain objects: the failed-auth throttle, the stream caps, the intake byte gate."""

from __future__ import annotations

import asyncio

import pytest

from app.auth.throttle import WINDOW_SECONDS, FailedAuthThrottle
from app.errors import TooManyRequests
from app.events.streams import StreamSlots
from app.identity.principal import Principal
from app.limits import ByteGate
from core.quota import Quota


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_throttled_after_limit_bad_keys_in_a_minute_then_let_go() -> None:
    clock = Clock()
    throttle = FailedAuthThrottle(clock=clock)
    for _ in range(3):
        assert throttle.retry_after("198.51.100.1", limit=3) == 0
        throttle.failed("198.51.100.1", limit=3)
        clock.now += 1

    assert throttle.retry_after("198.51.100.1", limit=3) == pytest.approx(WINDOW_SECONDS - 3)
    assert throttle.retry_after("198.51.100.2", limit=3) == 0  # another address is not affected
    clock.now += WINDOW_SECONDS - 3  # the first failure is a minute old
    assert throttle.retry_after("198.51.100.1", limit=3) == 0


def test_the_throttle_remembers_a_bounded_number_of_addresses() -> None:
    throttle = FailedAuthThrottle(max_addresses=100, clock=Clock())
    for i in range(1000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}", limit=1)

    remembered = [a for i in range(1000) if throttle.retry_after(a := f"10.0.{i // 256}.{i % 256}", limit=1)]
    assert len(remembered) == 100
    assert remembered[-1] == "10.0.3.231"  # the most recent ones


USER = Principal("u1", "user", Quota(1000, 1000, 1))
BOOTSTRAP = Principal("admin", "admin")


def test_streams_are_capped_per_user_and_in_all() -> None:
    slots = StreamSlots(per_user=2, total=3)
    first, _ = slots.take(USER), slots.take(USER)

    with pytest.raises(TooManyRequests) as per_user:
        slots.take(USER)
    assert per_user.value.extra["limit"] == "max_streams"
    assert per_user.value.headers["Retry-After"]

    slots.take(BOOTSTRAP)  # the bootstrap admin counts toward the total only
    with pytest.raises(TooManyRequests) as total:
        slots.take(BOOTSTRAP)
    assert total.value.extra["limit"] == "max_streams_total"

    first.release()
    first.release()  # idempotent: the stream's end and the response's background task both release
    assert slots.open == 2
    slots.take(USER)
    assert slots.open == 3


async def settle() -> None:
    """Let every ready task run until it blocks."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_the_byte_gate_admits_in_arrival_order_within_its_capacity() -> None:
    gate = ByteGate(100)
    inside: list[str] = []
    leave = {name: asyncio.Event() for name in "abcde"}

    async def submission(name: str, size: int) -> None:
        async with gate.hold(size):
            inside.append(name)
            await leave[name].wait()

    tasks = {name: asyncio.create_task(submission(name, size)) for name, size in [("a", 60), ("b", 60), ("c", 10)]}
    await settle()
    assert inside == ["a"]  # c would fit, but b came first: no small request starves a big one
    leave["a"].set()
    await settle()
    assert inside == ["a", "b", "c"] and gate.held == 70

    tasks["d"] = asyncio.create_task(submission("d", 10**9))  # chunked: the whole allowance
    tasks["e"] = asyncio.create_task(submission("e", 5))
    await settle()
    tasks["d"].cancel()  # a waiter that gives up does not block the ones behind it
    await settle()
    assert inside == ["a", "b", "c", "e"]
    for name in "bce":
        leave[name].set()
    await asyncio.gather(*(t for n, t in tasks.items() if n != "d"))
    assert gate.held == 0

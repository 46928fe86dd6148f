"""Up to k calls at once in one invocation (lambdas/common/calls.py), without AWS: the
workers' Askers are stand-ins that count their leases; the items' handler coordinates with
the test through events, so nothing here depends on timing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from core import lambda_env
from lambdas.common import calls
from lambdas.common.errors import CapacityUnavailable, InvalidAnswer, RateLimited
from lambdas.common.model import Asker, Askers, Stopped

WAIT = 30  # seconds: a bound on a broken test, never a measurement


@dataclass
class _Lease:
    closed: int = 0

    def close(self) -> None:
        self.closed += 1


@dataclass
class _Asker:
    lease: _Lease = field(default_factory=_Lease)


class _Askers:
    """`calls.handle_all`'s view of an invocation: k, the live allowance, and new askers."""

    def __init__(self, k: int, allowed: int) -> None:
        self.allowed = allowed
        self.made: list[_Asker] = []
        plan = {"map_concurrency": 1, "calls_per_invocation": k}
        self.askers = Askers(self._new, lambda: self.allowed, plan, "simulator")

    def _new(self) -> Asker:
        asker = _Asker()
        self.made.append(asker)
        return cast(Asker, asker)


class _Running:
    """Items in their handler: who handles which, and the most at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.done: list[int] = []
        self.by: dict[int, int] = {}  # item → thread

    def enter(self, item: int) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.by[item] = threading.get_ident()

    def leave(self, item: int) -> None:
        with self.lock:
            self.now -= 1
            self.done.append(item)


def _handler(running: _Running, body: Callable[[int], Any]) -> Callable[[Asker, int], None]:
    def handle(_: Asker, item: int) -> None:
        running.enter(item)
        try:
            body(item)
        finally:
            running.leave(item)

    return handle


def test_k_workers_handle_every_item_once_each_with_its_own_lease() -> None:
    askers, running = _Askers(k=3, allowed=3), _Running()
    together = threading.Barrier(3, timeout=WAIT)

    def body(item: int) -> None:
        if item < 3:
            together.wait()  # the first three items are in their calls at once

    stopped = calls.handle_all(list(range(7)), _handler(running, body), askers.askers)

    assert stopped is False
    assert sorted(running.done) == list(range(7))
    assert running.peak == 3
    assert len(askers.made) == 3
    assert all(a.lease.closed == 1 for a in askers.made)


def test_one_call_at_a_time_runs_in_the_invocations_own_thread() -> None:
    askers, running = _Askers(k=1, allowed=1), _Running()

    calls.handle_all(list(range(3)), _handler(running, lambda i: None), askers.askers)

    assert set(running.by.values()) == {threading.get_ident()}
    assert running.done == [0, 1, 2] and len(askers.made) == 1 and askers.made[0].lease.closed == 1


def test_workers_see_the_invocations_context() -> None:
    askers, running = _Askers(k=2, allowed=2), _Running()
    seen: list[str | None] = []
    token = lambda_env.use({"TABLE": "from-the-invocation"})
    try:
        calls.handle_all(
            [0, 1], _handler(running, lambda i: seen.append(lambda_env.current().get("TABLE"))), askers.askers
        )
    finally:
        lambda_env.reset(token)

    assert seen == ["from-the-invocation"] * 2


def test_the_first_error_stops_new_items_and_the_calls_in_flight_finish() -> None:
    askers, running = _Askers(k=2, allowed=2), _Running()
    both_in = threading.Barrier(2, timeout=WAIT)
    failed = threading.Event()

    def body(item: int) -> None:
        if item < 2:
            both_in.wait()
        if item == 0:
            failed.set()
            raise InvalidAnswer("part 0: not JSON")
        if item == 1:
            assert failed.wait(WAIT)  # still in its call when the other failed: it finishes

    with pytest.raises(InvalidAnswer, match="part 0"):
        calls.handle_all(list(range(6)), _handler(running, body), askers.askers)

    assert sorted(running.done) == [0, 1]  # item 1 finished (and stored); nothing started after
    assert all(a.lease.closed == 1 for a in askers.made)


def test_a_stop_ends_the_invocation_quietly() -> None:
    askers, running = _Askers(k=2, allowed=2), _Running()
    cancelled = threading.Event()

    def body(item: int) -> None:
        if item == 1:
            cancelled.set()
            raise Stopped()  # the validation was cancelled: found before this call
        assert cancelled.wait(WAIT)  # item 0 is in its call meanwhile

    assert calls.handle_all(list(range(10)), _handler(running, body), askers.askers) is True
    assert sorted(running.done) == [0, 1]
    assert all(a.lease.closed == 1 for a in askers.made)


def test_lowering_the_cap_leaves_one_worker_taking_items() -> None:
    askers, running = _Askers(k=3, allowed=3), _Running()
    three_in = threading.Barrier(3, timeout=WAIT)
    lowered = threading.Event()

    def body(item: int) -> None:
        if item < 3:
            if three_in.wait() == 0:
                askers.allowed = 1  # an admin lowered max-parallelism while three calls ran
                lowered.set()
            assert lowered.wait(WAIT)

    calls.handle_all(list(range(9)), _handler(running, body), askers.askers)

    assert running.peak == 3
    assert sorted(running.done) == list(range(9))
    assert len({running.by[i] for i in range(3, 9)}) == 1  # after the change, one worker took every item


def test_raising_the_cap_adds_workers_up_to_k() -> None:
    askers, running = _Askers(k=3, allowed=1), _Running()
    three_in = threading.Barrier(3, timeout=WAIT)

    def body(item: int) -> None:
        if item == 0:
            askers.allowed = 5  # raised while the only worker calls: the invocation adds two, not four
        if item < 3:
            three_in.wait()

    calls.handle_all(list(range(6)), _handler(running, body), askers.askers)

    assert running.peak == 3 and len(askers.made) == 3


def test_a_worker_without_capacity_gives_its_item_back_while_others_call() -> None:
    askers, running = _Askers(k=2, allowed=2), _Running()
    both_in = threading.Barrier(2, timeout=WAIT)
    refused: list[int] = []

    def body(item: int) -> None:
        if item == 1 and not refused:
            both_in.wait()  # item 0 is in its call
            refused.append(item)
            raise CapacityUnavailable("all 2 call slots of this validation are busy")
        if item == 0:
            both_in.wait()

    calls.handle_all(list(range(4)), _handler(running, body), askers.askers)

    assert refused == [1]
    assert sorted(running.done) == [0, 1, 1, 2, 3]  # item 1 again, by a worker that had capacity


def test_capacity_missing_for_every_worker_ends_the_invocation() -> None:
    askers, running = _Askers(k=2, allowed=2), _Running()

    def body(item: int) -> Any:
        raise CapacityUnavailable("token budget: nothing free within the wait")

    with pytest.raises(CapacityUnavailable):
        calls.handle_all(list(range(4)), _handler(running, body), askers.askers)


@pytest.mark.parametrize(("k", "allowed"), [(1, 1), (2, 1), (3, 3)])  # one thread, one worker of two, three
def test_a_rate_limited_part_is_asked_again_after_the_others_and_its_item_succeeds(k: int, allowed: int) -> None:
    askers, running = _Askers(k=k, allowed=allowed), _Running()
    refusals = {1: calls.REQUEUES, 3: 1}  # item → 429s before it is answered

    def body(item: int) -> None:
        if refusals.get(item, 0) > 0:
            refusals[item] -= 1
            raise RateLimited("429", retry_after=None)

    stopped = calls.handle_all(list(range(5)), _handler(running, body), askers.askers)

    assert stopped is False
    assert sorted(set(running.done)) == list(range(5))
    # Items 1 and 3 went to the end: asked 3 and 2 times, after the ones not refused.
    assert running.done.count(1) == calls.REQUEUES + 1 and running.done.count(3) == 2
    assert running.done.index(4) < len(running.done) - 1 - running.done[::-1].index(1)


@pytest.mark.parametrize(("k", "allowed"), [(1, 1), (2, 2)])
def test_a_part_refused_past_its_requeues_ends_the_invocation_with_rate_limited(k: int, allowed: int) -> None:
    askers, running = _Askers(k=k, allowed=allowed), _Running()

    def body(item: int) -> None:
        if item == 0:
            raise RateLimited("429", retry_after=None)

    with pytest.raises(RateLimited):
        calls.handle_all(list(range(3)), _handler(running, body), askers.askers)

    assert running.done.count(0) == calls.REQUEUES + 1
    assert sorted(set(running.done)) == [0, 1, 2]  # the others were asked meanwhile


def test_an_invocation_of_one_part_leaves_a_429_to_step_functions() -> None:
    askers, running = _Askers(k=2, allowed=2), _Running()

    def body(item: int) -> None:
        raise RateLimited("429", retry_after=None)

    with pytest.raises(RateLimited):
        calls.handle_all([0], _handler(running, body), askers.askers)

    assert running.done == [0]  # asked once: the item's Retry budget is this part's alone

"""Up to k model calls at once inside one invocation (core/headroom.py).

An inline Map runs at most 40 invocations at once; for a validation to have more calls in
flight, an invocation runs several. Workers (threads) take the invocation's items one at a
time from a shared list, each with its own Asker: its own lease, so its own call slot below
the validation's live parallelism and its own grants from the budget (k calls = k grants).
Each item's result is stored by `handle` as soon as it has one, exactly as one call at a time
stores it, so a retried invocation resumes where this one stopped; a worker holds one item's
text at a time, so the invocation holds at most k.

The invocation runs `askers.workers()` workers — its part of the live cap, at most k — read
again before each item and every `POLL_SECONDS`: a lowered cap makes workers leave after
their current item (and a worker's slot above the cap is given up after its call,
lambdas/common/governor.py), a raised one adds workers. The first error stops the others
from taking new items; those in a call finish it and store its result; then the error is
raised, for Step Functions to retry or catch as with one call at a time. A stop (cancel,
newer run) ends the invocation quietly. A worker that finds no slot or tokens within its
wait (CapacityUnavailable) while others of the invocation are still calling gives its part
back and leaves: it was a worker more than the live cap needed (fewer than one per
invocation, core/headroom.workers); only when none is left calling does the invocation
raise it.

A part refused with 429 (RateLimited) in an invocation that holds other parts goes back to
the end of its list, up to `REQUEUES` times, and is asked again when its turn comes (the
governor already paused every grant for the 429's wait): Step Functions' Retry budget is the
item's, and without this the parts of one item would share it, so an item of n parts would
fail n times as often as a part alone. Past that, RateLimited ends the invocation as before
(Step Functions retries it with backoff). An invocation of one part keeps Step Functions'
retries as its only ones.

Threads run in a copy of the invocation's context: its environment (core/lambda_env), its log
keys and its metrics. With k = 1, everything runs in the invocation's own thread, as before.
"""

from __future__ import annotations

import collections
import contextvars
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from lambdas.common.errors import CapacityUnavailable, RateLimited
from lambdas.common.model import Asker, Askers, Stopped

T = TypeVar("T")
POLL_SECONDS = 0.5  # how often the live cap is looked at (it is cached CONFIG_CACHE_SECONDS anyway)
REQUEUES = 2  # a rate-limited part asked again within its invocation, at most (3 tries in all)


def handle_all(items: Sequence[T], handle: Callable[[Asker, T], None], askers: Askers) -> bool:
    """`handle(asker, item)` for every item, up to `askers.workers()` at once; True when stopped."""
    if askers.limit <= 1 or len(items) <= 1:
        asker = askers.new()
        todo = collections.deque((i, item) for i, item in enumerate(items))
        refused: collections.Counter[int] = collections.Counter()
        try:
            while todo:
                i, item = todo.popleft()
                try:
                    handle(asker, item)
                except RateLimited:
                    if not _requeue(refused, i, len(items)):
                        raise
                    todo.append((i, item))
        except Stopped:
            return True
        finally:
            asker.lease.close()
        return False
    return _Workers(items, handle, askers).run()


def _requeue(refused: collections.Counter[int], index: int, items: int) -> bool:
    """Whether the item at `index`, just refused with 429, goes back to the invocation's list
    (counted here): only in an invocation of several items, at most REQUEUES times each."""
    if items <= 1 or refused[index] >= REQUEUES:
        return False
    refused[index] += 1
    return True


class _Workers(Generic[T]):
    def __init__(self, items: Sequence[T], handle: Callable[[Asker, T], None], askers: Askers) -> None:
        self._handle, self._askers = handle, askers
        self._todo = collections.deque(enumerate(items))  # items not taken yet (or given back), by index
        self._count = len(items)
        self._refused: collections.Counter[int] = collections.Counter()  # 429s per item (REQUEUES)
        self._changed = threading.Condition()
        self._active = 0  # workers running
        self._starting = 0  # workers started that have not taken an item yet
        self._allowed = 1
        self._error: Exception | None = None
        self._stopped = False
        self._threads: list[threading.Thread] = []

    def _over(self) -> bool:
        return self._error is not None or self._stopped or not self._todo

    def run(self) -> bool:
        while True:
            allowed = self._askers.workers()  # may read SSM (cached): outside the lock
            with self._changed:
                self._allowed = allowed
                if self._over():
                    if self._active == 0:
                        break
                else:
                    for _ in range(min(allowed - self._active, len(self._todo) - self._starting)):
                        self._start()
                self._changed.wait(POLL_SECONDS)
        for thread in self._threads:
            thread.join()
        if self._stopped:
            return True
        if self._error is not None:
            raise self._error
        return False

    def _start(self) -> None:
        self._active += 1
        self._starting += 1
        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(self._work,), daemon=True)
        self._threads.append(thread)
        thread.start()

    def _take(self, first: bool) -> list[tuple[int, T]]:
        """[the item to handle next], or []: this worker leaves (and is counted out here)."""
        allowed = self._askers.workers()  # before each part: a lowered cap reaches this worker now
        with self._changed:
            self._allowed = allowed
            if first:
                self._starting -= 1
            if self._over() or self._active > self._allowed:  # done, failed, or the cap went down
                self._active -= 1
                self._changed.notify_all()
                return []
            return [self._todo.popleft()]

    def _work(self) -> None:
        asker: Asker | None = None
        counted_out, first = False, True
        item: list[tuple[int, T]] = []
        try:
            asker = self._askers.new()
            while item := self._take(first):
                first = False
                index, taken = item[0]
                try:
                    self._handle(asker, taken)
                except RateLimited:
                    with self._changed:
                        if not _requeue(self._refused, index, self._count):
                            raise
                        self._todo.append(item[0])  # asked again when its turn comes
            first, counted_out = False, True
        except Stopped:
            with self._changed:
                self._stopped = True
        except CapacityUnavailable as exc:
            with self._changed:
                if self._active > 1 and item:
                    # No slot or tokens within this worker's wait, while others of the invocation
                    # still call: a worker more than the cap needs. Its part goes back, it leaves.
                    self._todo.appendleft(item[0])
                else:  # nobody here gets capacity: the invocation ends, Step Functions retries
                    self._error = self._error or exc
        except Exception as exc:  # noqa: BLE001 - kept, and raised by the invocation once the others finished
            with self._changed:
                self._error = self._error or exc
        finally:
            try:
                if asker is not None:
                    asker.lease.close()
            except Exception as exc:  # noqa: BLE001 - as above
                with self._changed:
                    self._error = self._error or exc
            with self._changed:
                if first:
                    self._starting -= 1
                if not counted_out:
                    self._active -= 1
                self._changed.notify_all()

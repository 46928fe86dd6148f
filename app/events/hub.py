"""One reader per validation per API process, shared by all its viewers.

A `Feed` polls the validation's event log (one Query per poll, whatever the number of
viewers), keeps the events in order in memory, and wakes its viewers. A gap in the
sequence (a writer took a number and has not written yet, or died) is waited out for
`gap_wait_seconds`, then skipped. The feed stops when its last viewer leaves.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from app.events.store import Event, EventStore
from core.events import STATUS
from core.records import TERMINAL

log = logging.getLogger(__name__)


class Feed:
    def __init__(self, validation_id: str, store: EventStore, poll_seconds: float, gap_wait_seconds: float) -> None:
        self.validation_id = validation_id
        self.events: list[Event] = []
        self.ended = False  # the last status is terminal and nothing newer is stored
        self.viewers = 0
        self.polls = 0  # reads done: viewers re-check their caller once per poll
        self._store = store
        self._poll = poll_seconds
        self._gap_wait = gap_wait_seconds
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._status: str | None = None

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq if self.events else 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"feed-{self.validation_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        gap_since: float | None = None
        while True:
            try:
                stored = await self._store.after(self.validation_id, self.last_seq)
            except Exception:  # noqa: BLE001 - a failed poll is retried; viewers keep their connection
                log.exception("event feed %s: read failed", self.validation_id)
                await asyncio.sleep(self._poll)
                continue
            fresh: list[Event] = []
            expected = self.last_seq + 1
            for event in stored:
                if event.seq != expected:
                    gap_since = gap_since or time.monotonic()
                    if time.monotonic() - gap_since < self._gap_wait:
                        break  # wait for the missing number to be written
                    log.warning(
                        "event feed %s: skipping missing events %d-%d", self.validation_id, expected, event.seq - 1
                    )
                fresh.append(event)
                expected = event.seq + 1
                gap_since = None
            caught_up = len(fresh) == len(stored)
            async with self._changed:
                self.events.extend(fresh)
                for event in fresh:
                    if event.type == STATUS:
                        self._status = event.data.get("status")
                self.ended = caught_up and self._status in TERMINAL
                self.polls += 1
                self._changed.notify_all()
            await asyncio.sleep(self._poll)

    async def follow(
        self, after_seq: int, allowed: Callable[[], Awaitable[bool]] | None = None
    ) -> AsyncIterator[Event | None]:
        """Events after `after_seq` as they come; a final None when the validation has ended.

        With `allowed`, it is asked after every poll of the feed (and before any event is
        given out): when it answers False the iteration stops, without the final None."""
        index = bisect.bisect_right([e.seq for e in self.events], after_seq)
        polls = self.polls
        while True:
            async with self._changed:
                # wait_for returns before `index` changes again: the predicate sees this iteration's value.
                await self._changed.wait_for(
                    lambda: len(self.events) > index or self.ended or (allowed is not None and self.polls != polls)  # noqa: B023
                )
                batch, ended, polls = self.events[index:], self.ended, self.polls
            if allowed is not None and not await allowed():
                return
            for event in batch:
                index += 1
                if event.seq > after_seq:
                    yield event
            if ended and index >= len(self.events):
                yield None
                return


class EventHub:
    def __init__(self, store: EventStore, poll_seconds: float, gap_wait_seconds: float) -> None:
        self.store = store
        self._poll = poll_seconds
        self._gap_wait = gap_wait_seconds
        self._feeds: dict[str, Feed] = {}

    @property
    def open_feeds(self) -> int:
        return len(self._feeds)

    def feed(self, validation_id: str) -> Feed | None:
        """The open feed of a validation, if it has viewers."""
        return self._feeds.get(validation_id)

    def join(self, validation_id: str) -> Feed:
        feed = self._feeds.get(validation_id)
        if feed is None:
            feed = self._feeds[validation_id] = Feed(validation_id, self.store, self._poll, self._gap_wait)
            feed.start()
        feed.viewers += 1
        return feed

    async def leave(self, feed: Feed) -> None:
        feed.viewers -= 1
        if feed.viewers == 0 and self._feeds.get(feed.validation_id) is feed:
            del self._feeds[feed.validation_id]
            await feed.stop()

    async def close(self) -> None:
        feeds, self._feeds = list(self._feeds.values()), {}
        for feed in feeds:
            await feed.stop()

"""Server-sent events: replay, resume without gaps or duplicates, shared readers, cancel."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings
from local.serving import ThreadedServer
from local.simulator.server import SimulatorServer
from tests.events.sse import read
from tests.servers import embedded_aws_process
from tests.support.stack import (
    ADMIN,
    ADMIN_KEY,
    Aws,
    HeldCalls,
    lines_document,
    set_parallelism,
    settings_of,
    target_the_simulators_limit,
    wait_for,
)

RULES = ['must not contain "secret"']


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """The API over real HTTP (streams need a real server); its URL until the block ends."""
    server = ThreadedServer(app, lifespan="on").start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def served_app(settings: Settings) -> FastAPI:
    # A DELETE answers at once (CANCELLING) instead of waiting for the stop to settle.
    return create_app(
        settings.model_copy(update={"sse_poll_seconds": 0.2, "sse_heartbeat_seconds": 1, "cancel_settle_seconds": 0})
    )


@pytest.fixture
def served(served_app: FastAPI) -> Iterator[str]:
    with serving(served_app) as url:
        yield url


def submit(base: str, documents: dict[str, str], headers: dict[str, str] = ADMIN) -> str:
    answer = httpx.post(
        f"{base}/validations",
        json={"documents": [{"name": n, "content": c} for n, c in documents.items()], "rules": RULES},
        headers=headers,
        timeout=60,
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def test_a_finished_validation_replays_its_events_and_ends(served: str) -> None:
    vid = submit(served, {"a.txt": "row\n", "b.txt": "the secret\n", "c.txt": "row 2\n"})
    wait_for(
        lambda: httpx.get(f"{served}/validations/{vid}", headers=ADMIN).json()["status"] == "SUCCEEDED", timeout=60
    )

    messages = read(served, f"/validations/{vid}/events", ADMIN)

    kinds = [m.event for m in messages]
    assert kinds[0] == "status" and messages[0].data["status"] == "RUNNING"
    assert messages[0].retry == 2000
    assert kinds.count("progress") == 3 and kinds.count("result") == 3
    assert kinds[-2:] == ["status", "end"]
    assert messages[-1].data == {"status": "SUCCEEDED"}
    assert messages[-2].data["status"] == "SUCCEEDED"
    ids = [int(m.id or 0) for m in messages[:-1]]
    assert ids == list(range(1, len(ids) + 1))
    results = {m.data["file"]: m.data for m in messages if m.event == "result"}
    assert results["b.txt"]["rules"][0]["passed"] is False
    assert messages[-2].id == messages[-1].id  # `end` repeats the last id: resuming after it just ends
    counts = [m.data["succeeded"] for m in messages if m.event == "progress"]
    assert counts == sorted(counts) and counts[-1] == 3  # counts as of each event: never backwards


def test_resume_with_last_event_id_has_no_gap_and_no_duplicate(
    served: str, aws: Aws, settings: Settings, simulator: SimulatorServer
) -> None:
    set_parallelism(aws, settings, 2)
    simulator.reconfigure(latency_seconds=0.1)
    vid = submit(served, {f"f{i}.txt": lines_document(5) for i in range(8)})

    first = read(served, f"/validations/{vid}/events", ADMIN, limit=5)
    second = read(served, f"/validations/{vid}/events", {**ADMIN, "Last-Event-ID": str(first[-1].id)})
    full = read(served, f"/validations/{vid}/events", ADMIN)

    joined = [(m.id, m.event) for m in first + second]
    assert joined == [(m.id, m.event) for m in full]
    assert second[-1].event == "end"


@pytest.mark.slow(8)
@pytest.mark.stack  # AWS and the API in processes of their own
def test_resume_across_an_api_restart_with_aws_in_its_own_process(simulator: SimulatorServer) -> None:
    simulator.reconfigure(latency_seconds=0.2)
    with embedded_aws_process() as endpoint:
        settings = settings_of(
            aws_endpoint_url=endpoint,
            name_prefix="sse",
            admin_api_key=ADMIN_KEY,
            openai_base_url=simulator.base_url,
            sse_poll_seconds=0.2,
        )
        target_the_simulators_limit(endpoint, settings, simulator)
        api = ThreadedServer(create_app(settings), lifespan="on").start()
        try:
            vid = submit(api.url, {f"f{i}.txt": lines_document(5) for i in range(6)})
            first = read(api.url, f"/validations/{vid}/events", ADMIN, limit=4)
        finally:
            api.stop()
        api = ThreadedServer(create_app(settings), lifespan="on").start()  # a new API process' worth of state
        try:
            second = read(api.url, f"/validations/{vid}/events", {**ADMIN, "Last-Event-ID": str(first[-1].id)})
            full = read(api.url, f"/validations/{vid}/events", ADMIN)
        finally:
            api.stop()

    assert [(m.id, m.event) for m in first + second] == [(m.id, m.event) for m in full]
    assert full[-1].data == {"status": "SUCCEEDED"}


@pytest.mark.slow(6)
def test_two_hundred_viewers_cost_no_more_reads_than_one(
    settings: Settings, hold_calls: Callable[[int], HeldCalls]
) -> None:
    """Viewers of a validation share one feed: its reads do not grow with the viewers."""
    hold_calls(0)  # nothing happens after the first event: the feed's first read is all it has to read
    app = create_app(
        settings.model_copy(update={"sse_poll_seconds": 3600, "cancel_settle_seconds": 0})
    )  # no second poll in this test

    async def watch(url: str, vid: str, viewers: int) -> int:
        """Connect `viewers` viewers; once each has its first event, the feeds open (then all leave)."""
        everyone_in, leave = asyncio.Event(), asyncio.Event()
        arrived = 0

        async def one(client: httpx.AsyncClient) -> None:
            nonlocal arrived
            async with client.stream("GET", f"/validations/{vid}/events") as answer:
                assert answer.status_code == 200
                lines = answer.aiter_lines()  # held: a dropped iterator closes the connection when collected
                async for line in lines:
                    if line.startswith("id:"):
                        break
                arrived += 1
                if arrived == viewers:
                    everyone_in.set()
                await leave.wait()

        async with httpx.AsyncClient(
            base_url=url, headers=ADMIN, timeout=60, limits=httpx.Limits(max_connections=viewers + 5)
        ) as client:
            watching = asyncio.gather(*(one(client) for _ in range(viewers)))
            await asyncio.wait_for(everyone_in.wait(), timeout=120)
            feeds = app.state.hub.open_feeds
            leave.set()
            await watching
        return int(feeds)

    def reads() -> int:
        return int(app.state.hub.store.reads)

    with serving(app) as url:
        vid = submit(url, {"a.txt": lines_document(200)})
        counts: dict[int, tuple[int, int]] = {}
        for viewers in (1, 200):
            before = reads()
            feeds = asyncio.run(watch(url, vid, viewers))
            counts[viewers] = (feeds, reads() - before)
            wait_for(lambda: app.state.hub.open_feeds == 0, what="the feed to close when its viewers leave")
        httpx.delete(f"{url}/validations/{vid}", headers=ADMIN)

    assert counts == {1: (1, 1), 200: (1, 1)}  # one feed, one read: a read per poll, whatever the viewers


def test_a_cancelled_validations_stream_ends_with_cancelled(
    served: str, hold_calls: Callable[[int], HeldCalls]
) -> None:
    held = hold_calls(1)  # one part answers; the others wait, so the validation is mid-run when cancelled
    vid = submit(served, {"long.txt": lines_document(200)})
    wait_for(
        lambda: httpx.get(f"{served}/validations/{vid}", headers=ADMIN).json()["progress"]["succeeded"] >= 1, timeout=60
    )

    assert httpx.delete(f"{served}/validations/{vid}", headers=ADMIN).status_code == 202
    held.release()
    # DELETE answered CANCELLING at once (cancel_settle_seconds=0); a read settles it once the execution stopped.
    wait_for(
        lambda: httpx.get(f"{served}/validations/{vid}", headers=ADMIN).json()["status"] == "CANCELLED", timeout=60
    )
    messages = read(served, f"/validations/{vid}/events", ADMIN)

    assert messages[-1].event == "end"
    assert messages[-1].data == {"status": "CANCELLED"}


def test_stream_authorization_and_bad_last_event_id(served: str) -> None:
    vid = submit(served, {"a.txt": "row\n"})
    assert httpx.get(f"{served}/validations/{vid}/events", headers={**ADMIN, "Last-Event-ID": "abc"}).status_code == 400
    assert httpx.get(f"{served}/validations/{vid}/events").status_code == 401
    user = httpx.post(f"{served}/admin/users", json={"user_id": "sse-viewer"}, headers=ADMIN).json()
    other = httpx.get(f"{served}/validations/{vid}/events", headers={"Authorization": f"Bearer {user['api_key']}"})
    assert other.status_code == 404

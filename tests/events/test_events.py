"""Server-sent events: replay, resume without gaps or duplicates, shared readers, cancel."""

from __future__ import annotations

import asyncio
from typing import Iterator

import httpx
import pytest

from app.main import create_app
from local.serving import ThreadedServer
from app.settings import Settings
from tests.conftest import ADMIN, lines_document, set_parallelism, wait_for
from tests.events.sse import read
from tests.servers import embedded_aws_process

RULES = ['must not contain "secret"']


@pytest.fixture
def served_app(settings):
    return create_app(settings.model_copy(update={"sse_poll_seconds": 0.2, "sse_heartbeat_seconds": 1}))


@pytest.fixture
def served(served_app) -> Iterator[str]:
    """The API over real HTTP (streams need a real server), stopped after the test."""
    server = ThreadedServer(served_app, lifespan="on").start()
    try:
        yield server.url
    finally:
        server.stop()


def submit(base: str, documents: dict[str, str], headers: dict[str, str] = ADMIN) -> str:
    answer = httpx.post(f"{base}/validations", json={"documents": [{"name": n, "content": c} for n, c in documents.items()], "rules": RULES}, headers=headers, timeout=60)
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def test_a_finished_validation_replays_its_events_and_ends(served):
    vid = submit(served, {"a.txt": "row\n", "b.txt": "the secret\n", "c.txt": "row 2\n"})
    wait_for(lambda: httpx.get(f"{served}/validations/{vid}", headers=ADMIN).json()["status"] == "SUCCEEDED", timeout=60)

    messages = read(served, f"/validations/{vid}/events", ADMIN)

    kinds = [m.event for m in messages]
    assert kinds[0] == "status" and messages[0].data["status"] == "RUNNING"
    assert messages[0].retry == 2000
    assert kinds.count("progress") == 3 and kinds.count("result") == 3
    assert kinds[-2:] == ["status", "end"]
    assert messages[-1].data == {"status": "SUCCEEDED"}
    assert messages[-2].data["status"] == "SUCCEEDED"
    ids = [int(m.id) for m in messages[:-1]]
    assert ids == list(range(1, len(ids) + 1))
    results = {m.data["file"]: m.data for m in messages if m.event == "result"}
    assert results["b.txt"]["rules"][0]["passed"] is False
    assert messages[-2].id == messages[-1].id  # `end` repeats the last id: resuming after it just ends
    counts = [m.data["succeeded"] for m in messages if m.event == "progress"]
    assert counts == sorted(counts) and counts[-1] == 3  # counts as of each event: never backwards


def test_resume_with_last_event_id_has_no_gap_and_no_duplicate(served, aws, settings, simulator):
    set_parallelism(aws, settings, 2)
    simulator.reconfigure(latency_seconds=0.1)
    vid = submit(served, {f"f{i}.txt": lines_document(5) for i in range(8)})

    first = read(served, f"/validations/{vid}/events", ADMIN, limit=5)
    second = read(served, f"/validations/{vid}/events", {**ADMIN, "Last-Event-ID": first[-1].id})
    full = read(served, f"/validations/{vid}/events", ADMIN)

    joined = [(m.id, m.event) for m in first + second]
    assert joined == [(m.id, m.event) for m in full]
    assert second[-1].event == "end"


def test_resume_across_an_api_restart_with_aws_in_its_own_process(simulator):
    simulator.reconfigure(latency_seconds=0.2)
    with embedded_aws_process() as endpoint:
        settings = Settings(_env_file=None, aws_endpoint_url=endpoint, name_prefix="sse", admin_api_key="admin-test-key",
                            openai_base_url=simulator.base_url, sse_poll_seconds=0.2)
        api = ThreadedServer(create_app(settings), lifespan="on").start()
        try:
            vid = submit(api.url, {f"f{i}.txt": lines_document(5) for i in range(6)})
            first = read(api.url, f"/validations/{vid}/events", ADMIN, limit=4)
        finally:
            api.stop()
        api = ThreadedServer(create_app(settings), lifespan="on").start()  # a new API process' worth of state
        try:
            second = read(api.url, f"/validations/{vid}/events", {**ADMIN, "Last-Event-ID": first[-1].id})
            full = read(api.url, f"/validations/{vid}/events", ADMIN)
        finally:
            api.stop()

    assert [(m.id, m.event) for m in first + second] == [(m.id, m.event) for m in full]
    assert full[-1].data == {"status": "SUCCEEDED"}


def test_two_hundred_viewers_cost_no_more_reads_than_one(served, served_app, aws, settings, simulator):
    set_parallelism(aws, settings, 1)
    simulator.reconfigure(latency_seconds=0.3)

    async def watch(vid: str, viewers: int, seconds: float) -> int:
        async with httpx.AsyncClient(base_url=served, headers=ADMIN, timeout=60, limits=httpx.Limits(max_connections=viewers + 5)) as client:
            async def one() -> int:
                count = 0
                async with client.stream("GET", f"/validations/{vid}/events") as answer:
                    assert answer.status_code == 200
                    lines = answer.aiter_lines()
                    try:
                        async with asyncio.timeout(seconds):
                            async for line in lines:
                                count += line.startswith("id:")
                    except TimeoutError:
                        pass
                return count

            counts = await asyncio.gather(*(one() for _ in range(viewers)))
            return min(counts)

    def reads() -> int:
        return served_app.state.hub.store.reads

    vid_one = submit(served, {"a.txt": lines_document(200)})
    before = reads()
    got_one = asyncio.run(watch(vid_one, 1, 6.0))
    reads_one = reads() - before

    vid_many = submit(served, {"b.txt": lines_document(200)})
    before = reads()
    got_many = asyncio.run(watch(vid_many, 200, 6.0))
    reads_many = reads() - before

    assert got_one > 0 and got_many > 0  # every viewer saw events
    assert reads_many <= 2 * reads_one, (reads_one, reads_many)
    wait_for(lambda: served_app.state.hub.open_feeds == 0, what="feeds to close when viewers leave")


def test_a_cancelled_validations_stream_ends_with_cancelled(served, aws, settings, simulator):
    set_parallelism(aws, settings, 1)
    simulator.reconfigure(latency_seconds=0.3)
    vid = submit(served, {"long.txt": lines_document(200)})
    wait_for(lambda: httpx.get(f"{served}/validations/{vid}", headers=ADMIN).json()["progress"]["succeeded"] >= 1, timeout=60)

    assert httpx.delete(f"{served}/validations/{vid}", headers=ADMIN).status_code == 202
    messages = read(served, f"/validations/{vid}/events", ADMIN)

    assert messages[-1].event == "end"
    assert messages[-1].data == {"status": "CANCELLED"}


def test_stream_authorization_and_bad_last_event_id(served):
    vid = submit(served, {"a.txt": "row\n"})
    assert httpx.get(f"{served}/validations/{vid}/events", headers={**ADMIN, "Last-Event-ID": "abc"}).status_code == 400
    assert httpx.get(f"{served}/validations/{vid}/events").status_code == 401
    user = httpx.post(f"{served}/admin/users", json={"user_id": "sse-viewer"}, headers=ADMIN).json()
    other = httpx.get(f"{served}/validations/{vid}/events", headers={"Authorization": f"Bearer {user['api_key']}"})
    assert other.status_code == 404

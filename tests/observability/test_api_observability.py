"""app/observability: log lines, the per-request middleware, the state gauges. A small app
stands in for the API here; tests/e2e/test_operable.py runs the real one as a process."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sse_starlette import EventSourceResponse

from app.observability import install, logs
from app.observability.metrics import ApiMetrics, listening
from app.observability.state import Queue, Snapshot, families, queue_of
from core.clock import epoch_of


@pytest.fixture
def app() -> Iterator[tuple[TestClient, ApiMetrics, list[dict[str, Any]]]]:
    """A small app with the middleware; yields its client, metrics and the log lines its handler wrote."""
    api = FastAPI()
    metrics = install(api)
    seen: list[dict[str, Any]] = []
    log = logging.getLogger("app.tests")

    @api.get("/validations/{validation_id}")
    async def one(validation_id: str) -> dict[str, str]:
        log.info("read %s", validation_id)
        seen.append(logs.bound())
        return {"id": validation_id}

    @api.get("/validations/{validation_id}/events")
    async def events(validation_id: str) -> EventSourceResponse:
        async def stream() -> AsyncIterator[dict[str, str]]:
            seen.append({"open_streams": metrics.registry.get_sample_value("sse_open_streams")})
            yield {"event": "end", "data": "{}"}

        return EventSourceResponse(stream())

    with TestClient(api) as client:
        yield client, metrics, seen


def test_a_usable_request_id_is_echoed_and_bound_to_the_requests_log_lines(app: Any) -> None:
    client, _, seen = app
    answer = client.get("/validations/v42", headers={"X-Request-ID": "client-7:a"})
    assert answer.headers["X-Request-ID"] == "client-7:a"
    assert seen == [{"request_id": "client-7:a", "validation_id": "v42"}]


@pytest.mark.parametrize("given", [None, "", "has space", 'quote"d', "x" * 129])
def test_a_missing_or_unusable_request_id_is_replaced_by_a_new_one(app: Any, given: str | None) -> None:
    client, _, seen = app
    first = client.get("/validations/a", headers={"X-Request-ID": given} if given is not None else {})
    second = client.get("/validations/a", headers={"X-Request-ID": given} if given is not None else {})
    ids = [first.headers["X-Request-ID"], second.headers["X-Request-ID"]]
    assert ids[0] != ids[1] and given not in ids and all(len(i) == 32 for i in ids)
    assert [s["request_id"] for s in seen] == ids


def test_requests_are_counted_by_route_template_never_by_raw_path(app: Any) -> None:
    client, metrics, _ = app
    for vid in ("a", "b", "c"):
        client.get(f"/validations/{vid}")
    client.get("/nowhere/1")
    client.post("/validations/a")  # the path exists, the method does not
    value = metrics.registry.get_sample_value
    assert (
        value("http_requests_total", {"method": "GET", "route": "/validations/{validation_id}", "status": "200"}) == 3
    )
    assert value("http_requests_total", {"method": "GET", "route": "<unmatched>", "status": "404"}) == 1
    assert (
        value("http_requests_total", {"method": "POST", "route": "/validations/{validation_id}", "status": "405"}) == 1
    )
    assert value("http_request_duration_seconds_count", {"method": "GET", "route": "/validations/{validation_id}"}) == 3
    assert not [s for f in metrics.registry.collect() for s in f.samples if "/validations/a" in s.labels.values()]


def test_an_open_event_stream_is_counted_until_it_ends(app: Any) -> None:
    client, metrics, seen = app
    with client.stream("GET", "/validations/v1/events") as answer:
        assert "event: end" in answer.read().decode()
    assert seen == [{"open_streams": 1.0}]
    assert metrics.registry.get_sample_value("sse_open_streams") == 0


def test_the_listener_serves_its_registry_until_its_block_ends() -> None:
    metrics = ApiMetrics()
    metrics.open_streams.set(3)
    with listening(metrics.registry, "127.0.0.1", 0) as port:
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert scraped.status_code == 200
    assert "sse_open_streams 3.0" in scraped.text.splitlines()
    with pytest.raises(httpx.ConnectError):  # closed with the block, not left serving
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)


def _format(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    logs.AccessFields().filter(record)  # the handler's filter (logs.logging_config)
    return formatter.format(record)


def test_json_lines_carry_the_bound_ids_and_uvicorns_access_fields() -> None:
    logs.bind(request_id="r-1", validation_id="v-1")
    try:
        access = logging.LogRecord(
            "uvicorn.access",
            logging.INFO,
            "h.py",
            1,
            '%s - "%s %s HTTP/%s" %d',
            ("1.2.3.4:5", "GET", "/x", "1.1", 200),
            None,
        )
        line = json.loads(_format(logs.JsonFormatter(), access))
    finally:
        logs.clear()
    assert line["message"] == '1.2.3.4:5 - "GET /x HTTP/1.1" 200'
    assert (line["level"], line["name"], line["service"]) == ("INFO", "uvicorn.access", "api")
    assert (line["request_id"], line["validation_id"]) == ("r-1", "v-1")
    assert (line["http_method"], line["path"], line["status"]) == ("GET", "/x", 200)
    assert line["timestamp"].endswith("+00:00")


def test_text_lines_end_with_the_bound_ids() -> None:
    logs.bind(request_id="r-2")
    try:
        record = logging.LogRecord("app.x", logging.WARNING, "x.py", 1, "slow %s", ("read",), None)
        line = _format(logs.TextFormatter(), record)
    finally:
        logs.clear()
    assert line.endswith("WARNING app.x: slow read [request_id=r-2]")


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_auto_is_json_unless_stderr_is_a_terminal() -> None:
    assert logs.resolve("auto", _Stream(tty=False)) == "json"
    assert logs.resolve("auto", _Stream(tty=True)) == "text"
    assert logs.resolve("json", _Stream(tty=True)) == "json"


def test_the_queue_is_its_depth_and_its_oldest_entry() -> None:
    now = epoch_of("2026-01-01T00:10:00.000Z")
    keys = ["2026-01-01T00:09:00.000Z#b", "2026-01-01T00:00:00.000Z#a", "2026-01-01T00:09:59.500Z#c"]
    assert queue_of(keys, now) == Queue(3, 600.0)
    assert queue_of([], now) == Queue(0, 0.0)


def test_a_state_read_that_failed_leaves_its_gauges_out_rather_than_at_zero() -> None:
    governor = {
        "window_seconds": 60.0,
        "calls_in_flight": 3,
        "models": {
            "gpt-a": {"tokens_per_window": 45000, "tokens_last_window": 1200, "factor": 0.8},
            "gpt-b": {"tokens_per_window": 9000, "tokens_last_window": 0, "factor": 1.0},
        },
    }
    shown = {
        (s.name, s.labels.get("model")): s.value for f in families(Snapshot(None, None, governor)) for s in f.samples
    }
    assert shown == {  # one budget per model
        ("governor_tokens_per_window", "gpt-a"): 45000,
        ("governor_tokens_per_window", "gpt-b"): 9000,
        ("governor_tokens_used_last_window", "gpt-a"): 1200,
        ("governor_tokens_used_last_window", "gpt-b"): 0,
        ("governor_rate_factor", "gpt-a"): 0.8,
        ("governor_rate_factor", "gpt-b"): 1.0,
        ("governor_calls_in_flight", None): 3,
        ("governor_window_seconds", None): 60.0,
    }
    counts = {"QUEUED": 2, "RUNNING": 1, "CANCELLING": 0}
    by_status = {
        (s.name, s.labels.get("status")): s.value
        for f in families(Snapshot(counts, Queue(2, 30.0), None))
        for s in f.samples
    }
    assert by_status == {
        ("validations", "QUEUED"): 2,
        ("validations", "RUNNING"): 1,
        ("validations", "CANCELLING"): 0,
        ("validation_queue_depth", None): 2,
        ("validation_queue_oldest_age_seconds", None): 30.0,
    }

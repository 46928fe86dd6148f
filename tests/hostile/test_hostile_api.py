"""The API against a hostile client, over real HTTP (one server for the module: streams need one).

Forged cursors, reserved ids, bidi and unnormalized file names, deep JSON, stream caps, a
stream outliving its key, anonymous readiness, failed-auth throttling, injected AWS
faults, and a sweep of every route with malformed input: never a 5xx but the injected ones.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from fastapi import FastAPI

from app.health.readiness import Readiness
from app.main import create_app
from app.settings import Settings
from local.aws.server import EmbeddedAWS
from local.serving import ThreadedServer
from local.simulator.app import SimulatorConfig
from local.simulator.server import SimulatorServer
from tests.events.sse import Message, parse
from tests.support.stack import ADMIN, local_settings

pytestmark = pytest.mark.xdist_group("hostile-api")  # one server for the module, on one worker

DOC = {"documents": [{"name": "a.txt", "content": "row 1\nrow 2\n"}], "rules": ["be tidy"]}


@dataclass
class Served:
    url: str
    app: FastAPI
    settings: Settings
    estimate: int  # tokens DOC is charged
    finished: str  # a validation of the bootstrap admin that has ended

    def client(self, headers: dict[str, str] | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=headers if headers is not None else ADMIN, timeout=60)


@pytest.fixture(scope="module")
def served(embedded_aws: EmbeddedAWS) -> Iterator[Served]:
    with SimulatorServer(SimulatorConfig(latency_seconds=0.01)) as simulator:
        settings = local_settings(
            embedded_aws.endpoint_url,
            simulator,
            "h",
            sfn_retry_max_attempts=2,
            cancel_settle_seconds=0,
            max_streams=2,
            auth_failures_per_minute=3,
            sse_poll_seconds=0.2,
            sse_heartbeat_seconds=1,
            readiness_cache_seconds=3600,  # cached for the whole module: the tests count calls, not time
        )
        app = create_app(settings)
        server = ThreadedServer(app, lifespan="on").start()
        try:
            with httpx.Client(base_url=server.url, headers=ADMIN, timeout=60) as admin:
                first = admin.post("/validations", json=DOC)
                assert first.status_code == 202, first.text
            yield Served(server.url, app, settings, first.json()["estimated_tokens"], first.json()["id"])
        finally:
            server.stop()


def assert_problem(answer: httpx.Response, status: int, **members: Any) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    for name, value in members.items():
        assert body[name] == value, body
    return body


def cursor_of(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def new_user(api: httpx.Client, **fields: Any) -> tuple[str, dict[str, str]]:
    user_id = f"u{uuid.uuid4().hex[:8]}"
    answer = api.post("/admin/users", json={"user_id": user_id, **fields})
    assert answer.status_code == 201, answer.text
    return user_id, {"Authorization": f"Bearer {answer.json()['api_key']}"}


@contextmanager
def queued_validation(served: Served) -> Iterator[tuple[str, dict[str, str], str]]:
    """A user whose second validation waits in the queue (its bucket holds one DOC; it refills
    a token a minute), so its event stream stays open; cancelled at the end."""
    with served.client() as admin:
        user_id, auth = new_user(
            admin,
            quota={"capacity_tokens": served.estimate, "refill_tokens_per_minute": 1, "max_running": 5},
            on_limit="queue",
        )
        ids = [admin.post("/validations", json=DOC, headers=auth).json()["id"] for _ in range(2)]
        assert admin.get(f"/validations/{ids[1]}").json()["status"] == "QUEUED"
        try:
            yield user_id, auth, ids[1]
        finally:
            for vid in ids:
                admin.delete(f"/validations/{vid}")


@pytest.mark.slow(4)  # the first test of the module: it starts the module's server
def test_forged_cursors_are_400_naming_cursor(served: Served) -> None:
    deep = base64.urlsafe_b64encode(b"[" * 1200 + b"]" * 1200).decode()[:2048]
    forged = {
        "/validations": [
            cursor_of({"owner": "admin", "x": 1}),  # the probe
            cursor_of({"id": "v", "owner": "someone-else", "created_at": "2025-01-01T00:00:00.000Z"}),
            cursor_of({"id": {"S": "v"}, "owner": "admin", "created_at": "x"}),
            deep,
            "%%%not-base64",
        ],
        "/admin/audit": [cursor_of({"stream": "other", "at": "x"}), cursor_of(["stream", "at"]), deep],
        f"/validations/{served.finished}/results": [cursor_of(True), cursor_of(-1), cursor_of(10**9), deep],
        f"/validations/{served.finished}/history": [cursor_of({"token": 1}), cursor_of(""), deep],
    }
    with served.client() as admin:
        for path, cursors in forged.items():
            for cursor in cursors:
                assert_problem(admin.get(path, params={"cursor": cursor}), 400, field="cursor")


def test_reserved_user_ids_are_422(served: Served) -> None:
    with served.client() as admin:
        for user_id in ("admin", "ADMIN", "Admin"):
            body = assert_problem(admin.post("/admin/users", json={"user_id": user_id}), 422)
            assert body["errors"][0]["field"] == "body.user_id"
            assert "reserved" in body["detail"]


def test_file_names_are_nfc_and_free_of_control_and_bidi_characters(served: Served) -> None:
    def submit(*names: str) -> httpx.Response:
        documents = [{"name": n, "content": "row\n"} for n in names]
        return admin.post("/validations", json={"documents": documents, "rules": ["be tidy"]})

    with served.client() as admin:
        for name in ("invoice\u202egpj.txt", "a\u200bb.txt", "tab\tname.txt", "line\u2028break.txt"):
            body = assert_problem(submit(name), 422, field="files[0]")
            assert body["file"] == ascii(name)[1:-1]  # echoed escaped: the override stays inert
        duplicate = assert_problem(submit("caf\u00e9.txt", "cafe\u0301.txt"), 422, field="files")
        assert duplicate["file"] == "caf\u00e9.txt"
        accepted = submit("cafe\u0301.txt")
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["files"][0]["name"] == "caf\u00e9.txt"  # stored NFC


def test_deep_or_bloated_json_is_400_and_a_big_admin_body_413(served: Served) -> None:
    with served.client() as admin:
        deep = b'{"documents": ' + b"[" * 5000 + b"]" * 5000 + b', "rules": []}'
        bomb = b'{"documents": [' + b"[]," * 50_000 + b'[]], "rules": []}'
        for body in (deep, bomb):
            sent = admin.post("/validations", content=body, headers={"Content-Type": "application/json"})
            assert_problem(sent, 400)
        deep_admin = b'{"user_id": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"  # within max_body_bytes
        assert_problem(
            admin.post("/admin/users", content=deep_admin, headers={"Content-Type": "application/json"}), 400
        )
        big = json.dumps({"user_id": "x" * 70_000}).encode()
        assert_problem(
            admin.post("/admin/users", content=big, headers={"Content-Type": "application/json"}),
            413,
            limit="max_body_bytes",
        )


def test_a_batch_over_the_capacity_is_refused_from_its_bytes_before_tokenizing(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core import parts, planning

    calls: list[str] = []
    split_file = parts.split_file

    def counted(*args: Any) -> Any:
        calls.append(threading.current_thread().name)
        return split_file(*args)

    monkeypatch.setattr(planning, "split_file", counted)
    with served.client() as admin:
        _, auth = new_user(admin, quota={"capacity_tokens": 50_000, "refill_tokens_per_minute": 1, "max_running": 5})
        lines = {"documents": [{"name": f"f{i}.txt", "content": "a\n" * 20_000} for i in range(2)], "rules": ["t"]}

        refused = admin.post("/validations", json=lines, headers=auth)

        body = assert_problem(refused, 422, limit="capacity_tokens", limit_value=50_000)
        assert "at least" in body["detail"] and body["cost"] > 50_000
        assert calls == []  # not one file was split or tokenized
        assert admin.post("/validations", json=DOC, headers=auth).status_code == 202
        assert len(calls) == 1 and calls[0] != "uvicorn"  # tokenized on a worker thread, not the event loop


def test_a_user_may_hold_max_streams_open_and_the_next_is_429(served: Served) -> None:
    with queued_validation(served) as (_, auth, vid), served.client(auth) as user, ExitStack() as streams:
        for _ in range(served.settings.max_streams):
            opened = streams.enter_context(user.stream("GET", f"/validations/{vid}/events"))
            assert opened.status_code == 200

        refused = user.get(f"/validations/{vid}/events")

        body = assert_problem(refused, 429, limit="max_streams", limit_value=served.settings.max_streams)
        assert int(refused.headers["retry-after"]) > 0
        assert body["detail"]


def follow_until_closed(
    served: Served, auth: dict[str, str], vid: str, change: Callable[[], Any]
) -> tuple[list[str], int]:
    """Open a stream, make `change` after its first event, read until the server closes it:
    (the events seen, the feed's polls between the change and the close)."""
    events: list[str] = []
    heartbeats = polls_at_change = 0
    feed = None
    with served.client(auth) as user, user.stream("GET", f"/validations/{vid}/events") as stream:
        assert stream.status_code == 200
        for item in parse(stream.iter_lines()):
            if isinstance(item, Message):
                events.append(item.event)
                if len(events) == 1:
                    feed = served.app.state.hub.feed(vid)
                    change()
                    polls_at_change = feed.polls
            else:
                heartbeats += 1
                assert heartbeats < 10, "the stream outlived the change by many heartbeats"
    assert feed is not None
    return events, feed.polls - polls_at_change


def test_a_stream_closes_within_a_poll_after_its_key_is_rotated_or_its_user_disabled(served: Served) -> None:
    with queued_validation(served) as (user_id, auth, vid), served.client() as admin:
        rotated: list[str] = []

        def rotate() -> None:
            answer = admin.post(f"/admin/users/{user_id}/keys")
            assert answer.status_code == 201
            rotated.append(answer.json()["api_key"])

        events, polls = follow_until_closed(served, auth, vid, rotate)
        assert events == ["status"]  # closed by the server, without `end`
        assert polls <= 2  # the poll after the change (or the one in flight) closed it
        assert_problem(httpx.get(f"{served.url}/validations/{vid}/events", headers=auth), 401)

        def disable() -> None:
            assert admin.patch(f"/admin/users/{user_id}", json={"disabled": True}).status_code == 200

        events, polls = follow_until_closed(served, {"Authorization": f"Bearer {rotated[0]}"}, vid, disable)
        assert events == ["status"]
        assert polls <= 2
    assert served.app.state.streams.open == 0


def test_readyz_tells_anonymous_callers_only_its_status_and_caches_its_aws_calls(served: Served) -> None:
    app = served.app
    app.state.readiness = Readiness(app.state.clients, app.state.settings)  # a fresh cache for this count
    clients = app.state.clients
    calls: list[str] = []

    def count(event_name: str, **_: Any) -> None:
        calls.append(event_name)

    for client in (clients.dynamodb, clients.s3, clients.sfn, clients.ssm):
        client.meta.events.register("before-call", count, unique_id="readyz-count")
    try:
        anonymous = [httpx.get(f"{served.url}/readyz") for _ in range(5)]
        detailed = httpx.get(f"{served.url}/readyz", headers=ADMIN)
    finally:
        for client in (clients.dynamodb, clients.s3, clients.sfn, clients.ssm):
            client.meta.events.unregister("before-call", unique_id="readyz-count")

    assert [a.json() for a in anonymous] == [{"status": "ready"}] * 5
    assert detailed.json()["checks"] == {"dynamodb": "ok", "s3": "ok", "stepfunctions": "ok", "ssm": "ok"}
    assert len(calls) == 4  # one round of four calls for six probes
    assert app.state.readiness.probes == 1


def test_bad_keys_from_one_address_are_throttled_429_for_that_address_only(served: Served) -> None:
    limit = served.settings.auth_failures_per_minute
    attacker = {"X-Forwarded-For": "198.51.100.23"}  # uvicorn trusts it from loopback

    answers = [
        httpx.get(f"{served.url}/validations", headers={**attacker, "Authorization": f"Bearer vk_guess{i}"})
        for i in range(limit + 2)
    ]

    assert [a.status_code for a in answers] == [401] * limit + [429, 429]
    throttled = assert_problem(answers[-1], 429, limit="auth_failures_per_minute", limit_value=limit)
    assert 0 < int(answers[-1].headers["retry-after"]) <= 61 and throttled["retry_after"]
    # Even the right key is refused from that address for now; other addresses are not affected.
    assert httpx.get(f"{served.url}/validations", headers={**attacker, **ADMIN}).status_code == 429
    assert httpx.get(f"{served.url}/validations", headers={"X-Forwarded-For": "198.51.100.24", **ADMIN}).is_success


def aws_fault(code: str, status: int) -> Callable[..., Any]:
    async def fail(**_: Any) -> Any:
        raise ClientError(
            {
                "Error": {"Code": code, "Message": "arn:aws:dynamodb:us-east-1:123456789012:table/x"},
                "ResponseMetadata": {"HTTPStatusCode": status},
            },
            "GetItem",
        )

    return fail


def test_injected_aws_faults_are_503_or_502_problems_in_auth_reads_and_writes(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    with served.client() as admin:
        user_id, auth = new_user(admin)
    db = served.app.state.clients.dynamodb

    monkeypatch.setattr(db, "get_item", aws_fault("ProvisionedThroughputExceededException", 400))
    for path, headers in ((f"/validations/{served.finished}", ADMIN), ("/validations", auth)):  # a read; auth
        body = assert_problem(httpx.get(served.url + path, headers=headers), 503)
        assert "123456789012" not in json.dumps(body) and body["error_id"]
    monkeypatch.setattr(db, "get_item", aws_fault("AccessDeniedException", 400))
    assert_problem(httpx.patch(f"{served.url}/admin/users/{user_id}", json={"disabled": True}, headers=ADMIN), 502)
    monkeypatch.undo()
    monkeypatch.setattr(db, "update_item", aws_fault("InternalServerError", 500))
    answer = httpx.patch(f"{served.url}/admin/users/{user_id}", json={"disabled": True}, headers=ADMIN)
    assert_problem(answer, 503)
    assert answer.headers["retry-after"] == "1"


def hostile_variants(template: str, method: str, served: Served) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, request kwargs) for a route: malformed headers, ids, cursors and bodies."""
    vid = served.finished if template.endswith("/events") else "no-such-id"
    path = template.replace("{validation_id}", vid).replace("{user_id}", "nobody")
    fresh = {"X-Forwarded-For": f"192.0.2.{uuid.uuid4().int % 250}"}  # bad keys, each from its own address
    yield path, {"headers": {}}
    yield path, {"headers": {**fresh, "Authorization": "Bearer " + "x" * 5000}}
    yield path, {"headers": {**fresh, "Authorization": "Basic Zm9vOmJhcg=="}}
    if "{" in template:
        for bad in ("..%2F..%2Fetc", "%00", "a" * 300):
            yield template.replace("{validation_id}", bad).replace("{user_id}", bad), {"headers": ADMIN}
    yield path, {"headers": ADMIN, "params": {"cursor": cursor_of({"owner": "admin", "x": 1}), "limit": "-1"}}
    bad_headers = {**ADMIN, "Last-Event-ID": "1" * 40, "Idempotency-Key": "k" * 300}
    yield path, {"headers": bad_headers, "params": {"after": "x"}}
    if method in ("POST", "PATCH", "PUT"):
        json_type = {**ADMIN, "Content-Type": "application/json"}
        yield path, {"headers": json_type, "content": b"[" * 3000 + b"]" * 3000}
        yield path, {"headers": json_type, "content": b'{"a": "\\ud800"}'}
        yield path, {"headers": json_type, "content": b"\xff\xfe garbage"}
        yield path, {"headers": {**ADMIN, "Content-Type": "multipart/form-data; boundary=x"}, "content": b"--x\r\n"}


@pytest.mark.slow(7)
def test_every_route_survives_hostile_requests_without_a_5xx(served: Served) -> None:
    routes = [(t, m.upper()) for t, operations in served.app.openapi()["paths"].items() for m in operations]
    failures, sent = [], 0
    with httpx.Client(base_url=served.url, timeout=60) as client:
        for template, method in routes:
            for path, kwargs in hostile_variants(template, method, served):
                answer = client.request(method, path, **kwargs)
                sent += 1
                if answer.status_code >= 500 or (
                    answer.status_code >= 400 and answer.headers["content-type"] != "application/problem+json"
                ):
                    failures.append((method, path, kwargs.get("params"), answer.status_code, answer.text[:200]))

    assert len(routes) >= 15 and sent > 100
    assert failures == []

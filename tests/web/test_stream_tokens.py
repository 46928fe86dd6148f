"""Browser-safe stream auth over real HTTP (one server for the module): a stream token opens its
validation's events and nothing else, expires, is revoked with its key, is stored only hashed and
never reaches a log line; and the two routes the page adds (`GET /me`, `GET /admin/users`)."""

from __future__ import annotations

import calendar
import hashlib
import io
import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from app.main import create_app
from app.observability.logs import AccessFields, JsonFormatter, TextFormatter, redact
from app.settings import Settings
from app.stream_tokens.records import StreamToken
from app.stream_tokens.service import events_validation, token_in
from local.aws.server import EmbeddedAWS
from local.serving import ThreadedServer
from local.simulator.app import SimulatorConfig
from local.simulator.server import SimulatorServer
from tests.events.sse import Message, parse, read
from tests.support.stack import ADMIN, Aws, local_settings, wait_for

pytestmark = pytest.mark.xdist_group("stream-tokens")  # one server for the module, on one worker

DOC = {"documents": [{"name": "a.txt", "content": "row 1\nthe secret\n"}], "rules": ['must not contain "secret"']}


@dataclass
class Served:
    url: str
    app: FastAPI
    settings: Settings
    aws: Aws
    estimate: int  # tokens DOC is charged
    finished: str  # a validation of the bootstrap admin that has ended
    user_id: str  # a user of the module's
    user: dict[str, str]  # its Authorization header
    owned: str  # a validation of that user's that has ended

    def client(self, headers: dict[str, str] | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=headers if headers is not None else ADMIN, timeout=60)


@pytest.fixture(scope="module")
def served(embedded_aws: EmbeddedAWS) -> Iterator[Served]:
    with SimulatorServer(SimulatorConfig(latency_seconds=0.01)) as simulator:
        settings = local_settings(
            embedded_aws.endpoint_url,
            simulator,
            "s",
            sfn_retry_max_attempts=2,
            cancel_settle_seconds=0,
            sse_poll_seconds=0.2,
            sse_heartbeat_seconds=1,
        )
        app = create_app(settings)
        server = ThreadedServer(app, lifespan="on").start()
        try:
            with httpx.Client(base_url=server.url, headers=ADMIN, timeout=60) as admin:
                user_id, user = new_user(admin)
                first, owned = (admin.post("/validations", json=DOC, headers=h) for h in (ADMIN, user))
                assert first.status_code == owned.status_code == 202, first.text
                for each in (first.json()["id"], owned.json()["id"]):
                    wait_for(partial(ended, admin, each), timeout=60)
            yield Served(
                url=server.url,
                app=app,
                settings=settings,
                aws=Aws(embedded_aws.endpoint_url),
                estimate=first.json()["estimated_tokens"],
                finished=first.json()["id"],
                user_id=user_id,
                user=user,
                owned=owned.json()["id"],
            )
        finally:
            server.stop()


def ended(api: httpx.Client, vid: str) -> bool:
    return bool(api.get(f"/validations/{vid}").json()["status"] == "SUCCEEDED")


def new_user(api: httpx.Client, **fields: Any) -> tuple[str, dict[str, str]]:
    user_id = f"u{uuid.uuid4().hex[:8]}"
    answer = api.post("/admin/users", json={"user_id": user_id, **fields})
    assert answer.status_code == 201, answer.text
    return user_id, {"Authorization": f"Bearer {answer.json()['api_key']}"}


def finished_validation(served: Served, auth: dict[str, str]) -> str:
    with served.client(auth) as user:
        vid = str(user.post("/validations", json=DOC).json()["id"])
        wait_for(lambda: user.get(f"/validations/{vid}").json()["status"] == "SUCCEEDED", timeout=60)
    return vid


def token_for(served: Served, vid: str, auth: dict[str, str] = ADMIN) -> dict[str, Any]:
    answer = httpx.post(f"{served.url}/validations/{vid}/stream-token", headers=auth, timeout=30)
    assert answer.status_code == 201, answer.text
    issued: dict[str, Any] = answer.json()
    return issued


def assert_token_refused(answer: httpx.Response) -> None:
    assert answer.status_code == 401, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["field"] == "token"


def test_a_token_opens_its_validations_events_without_a_key_and_resumes_after_an_id(served: Served) -> None:
    auth, vid = served.user, served.owned
    before = time.time()

    answer = httpx.post(f"{served.url}/validations/{vid}/stream-token", headers=auth, timeout=30)

    assert answer.status_code == 201 and answer.headers["cache-control"] == "no-store"
    issued = answer.json()
    assert (
        issued["token"].startswith("st_")
        and issued["events_url"] == f"/validations/{vid}/events?token={issued['token']}"
    )
    lifetime = served.settings.stream_token_seconds
    expires = calendar.timegm(time.strptime(issued["expires_at"], "%Y-%m-%dT%H:%M:%SZ"))
    assert before + lifetime - 2 <= expires <= time.time() + lifetime + 1
    by_key = read(served.url, f"/validations/{vid}/events", auth)
    by_token = read(served.url, issued["events_url"], {})  # no Authorization header: what EventSource sends
    assert [(m.event, m.id, m.data) for m in by_token] == [(m.event, m.id, m.data) for m in by_key]
    assert by_token[-1].event == "end" and by_token[-1].data == {"status": "SUCCEEDED"}
    # The same URL again (EventSource's reconnect) with the page's resume point.
    resumed = read(served.url, issued["events_url"] + f"&after={by_key[1].id}", {})
    assert [m.id for m in resumed] == [m.id for m in by_key[2:]]


def test_the_table_holds_only_the_tokens_hash_scoped_to_validation_user_and_key(served: Served) -> None:
    user_id, auth, vid = served.user_id, served.user, served.owned
    token = token_for(served, vid, auth)["token"]

    item = served.aws.client("dynamodb").get_item(
        TableName=served.settings.table("stream_tokens"),
        Key={"token_hash": {"S": hashlib.sha256(token.encode()).hexdigest()}},
        ConsistentRead=True,
    )["Item"]

    assert item["validation_id"]["S"] == vid and item["user_id"]["S"] == user_id
    assert item["key_hash"]["S"] == hashlib.sha256(auth["Authorization"].split()[1].encode()).hexdigest()
    assert int(item["expires_at"]["N"]) > time.time()  # also the table's TTL attribute
    assert token not in json.dumps(item)


def test_an_unknown_expired_empty_or_foreign_token_is_401_naming_token(served: Served) -> None:
    other = served.owned
    issued = token_for(served, served.finished)
    token = issued["token"]
    url = served.url

    assert_token_refused(httpx.get(f"{url}/validations/{other}/events?token={token}"))  # another validation's
    assert_token_refused(httpx.get(f"{url}/validations/{served.finished}/events?token=st_{'x' * 43}"))
    assert_token_refused(httpx.get(f"{url}/validations/{served.finished}/events?token="))
    assert_token_refused(httpx.get(f"{url}/validations/{served.finished}/events?token={'a' * 5000}"))
    served.aws.client("dynamodb").update_item(
        TableName=served.settings.table("stream_tokens"),
        Key={"token_hash": {"S": hashlib.sha256(token.encode()).hexdigest()}},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 1)}},
    )
    assert_token_refused(httpx.get(url + issued["events_url"]))  # expired (TTL deletes late: the read checks)


def test_a_token_is_accepted_on_the_events_route_only(served: Served) -> None:
    vid = served.finished
    token = token_for(served, vid)["token"]
    with httpx.Client(base_url=served.url, timeout=30) as anonymous:
        for method, path in [
            ("GET", f"/validations/{vid}"),
            ("GET", f"/validations/{vid}/results"),
            ("GET", f"/validations/{vid}/report?format=csv"),
            ("POST", f"/validations/{vid}/stream-token"),
            ("POST", f"/validations/{vid}/retry"),
            ("DELETE", f"/validations/{vid}"),
            ("POST", f"/validations/{vid}/events"),
            ("GET", "/me"),
        ]:
            separator = "&" if "?" in path else "?"
            answer = anonymous.request(method, f"{path}{separator}token={token}")
            assert answer.status_code == 401, (method, path, answer.text)
            assert "field" not in answer.json()  # refused for want of a key: the token was not even read
        # Spelled percent-encoded the name would slip past the access log's redaction: not a token either.
        assert anonymous.get(f"/validations/{vid}/events?%74oken={token}").status_code == 401
        assert anonymous.get(f"/validations/{vid}/events?token={token}").status_code == 200


def test_a_user_gets_no_token_for_another_users_validation(served: Served) -> None:
    _, stranger = new_user(served.client())
    vid = served.owned

    answer = httpx.post(f"{served.url}/validations/{vid}/stream-token", headers=stranger)

    assert answer.status_code == 404 and answer.headers["content-type"] == "application/problem+json"
    assert httpx.post(f"{served.url}/validations/{vid}/stream-token").status_code == 401


def test_rotating_the_key_or_disabling_the_user_revokes_the_token(served: Served) -> None:
    user_id, auth = new_user(served.client())
    vid = finished_validation(served, auth)
    first = token_for(served, vid, auth)
    with served.client() as admin:
        rotated = admin.post(f"/admin/users/{user_id}/keys").json()["api_key"]
        assert_token_refused(httpx.get(served.url + first["events_url"]))
        second = token_for(served, vid, {"Authorization": f"Bearer {rotated}"})
        assert read(served.url, second["events_url"], {})[-1].event == "end"

        assert admin.patch(f"/admin/users/{user_id}", json={"disabled": True}).status_code == 200
        assert_token_refused(httpx.get(served.url + second["events_url"]))


def test_a_stream_opened_with_a_token_closes_within_a_poll_after_its_key_is_rotated(served: Served) -> None:
    with served.client() as admin:
        # The user's bucket holds one DOC and refills a token a minute: its second validation waits
        # QUEUED, so its stream stays open.
        user_id, auth = new_user(
            admin, quota={"capacity_tokens": served.estimate, "refill_tokens_per_minute": 1, "max_running": 5}
        )
        ids = [admin.post("/validations", json=DOC, headers=auth).json()["id"] for _ in range(2)]
        vid = ids[1]
        try:
            assert admin.get(f"/validations/{vid}").json()["status"] == "QUEUED"
            url = served.url + token_for(served, vid, auth)["events_url"]
            events: list[str] = []
            polls = 0
            with httpx.stream("GET", url, timeout=60) as stream:
                assert stream.status_code == 200
                heartbeats = 0
                for item in parse(stream.iter_lines()):
                    if isinstance(item, Message):
                        events.append(item.event)
                        feed = served.app.state.hub.feed(vid)
                        assert admin.post(f"/admin/users/{user_id}/keys").status_code == 201
                        polls = feed.polls
                    else:
                        heartbeats += 1
                        assert heartbeats < 10, "the stream outlived the rotation by many heartbeats"
            assert events == ["status"]  # closed by the server, without `end`
            assert feed.polls - polls <= 2  # the poll after the rotation (or the one in flight) closed it
        finally:
            for each in ids:
                admin.delete(f"/validations/{each}")
    assert served.app.state.streams.open == 0


def test_me_answers_who_holds_the_key(served: Served) -> None:
    with served.client() as admin:
        user_id, auth = new_user(admin, role="admin")
        assert admin.get("/me").json() == {"user_id": "admin", "role": "admin", "quota": None, "on_limit": "queue"}
    me = httpx.get(f"{served.url}/me", headers=auth).json()
    assert me["user_id"] == user_id and me["role"] == "admin" and me["quota"]["capacity_tokens"] > 0
    assert httpx.get(f"{served.url}/me").status_code == 401


def test_admins_list_users_a_page_at_a_time(served: Served) -> None:
    with served.client() as admin:
        created = {new_user(admin)[0] for _ in range(3)}
        listed: list[dict[str, Any]] = []
        cursor = None
        pages = 0
        while True:
            page = admin.get("/admin/users", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
            assert len(page["items"]) <= 2
            listed += page["items"]
            pages += 1
            cursor = page["next_cursor"]
            if not cursor:
                break
        names = [u["user_id"] for u in listed]
        assert created <= set(names) and len(names) == len(set(names)) and pages >= 2
        assert all("api_key" not in u and "key_hash" not in u for u in listed)
        assert admin.get("/admin/users", params={"cursor": "bm90LWEta2V5"}).status_code == 400
        _, user = new_user(admin)
        assert httpx.get(f"{served.url}/admin/users", headers=user).status_code == 403
        missing = admin.get("/web/missing.js")
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"


# ---- the token never reaches a log line ----

SECRET = "st_" + "S3cr3t-" * 6


def test_redact_replaces_token_values_only() -> None:
    assert redact(f"/validations/v/events?token={SECRET}&after=3") == "/validations/v/events?token=REDACTED&after=3"
    assert redact(f"/validations/v/events?after=3&token={SECRET}") == "/validations/v/events?after=3&token=REDACTED"
    assert redact("/validations/v/events?after=3") == "/validations/v/events?after=3"


@pytest.mark.parametrize("formatter", [JsonFormatter, TextFormatter])
def test_uvicorns_access_log_line_carries_no_token(formatter: type[logging.Formatter]) -> None:
    """A real uvicorn writes its access line for an events URL through our log configuration."""
    app = FastAPI(routes=[Route("/validations/{vid}/events", lambda request: PlainTextResponse("ok"))])
    server = ThreadedServer(app, access_log=True)  # uvicorn configures its loggers here: ours go on after
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(formatter())
    handler.addFilter(AccessFields())  # as app/observability/logs.logging_config installs it
    access = logging.getLogger("uvicorn.access")
    access.addHandler(handler)
    level = access.level
    access.setLevel(logging.INFO)
    server.start()
    try:
        assert httpx.get(f"{server.url}/validations/v1/events?token={SECRET}&after=2").status_code == 200
        wait_for(lambda: "/validations/v1/events" in output.getvalue(), timeout=10)
    finally:
        server.stop()
        access.removeHandler(handler)
        access.setLevel(level)

    line = output.getvalue()
    assert SECRET not in line and "S3cr3t" not in line
    assert "/validations/v1/events?token=REDACTED&after=2" in line
    if formatter is JsonFormatter:
        record = json.loads(line.splitlines()[0])
        assert record["path"] == "/validations/v1/events?token=REDACTED&after=2" and record["status"] == 200


# ---- the pure rules ----


def test_only_get_on_the_events_route_names_a_validation_and_the_token_name_is_literal() -> None:
    assert events_validation("GET", "/validations/ab-12/events") == "ab-12"
    assert events_validation("POST", "/validations/ab-12/events") is None
    assert events_validation("GET", "/validations/ab-12/events/") is None
    assert events_validation("GET", "/validations/ab-12") is None
    assert events_validation("GET", "/validations/a%2Fb/events") is None
    assert token_in(b"after=2&token=st_a%2Bb") == "st_a+b"
    assert token_in(b"token=") == ""
    assert token_in(b"after=2") is None
    assert token_in(b"%74oken=st_x&Token=st_y") is None  # as the log redaction finds it, or not at all


def test_a_record_opens_its_own_validation_until_it_expires() -> None:
    record = StreamToken("h", "v1", "u", "k", expires_at=1_000, created_at="")
    assert record.opens("v1", 999.9)
    assert not record.opens("v1", 1_000)
    assert not record.opens("v2", 0)

"""Bad input: RFC 9457 problem+json naming what is at fault, and nothing stored or started."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from app.settings import Settings
from local.aws.server import EmbeddedAWS
from local.simulator.app import SimulatorConfig
from local.simulator.server import SimulatorServer
from tests.support.stack import Aws, MakeApi, local_settings, running_api


def stored(aws: Aws, settings: Settings) -> dict[str, int]:
    """What exists for this deployment: S3 objects, records, executions, idempotency keys."""
    db = aws.client("dynamodb")
    machine = {"stateMachineArn": aws.machine_arn(settings.state_machine_name)}
    return {
        "objects": aws.client("s3").list_objects_v2(Bucket=settings.bucket).get("KeyCount", 0),
        "validations": db.scan(TableName=settings.table("validations"), Select="COUNT")["Count"],
        "parts": db.scan(TableName=settings.table("parts"), Select="COUNT")["Count"],
        "idempotency": db.scan(TableName=settings.table("idempotency"), Select="COUNT")["Count"],
        "executions": len(
            aws.client("stepfunctions").list_executions(stateMachineArn=machine["stateMachineArn"])["executions"]
        ),
    }


def multipart(
    files: list[tuple[str, bytes, str]], rules: Any = ("be tidy",), raw_rules: str | None = None
) -> dict[str, Any]:
    data = {"rules": raw_rules if raw_rules is not None else json.dumps(list(rules))}
    return {"files": [("files", f) for f in files], "data": data}


def as_json(documents: Any, rules: Any = ("be tidy",)) -> dict[str, Any]:
    return {"json": {"documents": documents, "rules": list(rules)}}


OK_FILE = ("ok.txt", b"row 1\n", "text/plain")
SMALL_LIMITS = {"max_files": 3, "max_file_bytes": 1000, "max_request_bytes": 2500, "max_rules": 2, "max_rule_chars": 50}

CASES = [
    # (id, request kwargs, status, problem type suffix, member that names the fault)
    (
        "malformed-json",
        {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
        400,
        "bad-request",
        None,
    ),
    (
        "malformed-multipart",
        {"content": b"--x\r\ngarbage", "headers": {"Content-Type": "multipart/form-data"}},
        400,
        "bad-request",
        None,
    ),
    ("rules-part-not-json", multipart([OK_FILE], raw_rules="[oops"), 400, "bad-request", ("field", "rules")),
    (
        "file-too-large",
        multipart([("big.txt", b"a" * 1001, "text/plain")]),
        413,
        "payload-too-large",
        ("file", "big.txt"),
    ),
    (
        "too-many-files",
        multipart([(f"f{i}.txt", b"row\n", "text/plain") for i in range(4)]),
        413,
        "payload-too-large",
        ("limit", "max_files"),
    ),
    (
        "request-too-large",
        multipart([(f"f{i}.txt", b"a" * 900, "text/plain") for i in range(3)]),
        413,
        "payload-too-large",
        ("limit", "max_request_bytes"),
    ),
    (
        "binary-by-name",
        multipart([("photo.png", b"\x89PNG\r\n", "image/png")]),
        415,
        "unsupported-media-type",
        ("file", "photo.png"),
    ),
    (
        "binary-by-content",
        multipart([("data.txt", b"ab\x00\x01\x02cd", "text/plain")]),
        415,
        "unsupported-media-type",
        ("file", "data.txt"),
    ),
    (
        "not-utf8",
        multipart([("latin.csv", "café".encode("latin-1"), "text/csv")]),
        415,
        "unsupported-media-type",
        ("file", "latin.csv"),
    ),
    (
        "wrong-content-type",
        {"content": b"hello", "headers": {"Content-Type": "text/plain"}},
        415,
        "unsupported-media-type",
        ("field", "Content-Type"),
    ),
    ("empty-batch-json", as_json([]), 422, "unprocessable", ("field", "documents")),
    (
        "empty-batch-multipart",
        {
            "content": b'--b\r\nContent-Disposition: form-data; name="rules"\r\n\r\n["t"]\r\n--b--\r\n',
            "headers": {"Content-Type": "multipart/form-data; boundary=b"},
        },
        422,
        "unprocessable",
        ("field", "files"),
    ),
    ("duplicate-names", multipart([OK_FILE, OK_FILE]), 422, "unprocessable", ("file", "ok.txt")),
    ("no-rules", multipart([OK_FILE], rules=[]), 422, "unprocessable", ("field", "rules")),
    ("too-many-rules", multipart([OK_FILE], rules=["a", "b", "c"]), 422, "unprocessable", ("limit", "max_rules")),
    ("rule-too-long", multipart([OK_FILE], rules=["x" * 51]), 422, "unprocessable", ("limit", "max_rule_chars")),
    ("rule-blank", multipart([OK_FILE], rules=["   "]), 422, "unprocessable", ("field", "rules[0].text")),
    ("rule-bad-shape", multipart([OK_FILE], rules=[{"id": "a", "text": "t", "extra": 1}]), 422, "unprocessable", None),
    (
        "rule-ids-repeated",
        as_json([{"name": "a.txt", "content": "x"}], rules=[{"id": "a", "text": "t"}, {"id": "a", "text": "u"}]),
        422,
        "unprocessable",
        ("field", "rules"),
    ),
    ("rules-not-array", multipart([OK_FILE], raw_rules='{"text": "t"}'), 422, "unprocessable", ("field", "rules")),
    ("empty-file", multipart([("empty.txt", b"", "text/plain")]), 422, "unprocessable", ("file", "empty.txt")),
    (
        "path-in-name",
        as_json([{"name": "../etc/passwd", "content": "x"}]),
        422,
        "unprocessable",
        ("file", "../etc/passwd"),
    ),
    ("json-missing-documents", {"json": {"rules": ["t"]}}, 422, "unprocessable", ("field", "documents")),
    (
        "ruleset-bad-name",
        {"files": [("files", OK_FILE)], "data": {"ruleset": "Tidy Rules"}},
        422,
        "unprocessable",
        ("field", "ruleset"),
    ),
    (
        "ruleset-bad-version",
        {"json": {"documents": [{"name": "a.txt", "content": "x"}], "ruleset": "tidy@v2"}},
        422,
        "unprocessable",
        ("field", "ruleset"),
    ),
    (
        "ruleset-twice",
        {"files": [("files", OK_FILE)], "data": {"ruleset": ["a", "b"]}},
        422,
        "unprocessable",
        ("field", "ruleset"),
    ),
]


@dataclass(frozen=True)
class Limited:
    api: Any  # the API's TestClient, calling as the admin
    settings: Settings


# The tests of `limited` share its API: one worker runs them, one after the other.
SHARES_LIMITED = pytest.mark.xdist_group("intake-limited")


@pytest.fixture(scope="module")
def limited(embedded_aws: EmbeddedAWS) -> Iterator[Limited]:
    """One API with SMALL_LIMITS for the tests whose requests it refuses: each compares what is stored
    before and after its own request, so they need no deployment of their own (~1 s each to provision)."""
    with SimulatorServer(SimulatorConfig(latency_seconds=0.01)) as simulator:
        settings = local_settings(embedded_aws.endpoint_url, simulator)
        with running_api(settings, **SMALL_LIMITS) as api:
            yield Limited(api, settings)


@SHARES_LIMITED
@pytest.mark.parametrize("request_kwargs,status,problem,member", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_problem_and_stores_nothing(
    limited: Limited,
    aws: Aws,
    request_kwargs: dict[str, Any],
    status: int,
    problem: str,
    member: tuple[str, str] | None,
) -> None:
    api, settings = limited.api, limited.settings
    before = stored(aws, settings)

    answer = api.post("/validations", **request_kwargs)

    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["type"].endswith("/" + problem)
    assert body["status"] == status and body["title"] and body["detail"]
    if member:
        assert body[member[0]] == member[1]
    assert stored(aws, settings) == before


@SHARES_LIMITED
def test_no_api_key_is_401_with_a_bearer_challenge(limited: Limited) -> None:
    api = limited.api
    answer = api.post("/validations", headers={"Authorization": ""}, json={"documents": [], "rules": []})
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert answer.headers["content-type"] == "application/problem+json"
    assert api.get("/validations", headers={"Authorization": "Bearer wrong"}).status_code == 401


@SHARES_LIMITED
def test_unknown_validation_is_404(limited: Limited) -> None:
    answer = limited.api.get("/validations/doesnotexist")
    assert answer.status_code == 404
    assert answer.json()["type"].endswith("/not-found")


def test_idempotency_key_replays_the_first_validation_and_refuses_a_different_body(
    api: Any, aws: Aws, settings: Settings
) -> None:
    body = {"documents": [{"name": "a.txt", "content": "row 1\n"}], "rules": ["be tidy"]}
    first = api.post("/validations", json=body, headers={"Idempotency-Key": "k-1"})
    again = api.post("/validations", json=body, headers={"Idempotency-Key": "k-1"})
    before = stored(aws, settings)
    different = api.post("/validations", json={**body, "rules": ["be tidier"]}, headers={"Idempotency-Key": "k-1"})

    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert different.status_code == 422
    assert different.json()["field"] == "Idempotency-Key"
    assert stored(aws, settings) == before
    assert before["executions"] == 1  # one execution for the two identical requests


def test_a_failure_after_storing_starts_leaves_nothing_behind(make_api: MakeApi, aws: Aws, settings: Settings) -> None:
    api = make_api()
    # StartExecution will fail: S3 objects and records written before it must be undone.
    api.app.state.settings = api.app.state.settings.model_copy(
        update={"state_machine_arn": "arn:aws:states:us-east-1:123456789012:stateMachine:missing"}
    )
    before = stored(aws, settings)

    answer = api.post(
        "/validations",
        json={"documents": [{"name": "a.txt", "content": "row\n"}], "rules": ["t"]},
        headers={"Idempotency-Key": "k-2"},
    )

    assert answer.status_code == 502
    assert answer.headers["content-type"] == "application/problem+json"
    assert stored(aws, settings) == before

"""Bodies are counted as they stream and refused 413 at the limit; anonymous bodies are never read;
JSON is parsed with depth and size limits."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import BaseModel, SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.errors import LINGER_BYTES, AppError, BadRequest
from app.limits import FRAMING_BYTES, BodyLimit, body_limit, loads_bounded
from app.main import create_app
from tests.hostile.asgi import Body, call
from tests.support.stack import settings_of

LIMIT = 4096


class Item(BaseModel):
    name: str


async def echo_length(request: Request) -> JSONResponse:
    return JSONResponse({"length": len(await request.body())})


def limited_app() -> BodyLimit:
    """An endpoint that reads the whole body, behind the body limit (`max_body_bytes` = LIMIT)."""
    app = Starlette(routes=[Route("/echo", echo_length, methods=["POST"])])
    app.state.settings = settings_of(max_body_bytes=LIMIT)
    limited = BodyLimit(app)

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        scope["app"] = app  # what Starlette sets before its middleware runs
        await limited(scope, receive, send)

    return asgi  # type: ignore[return-value]  # an ASGI callable like the middleware it wraps


def assert_problem(answer: Any, status: int, limit: str) -> None:
    assert answer.status == status, answer.body
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["limit"] == limit
    assert answer.headers["connection"] == "close"  # the server does not drain the rest


async def test_a_chunked_body_is_refused_413_as_soon_as_it_passes_the_limit() -> None:
    body = Body(chunks=1000, size=1024)  # 1 MiB offered, no Content-Length

    answer = await call(limited_app(), "POST", "/echo", body)

    assert_problem(answer, 413, "max_body_bytes")
    assert answer.json()["limit_value"] == LIMIT
    assert answer.read_before_answer == LIMIT // 1024 + 1  # the chunk that passed the limit, and not one more
    assert answer.chunks_read <= answer.read_before_answer + LINGER_BYTES // 1024  # then a bounded lingering read


async def test_a_declared_length_over_the_limit_is_refused_before_a_byte_is_read() -> None:
    body = Body(chunks=1000, size=1024)

    answer = await call(limited_app(), "POST", "/echo", body, headers={"Content-Length": str(1000 * 1024)})

    assert_problem(answer, 413, "max_body_bytes")
    assert answer.read_before_answer == 0


async def test_a_body_within_the_limit_reaches_the_app_whole() -> None:
    answer = await call(limited_app(), "POST", "/echo", Body(chunks=4, size=1024))

    assert answer.status == 200
    assert answer.json() == {"length": LIMIT}


async def test_a_body_fastapi_parses_is_413_not_its_400() -> None:
    """FastAPI turns any error while reading a JSON body into a 400; the limit is still a 413."""
    api = FastAPI()
    api.state.settings = settings_of(max_body_bytes=LIMIT)

    @api.post("/items")
    async def create(item: Item) -> dict[str, str]:
        return {"name": item.name}

    api.add_middleware(BodyLimit)

    answer = await call(api, "POST", "/items", Body(chunks=100), headers={"Content-Type": "application/json"})

    assert_problem(answer, 413, "max_body_bytes")
    assert answer.read_before_answer == LIMIT // 1024 + 1


def test_only_post_validations_may_carry_max_request_bytes() -> None:
    settings = settings_of(max_request_bytes=10_000_000, max_body_bytes=2048)

    assert body_limit(settings, "POST", "/validations") == (
        10_000_000 + FRAMING_BYTES,
        "max_request_bytes",
        10_000_000,
    )
    assert body_limit(settings, "PATCH", "/admin/users/u1") == (2048, "max_body_bytes", 2048)
    assert body_limit(settings, "GET", "/validations") == (2048, "max_body_bytes", 2048)


@pytest.mark.parametrize(
    "method,path",
    [("POST", "/validations"), ("POST", "/admin/users"), ("PATCH", "/admin/parallelism"), ("GET", "/nowhere")],
)
async def test_an_anonymous_body_is_answered_401_without_reading_a_byte(method: str, path: str) -> None:
    # The whole app, no lifespan: nothing past authentication may run for an anonymous caller.
    app = create_app(settings_of(admin_api_key=SecretStr("k")))
    body = Body(chunks=200_000, size=1024)  # 200 MB offered, chunked

    answer = await call(app, method, path, body, headers={"Content-Type": "application/json"})

    assert answer.status == 401
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert answer.headers["connection"] == "close"
    assert answer.read_before_answer == 0  # answered before a byte of the body was read
    assert answer.chunks_read * 1024 <= LINGER_BYTES  # then at most the lingering read, dropped


def test_json_deeper_than_the_limit_is_400() -> None:
    deep = b"[" * 33 + b"]" * 33

    with pytest.raises(BadRequest) as refused:
        loads_bounded(deep, max_depth=32, max_values=1000)

    assert refused.value.extra["limit"] == "max_json_depth"
    assert loads_bounded(b"[" * 32 + b"]" * 32, max_depth=32, max_values=1000) is not None


def test_json_holding_more_values_than_a_submission_can_is_400_before_parsing() -> None:
    bomb = b"[" + b"[]," * 100_000 + b"[]]"  # 300 kB that json.loads would make 100,001 lists

    with pytest.raises(BadRequest) as refused:
        loads_bounded(bomb, max_depth=32, max_values=1000)

    assert "more than 1000" in refused.value.detail


def test_strings_are_skipped_whole_by_the_scan() -> None:
    """Brackets, quotes and escapes inside strings are text, not structure."""
    text = 'a "quoted" [not, a, list] {nor: an object} \\ end' * 1000
    document = json.dumps({"documents": [{"name": "a.txt", "content": text}], "rules": ["r"]}).encode()

    assert loads_bounded(document, max_depth=3, max_values=11)["documents"][0]["content"] == text


@pytest.mark.parametrize("raw", [b"{not json", b'{"a": "\\ud800', b"\xff\xfe\x00"])
def test_invalid_json_is_400(raw: bytes) -> None:
    with pytest.raises(AppError) as refused:
        loads_bounded(raw, max_depth=32, max_values=1000, field="rules")

    assert refused.value.status == 400
    assert refused.value.extra["field"] == "rules"

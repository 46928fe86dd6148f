"""A raw ASGI client for middleware tests: it hands the body out chunk by chunk and counts
what the app took, so a test can assert how much of a body was read before the answer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    read_before_answer: int  # http.request messages the app had received when it began to answer
    chunks_read: int  # in all (a refusal that closes the connection reads a bounded bit more: lingering)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Body:
    """`chunks` chunks of `size` bytes each, produced only when the app asks for them."""

    chunks: int
    size: int = 1024
    read: int = field(default=0)


async def call(
    app: ASGIApp,
    method: str,
    path: str,
    body: Body | None = None,
    headers: dict[str, str] | None = None,
    client: tuple[str, int] = ("203.0.113.7", 40000),
) -> Answer:
    body = body or Body(0)
    raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": raw_headers,
        "client": client,
        "server": ("127.0.0.1", 8000),
    }
    sent: list[Message] = []
    taken = 0
    ended = False
    before_answer: int | None = None

    async def receive() -> Message:
        nonlocal taken, ended
        if taken < body.chunks:
            taken += 1
            body.read = taken
            return {"type": "http.request", "body": b"x" * body.size, "more_body": taken < body.chunks}
        if not ended and body.chunks == 0:
            ended = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal before_answer
        if message["type"] == "http.response.start":
            before_answer = taken
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return Answer(
        status=start["status"],
        headers={k.decode("latin-1"): v.decode("latin-1") for k, v in start["headers"]},
        body=b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
        read_before_answer=before_answer or 0,
        chunks_read=taken,
    )

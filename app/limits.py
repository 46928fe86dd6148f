"""Bounded request bodies and bounded JSON (issue 14: bounded memory whatever the framing).

`BodyLimit` is a pure ASGI middleware: it counts the `http.request` body bytes as the app
receives them, chunked or not, and answers 413 problem+json naming the limit as soon as
the count passes it (a declared Content-Length above it is refused before any byte is
read). Starlette 1.10 has a `RequestBodyLimitMiddleware`, but it answers text/plain and
checks a declared length only when the response starts, after the endpoint has run.

Only `POST /validations` may carry a large body (`max_request_bytes` plus the multipart
framing); every other route is held to `max_body_bytes`.

Also here: `loads_bounded` (JSON with depth and size limits, 400 beyond), `ByteGate` (the
bytes of submissions held in memory at once) and `tune_malloc`.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import BadRequest, PayloadTooLarge, send_problem
from app.settings import Settings

# Multipart boundaries, part headers and the rules part ride on top of the files' bytes.
FRAMING_BYTES = 1024 * 1024
LARGE_BODY_ROUTES = frozenset({("POST", "/validations")})
_M_ARENA_MAX, _M_MMAP_THRESHOLD = -8, -3  # glibc <malloc.h>


class BodyTooLarge(PayloadTooLarge):
    """The body passed its limit while streaming (or declared a length above it)."""


def body_limit(settings: Settings, method: str, path: str) -> tuple[int, str, int]:
    """(bytes a body may have on this route, the setting's name, its value)."""
    if (method.upper(), path.rstrip("/") or "/") in LARGE_BODY_ROUTES:
        return settings.max_request_bytes + FRAMING_BYTES, "max_request_bytes", settings.max_request_bytes
    return settings.max_body_bytes, "max_body_bytes", settings.max_body_bytes


def declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class BodyLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings: Settings = scope["app"].state.settings
        allowed, name, value = body_limit(settings, scope["method"], scope["path"])

        def too_large(size: str) -> BodyTooLarge:
            return BodyTooLarge(
                f"The request body is {size}; the limit is {value} bytes.", limit=name, limit_value=value
            )

        declared = declared_length(scope)
        if declared is not None and declared > allowed:
            await send_problem(scope, send, too_large(f"{declared} bytes"), close=True, receive=receive)
            return

        received = 0
        exceeded: BodyTooLarge | None = None
        started = replaced = False

        async def counted() -> Message:
            nonlocal received, exceeded
            if exceeded is not None:
                raise exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > allowed:
                    exceeded = too_large(f"more than {allowed} bytes")
                    raise exceeded
            return message

        async def guarded(message: Message) -> None:
            # Whatever the app made of the exception (FastAPI turns a failed body read into a
            # 400), a body over the limit is answered 413.
            nonlocal started, replaced
            if replaced:
                return
            if message["type"] == "http.response.start":
                if exceeded is not None:
                    replaced = True
                    await send_problem(scope, send, exceeded, close=True, receive=receive)
                    return
                started = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if exceeded is None or started:
                raise
            if not replaced:  # the refusal itself escaped the app: answer it here
                await send_problem(scope, send, exceeded, close=True, receive=receive)
            # else: the 413 is sent; what failed after it is the body's refusal playing out


# One JSON token outside strings: a string (skipped whole), an opening or closing bracket,
# or a scalar (number, literal, garbage). Commas, colons and whitespace are not counted.
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]++|\\.)*+"|[\[{]|[\]}]|[^\s"\[\]{},:]++', re.DOTALL)
_OPEN, _CLOSE = frozenset(b"[{"), frozenset(b"]}")


def loads_bounded(data: bytes | bytearray, *, max_depth: int, max_values: int, field: str | None = None) -> Any:
    """`json.loads` after a scan that refuses (400) nesting deeper than `max_depth` or more than
    `max_values` values: 50 MB of `[],` would otherwise become a gigabyte of lists."""
    where: dict[str, Any] = {"field": field} if field else {}
    what = f"The `{field}` part" if field else "The body"
    depth = values = 0
    for match in _JSON_TOKEN.finditer(data):
        first = data[match.start()]
        if first in _CLOSE:
            depth -= 1
            continue
        values += 1
        if first in _OPEN:
            depth += 1
            if depth > max_depth:
                raise BadRequest(
                    f"{what} is JSON nested deeper than {max_depth} levels.",
                    limit="max_json_depth",
                    limit_value=max_depth,
                    **where,
                )
        if values > max_values:
            raise BadRequest(f"{what} holds more than {max_values} JSON values.", limit_value=max_values, **where)
    try:
        return json.loads(data)
    except RecursionError as exc:  # unreachable after the scan; kept so no input can make it a 500
        raise BadRequest(f"{what} is JSON nested too deeply.", limit="max_json_depth", **where) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}.", **where) from exc


class ByteGate:
    """Bytes of submissions held in memory at once (per process), granted in arrival order.

    A submission takes its declared length (or the whole allowance when chunked) before its
    body is read, and gives it back when it has been stored: a waiting request's body stays
    in the client's socket, so concurrent maximum-size uploads cost one at a time, while
    small ones share the allowance."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0
        self._changed = asyncio.Condition()
        self._next_ticket = self._serving = 0
        self._abandoned: set[int] = set()

    def _turn(self, ticket: int) -> bool:
        while self._serving in self._abandoned:  # a waiter that gave up is skipped
            self._abandoned.discard(self._serving)
            self._serving += 1
        return self._serving == ticket

    @asynccontextmanager
    async def hold(self, amount: int) -> AsyncIterator[None]:
        amount = max(1, min(amount, self.capacity))
        async with self._changed:
            ticket, self._next_ticket = self._next_ticket, self._next_ticket + 1
            try:
                await self._changed.wait_for(lambda: self._turn(ticket) and self.held + amount <= self.capacity)
            except BaseException:
                self._abandoned.add(ticket)
                self._changed.notify_all()
                raise
            self._serving += 1
            self.held += amount
            self._changed.notify_all()
        try:
            yield
        finally:
            async with self._changed:
                self.held -= amount
                self._changed.notify_all()


def tune_malloc(arenas: int = 2, mmap_threshold: int = 1024 * 1024) -> bool:
    """Cap glibc's malloc arenas and fix its mmap threshold (as MALLOC_ARENA_MAX and
    MALLOC_MMAP_THRESHOLD_ would); False where there is no glibc.

    glibc gives threads arenas of their own and rarely returns their freed memory to the
    system: submissions split on worker threads left tens of MiB each behind, and four
    maximum-size uploads grew the API by 4.4 × `max_request_bytes` instead of 2 × (bench/hostile.py).
    And once a large block is freed, glibc raises its mmap threshold to that size, so later
    multi-MiB buffers (file contents, decoded text) come from the heap, where they fragment;
    a fixed threshold keeps every buffer of 1 MiB or more in its own mapping, returned when freed."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, arenas)) and bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold))
    except (OSError, AttributeError):
        return False

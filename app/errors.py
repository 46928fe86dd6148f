"""Domain errors and their one rendering: RFC 9457 `application/problem+json`."""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://validation-service.dev/problems/"


class Problem(BaseModel):
    """RFC 9457 problem details; extra members name the field, file or limit at fault."""

    model_config = {"extra": "allow"}
    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these status codes: each a problem+json body."""
    return {
        code: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": "Problem details (RFC 9457)"}
        for code in codes
    }


class AppError(Exception):
    """Base of every error the API answers with on purpose."""

    status: int = 500
    type: str = "internal"
    title: str = "Internal error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra  # members naming the field, file or limit at fault

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body = {"type": PROBLEM_BASE + self.type, "title": self.title, "status": self.status, "detail": self.detail}
        if instance:
            body["instance"] = instance
        return {**body, **self.extra}


class BadRequest(AppError):
    status, type, title = 400, "bad-request", "Malformed request"


class Unauthorized(AppError):
    status, type, title = 401, "unauthorized", "Authentication required"


class Forbidden(AppError):
    status, type, title = 403, "forbidden", "Not allowed"


class NotFound(AppError):
    status, type, title = 404, "not-found", "Not found"


class Conflict(AppError):
    status, type, title = 409, "conflict", "Conflict with the resource's state"


class Gone(AppError):
    """The resource's data was deleted (purged, or expired with its retention)."""

    status, type, title = 410, "gone", "No longer available"


class PayloadTooLarge(AppError):
    status, type, title = 413, "payload-too-large", "Payload too large"


class UnsupportedMediaType(AppError):
    status, type, title = 415, "unsupported-media-type", "Unsupported media type"


class Unprocessable(AppError):
    status, type, title = 422, "unprocessable", "Request cannot be processed"


class TooManyRequests(AppError):
    status, type, title = 429, "rate-limited", "Too many requests"


class ServiceUnavailable(AppError):
    status, type, title = 503, "unavailable", "Service unavailable"


class UpstreamError(AppError):
    """An AWS call failed for a reason that is not the caller's fault."""

    status, type, title = 502, "upstream", "A backing service failed"


def problem(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


# A refusal that closes the connection first reads (and drops) a little more of what the
# client is still sending: closing a socket with unread data makes the kernel send a reset,
# which can destroy the answer before the client has read it (a "lingering close").
LINGER_BYTES = 4 * 1024 * 1024
LINGER_SECONDS = 2.0


async def send_problem(
    scope: Scope, send: Send, error: AppError, *, close: bool = False, receive: Receive | None = None
) -> None:
    """Answer `error` as problem+json from an ASGI middleware (outside FastAPI's handlers).

    `close` ends the connection instead of letting the server drain a body nobody will read;
    given `receive`, the answer is complete (with its Content-Length) before the lingering
    read of at most LINGER_BYTES, then the connection closes."""
    headers = {**error.headers, **({"Connection": "close"} if close else {})}
    response = problem(error.status, error.body(scope.get("path")), headers)
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    if receive is None:
        await send({"type": "http.response.body", "body": response.body})
        return
    await send({"type": "http.response.body", "body": response.body, "more_body": True})
    with anyio.move_on_after(LINGER_SECONDS), contextlib.suppress(Exception):  # best effort (a body limit may say stop)
        drained = 0
        while drained < LINGER_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                break
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
    await send({"type": "http.response.body", "body": b""})


class InternalError(AppError):
    """An error nobody anticipated: the body carries an id that the log line carries too."""

    status, type, title = 500, "internal", "Internal error"


def install(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def on_app_error(request: Request, exc: AppError) -> JSONResponse:
        return problem(exc.status, exc.body(request.url.path), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
        first = errors[0]["field"] if errors else "request"
        error = Unprocessable(f"Invalid value for {first}: {errors[0]['message'] if errors else ''}", errors=errors)
        return problem(error.status, error.body(request.url.path))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = {
            "type": PROBLEM_BASE + "http-" + str(exc.status_code),
            "title": str(exc.detail),
            "status": exc.status_code,
            "detail": str(exc.detail),
        }
        return problem(exc.status_code, body, dict(exc.headers or {}))

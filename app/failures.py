"""The last resort: whatever escapes the app's own handlers is still answered as problem+json.

An AWS failure is 503 with Retry-After (throttled, unavailable, unreachable) or 502, its
detail naming only the operation and error code (AWS messages carry ARNs and account ids);
anything else is a 500 whose body carries an error id that the log line carries too. The
exception text never reaches the client. A pure ASGI middleware outside the others, so an
error in authentication or in a body limit is covered too.
"""

from __future__ import annotations

import logging
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.aws.errors import aws_failure
from app.errors import AppError, InternalError, send_problem

log = logging.getLogger(__name__)


def _unwrapped(exc: BaseException) -> BaseException:
    """A task group's ExceptionGroup of one exception is that exception."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def problem_of(exc: BaseException, scope: Scope) -> AppError:
    """The answer for an exception nothing else handled; logged with the id the answer carries."""
    exc = _unwrapped(exc)
    if isinstance(exc, AppError):
        return exc
    error_id = uuid.uuid4().hex[:16]
    where = f"{scope.get('method', '')} {scope.get('path', '')}"
    failure = aws_failure(exc)
    if failure is not None:
        log.warning("AWS call failed (error id %s) on %s: %r", error_id, where, exc)
        failure.extra["error_id"] = error_id
        return failure
    log.error("unhandled error (error id %s) on %s", error_id, where, exc_info=exc)
    return InternalError(f"An unexpected error occurred (error id {error_id}).", error_id=error_id)


class LastResort:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started:  # too late for a status: log it and let the server close the connection
                log.error("error after the response started on %s %s", scope["method"], scope["path"], exc_info=exc)
                raise
            await send_problem(scope, send, problem_of(exc, scope))

"""Authentication before the app: no route reads a body byte of an unauthenticated request.

FastAPI reads and parses a JSON body before it solves an endpoint's dependencies, so an
auth dependency alone would let an anonymous client make the API read (and parse) a body
before its 401. This pure ASGI middleware resolves `Authorization: Bearer <key>` first and
answers 401 (or 429) itself, closing the connection rather than draining the body; the
endpoints' `CurrentUser`/`CurrentAdmin` dependencies then read the principal it stored in
the request state. Public paths (health, the OpenAPI document and UI) pass through;
`/readyz` authenticates when a key is sent (admins see its details).
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from app.auth.authenticator import Authenticator
from app.auth.throttle import FailedAuthThrottle
from app.errors import TooManyRequests, Unauthorized, send_problem
from app.identity.keys import hash_key
from app.settings import Settings

log = logging.getLogger(__name__)

CHALLENGE = 'Bearer realm="validation-service"'


def missing_key() -> Unauthorized:
    return Unauthorized("Send an API key as `Authorization: Bearer <key>`.", headers={"WWW-Authenticate": CHALLENGE})


def invalid_key() -> Unauthorized:
    return Unauthorized(
        "The API key is not valid.", headers={"WWW-Authenticate": CHALLENGE + ', error="invalid_token"'}
    )


def bearer_key(scope: Scope) -> str | None:
    """The key of an `Authorization: Bearer <key>` header; None without one, "" when malformed."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").strip().partition(" ")
            return key.strip() if scheme.lower() == "bearer" else ""
    return None


class Authenticate:
    def __init__(self, app: ASGIApp, public: frozenset[str], optional: frozenset[str]) -> None:
        self.app = app
        self.public = public
        self.optional = optional
        self.throttle = FailedAuthThrottle()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public:
            await self.app(scope, receive, send)
            return
        key = bearer_key(scope)
        if key is None and scope["path"] in self.optional:
            await self.app(scope, receive, send)
            return
        if not key:
            await send_problem(scope, send, missing_key(), close=True, receive=receive)
            return
        settings: Settings = scope["app"].state.settings
        authenticator: Authenticator = scope["app"].state.authenticator
        address = (scope.get("client") or ("unknown", 0))[0]
        limit = settings.auth_failures_per_minute
        wait = self.throttle.retry_after(address, limit)
        if wait > 0:
            retry_after = str(int(wait) + 1)
            await send_problem(
                scope,
                send,
                TooManyRequests(
                    f"Too many invalid API keys from this address: at most {limit} a minute.",
                    headers={"Retry-After": retry_after},
                    limit="auth_failures_per_minute",
                    limit_value=limit,
                    retry_after=int(retry_after),
                ),
                close=True,
                receive=receive,
            )
            return
        principal = await authenticator.principal(key)
        if principal is None:
            self.throttle.failed(address, limit)
            log.info("invalid API key from %s on %s %s", address, scope["method"], scope["path"])
            await send_problem(scope, send, invalid_key(), close=True, receive=receive)
            return
        state = scope.setdefault("state", {})
        state["principal"] = principal
        state["key_hash"] = hash_key(key)
        await self.app(scope, receive, send)

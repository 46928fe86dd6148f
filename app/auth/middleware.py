"""Authentication before the app: no route reads a body byte of an unauthenticated request.

FastAPI reads and parses a JSON body before it solves an endpoint's dependencies, so an
auth dependency alone would let an anonymous client make the API read (and parse) a body
before its 401. This pure ASGI middleware resolves `Authorization: Bearer <key>` first and
answers 401 (or 429) itself, closing the connection rather than draining the body; the
endpoints' `CurrentUser`/`CurrentAdmin` dependencies then read the principal it stored in
the request state. Public paths (health, the OpenAPI document and UI, the web page) pass
through; `/readyz` authenticates when a key is sent (admins see its details). On the events
route only, a stream token (`?token=`, app/stream_tokens) may stand in for the key.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from app.auth.authenticator import Authenticator
from app.auth.throttle import FailedAuthThrottle
from app.errors import TooManyRequests, Unauthorized, send_problem
from app.identity.keys import hash_key
from app.identity.principal import Principal
from app.settings import Settings
from app.stream_tokens.service import StreamTokenService, events_validation, token_in

log = logging.getLogger(__name__)

CHALLENGE = 'Bearer realm="validation-service"'


def missing_key() -> Unauthorized:
    return Unauthorized("Send an API key as `Authorization: Bearer <key>`.", headers={"WWW-Authenticate": CHALLENGE})


def invalid_key() -> Unauthorized:
    return Unauthorized(
        "The API key is not valid.", headers={"WWW-Authenticate": CHALLENGE + ', error="invalid_token"'}
    )


def invalid_token() -> Unauthorized:
    return Unauthorized(
        "The stream token is not valid: unknown, expired, for another validation, or its key was rotated. "
        "Ask POST /validations/{id}/stream-token for a new one.",
        headers={"WWW-Authenticate": CHALLENGE + ', error="invalid_token"'},
        field="token",
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
        # A stream token (app/stream_tokens) stands in for the key on the events route only.
        stream_of = events_validation(scope["method"], scope["path"]) if key is None else None
        token = token_in(scope.get("query_string", b"")) if stream_of else None
        if key is None and token is None and scope["path"] in self.optional:
            await self.app(scope, receive, send)
            return
        if not key and token is None:
            await send_problem(scope, send, missing_key(), close=True, receive=receive)
            return
        settings: Settings = scope["app"].state.settings
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
        if token is not None and stream_of is not None:
            caller = await self._token_holder(scope, token, stream_of)
        else:
            caller = await self._key_holder(scope, key or "")
        if caller is None:
            self.throttle.failed(address, limit)
            what = "stream token" if token is not None else "API key"
            log.info("invalid %s from %s on %s %s", what, address, scope["method"], scope["path"])
            await send_problem(
                scope, send, invalid_token() if token is not None else invalid_key(), close=True, receive=receive
            )
            return
        state = scope.setdefault("state", {})
        state["principal"], state["key_hash"] = caller
        await self.app(scope, receive, send)

    @staticmethod
    async def _key_holder(scope: Scope, key: str) -> tuple[Principal, str] | None:
        authenticator: Authenticator = scope["app"].state.authenticator
        principal = await authenticator.principal(key)
        return (principal, hash_key(key)) if principal is not None else None

    @staticmethod
    async def _token_holder(scope: Scope, token: str, validation_id: str) -> tuple[Principal, str] | None:
        """The token's holder as they are now, with the hash of the key it was issued to (an open
        stream re-checks that key each poll, as it does for a stream opened with the key itself)."""
        tokens: StreamTokenService = scope["app"].state.stream_tokens
        authenticator: Authenticator = scope["app"].state.authenticator
        record = await tokens.redeem(token, validation_id)
        principal = await authenticator.holder(record.user_id, record.key_hash) if record is not None else None
        return (principal, record.key_hash) if principal is not None and record is not None else None

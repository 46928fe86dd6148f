"""Browser-safe stream auth: short-lived tokens that open one validation's event stream.

`EventSource` cannot send an `Authorization` header, so the page asks
`POST /validations/{id}/stream-token` (with its key) for a token and opens
`GET /validations/{id}/events?token=...`. The token is random (256 bits) and only its SHA-256
is stored, in DynamoDB with `expires_at` (also the table's TTL), so any API instance can check
it. It is scoped to one validation, the user who asked and the hash of the key they asked with:
rotating that key or disabling the user revokes it (the auth middleware resolves the holder
through the same check an open stream repeats each poll). It opens streams until it expires;
a stream it opened lives on under that per-poll check. It is accepted on the events route only.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import unquote_plus

from app.identity.keys import hash_key
from app.identity.principal import Principal
from app.stream_tokens.records import StreamToken
from app.stream_tokens.store import StreamTokenStore
from core.clock import now_iso

TOKEN_PREFIX = "st_"
MAX_TOKEN_CHARS = 128  # `st_` + 43 characters; anything much longer is not one
QUERY_NAME = "token"
# The one route a token opens (app/events/router.py); the id pattern is the route's own.
EVENTS_PATH = re.compile(r"^/validations/([A-Za-z0-9-]{1,64})/events$")


def events_validation(method: str, path: str) -> str | None:
    """The validation whose event stream this request opens, if it is `GET` on the events route."""
    match = EVENTS_PATH.match(path) if method == "GET" else None
    return match.group(1) if match else None


def token_in(query_string: bytes) -> str | None:
    """The `token` query parameter; None without one ("" when given empty). The name must be spelled
    out as is (not percent-encoded), as the access log's redaction (app/observability/logs) finds it."""
    for pair in query_string.decode("latin-1").split("&"):
        name, _, value = pair.partition("=")
        if name == QUERY_NAME:
            return unquote_plus(value)
    return None


def iso_of(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class StreamTokenService:
    def __init__(self, store: StreamTokenStore, lifetime_seconds: float, clock: Callable[[], float] = time.time):
        self._store = store
        self._lifetime = lifetime_seconds
        self._clock = clock

    async def issue(self, principal: Principal, key_hash: str, validation_id: str) -> tuple[str, StreamToken]:
        """A new token for `validation_id`'s events (the caller's access was checked) and its record."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = StreamToken(
            token_hash=hash_key(token),
            validation_id=validation_id,
            user_id=principal.user_id,
            key_hash=key_hash,
            expires_at=int(self._clock() + self._lifetime),
            created_at=now_iso(),
        )
        await self._store.put(record)
        return token, record

    async def redeem(self, token: str, validation_id: str) -> StreamToken | None:
        """The token's record if it opens `validation_id`'s events now; None if unknown, expired or
        for another validation (the holder's key and state are checked by the caller)."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_CHARS:
            return None
        record = await self._store.get(hash_key(token))
        return record if record is not None and record.opens(validation_id, self._clock()) else None

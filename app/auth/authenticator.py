"""API keys to principals: for each request (the auth middleware), and again on each poll of an open stream.

The bootstrap admin key (ADMIN_API_KEY) is compared in constant time and has no user
record; every other key is resolved by the users service (`UserService.principal_of_key`):
looked up by its SHA-256 hash, it must be the user's current key and the user not
disabled. A request is always resolved afresh, so rotation and disabling count at the next
request. An open event stream re-checks its key once per poll (`recheck`), shared by every
stream of that key in the process: one users-table read per key per interval.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable

from pydantic import SecretStr

from app.identity.keys import hash_key
from app.identity.principal import BOOTSTRAP_ADMIN, Principal
from app.users.service import UserService

MAX_KEY_CHARS = 256  # keys are `vk_` + 43 characters; anything much longer is not one


class Authenticator:
    def __init__(self, users: UserService, admin_key: SecretStr | None, recheck_seconds: float) -> None:
        self._users = users
        self._admin_key = admin_key.get_secret_value().encode() if admin_key else None
        self._recheck_seconds = recheck_seconds
        self._rechecks: dict[str, tuple[float, asyncio.Future[Principal | None]]] = {}
        self.lookups = 0  # users-table reads made by `recheck` (tests count them)

    def is_admin_key(self, key: str) -> bool:
        return self._admin_key is not None and hmac.compare_digest(key.encode(), self._admin_key)

    async def principal(self, key: str) -> Principal | None:
        """Who holds `key` now; None for no one."""
        if not key or len(key) > MAX_KEY_CHARS:
            return None
        if self.is_admin_key(key):
            return Principal(user_id=BOOTSTRAP_ADMIN, role="admin")
        return await self._users.principal_of_key(key)

    async def holder(self, user_id: str, key_hash: str) -> Principal | None:
        """Who a credential issued to `user_id` under the key hashed `key_hash` (a stream token)
        acts as now: None once that key was rotated, the user disabled, or the bootstrap key changed."""
        if user_id == BOOTSTRAP_ADMIN:
            if self._admin_key is None:
                return None
            current = hash_key(self._admin_key.decode())
            return Principal(user_id=BOOTSTRAP_ADMIN, role="admin") if hmac.compare_digest(current, key_hash) else None
        return await self._users.principal_of_user(user_id, key_hash)

    async def recheck(self, principal: Principal, key_hash: str) -> Principal | None:
        """`principal` as it is now, if `key_hash` is still its current key (and it is not disabled);
        answers younger than `recheck_seconds` are shared."""
        if principal.user_id == BOOTSTRAP_ADMIN and principal.quota is None:
            return principal  # the bootstrap key is configuration: it changes only with a restart
        now = time.monotonic()
        cached = self._rechecks.get(key_hash)
        if cached is None or now - cached[0] >= self._recheck_seconds:
            self._forget_older_than(now - self._recheck_seconds)
            future: asyncio.Future[Principal | None] = asyncio.ensure_future(
                self._lookup(lambda: self._users.principal_of_user(principal.user_id, key_hash))
            )
            cached = self._rechecks[key_hash] = (now, future)
        return await asyncio.shield(cached[1])

    async def _lookup(self, read: Callable[[], Awaitable[Principal | None]]) -> Principal | None:
        self.lookups += 1
        return await read()

    def _forget_older_than(self, limit: float) -> None:
        for key, (at, future) in list(self._rechecks.items()):
            if at < limit and future.done():
                del self._rechecks[key]

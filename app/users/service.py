"""Users and keys: create, read, change, rotate; every change audited; keys resolved to principals."""

from __future__ import annotations

from typing import Any

from app.errors import Conflict, NotFound
from app.identity.keys import hash_key, new_api_key
from app.identity.principal import OnLimit, Principal
from app.quotas.service import QuotaService
from app.settings import Settings
from app.users.records import AuditRecord, User
from app.users.schemas import QuotaIn, UserCreate, UserPatch
from app.users.store import UserStore
from core.clock import now_iso
from core.quota import Quota


class UserService:
    def __init__(self, store: UserStore, quotas: QuotaService, settings: Settings) -> None:
        self.store = store
        self.quotas = quotas
        self.settings = settings

    async def principal_of_key(self, key: str) -> Principal | None:
        """Who holds this API key: None unless it is a user's current key and the user is not disabled."""
        digest = hash_key(key)
        user_id = await self.store.user_of_key(digest)
        user = await self.store.get(user_id) if user_id else None
        # The user record holds the current key and the state: rotation and disabling count at the next request.
        if user is None or user.disabled or user.key_hash != digest:
            return None
        return user.principal()

    async def limits_of(self, user_id: str) -> tuple[Quota | None, OnLimit]:
        """(quota, on_limit policy) from one read of the user record; (None, "queue") for principals
        without one (the bootstrap admin): not rate limited."""
        user = await self.store.get(user_id)
        return (None, "queue") if user is None else (user.quota, user.on_limit)

    async def disabled(self, user_id: str) -> bool:
        """Whether the user exists and is disabled (one read)."""
        user = await self.store.get(user_id)
        return user is not None and user.disabled

    async def principal_of_user(self, user_id: str, key_hash: str) -> Principal | None:
        """The user now, if `key_hash` is still its current key and it is not disabled (one read)."""
        user = await self.store.get(user_id)
        if user is None or user.disabled or user.key_hash != key_hash:
            return None
        return user.principal()

    async def create(self, actor: Principal, request: UserCreate) -> tuple[User, str]:
        """The new user and its API key (the key is stored only as its hash)."""
        s = self.settings
        key = new_api_key()
        user = User(
            user_id=request.user_id,
            role=request.role,
            quota=self._quota_of(request.quota)
            if request.quota
            else Quota(
                s.default_capacity_tokens,
                s.default_refill_tokens_per_minute,
                s.default_max_running,
                s.default_max_queued,
            ),
            on_limit=request.on_limit or s.default_on_limit,
            disabled=False,
            key_hash=hash_key(key),
            created_at=now_iso(),
        )
        await self.quotas.create_bucket(request.user_id)
        if not await self.store.create(user):
            raise Conflict(f"User {request.user_id!r} already exists.", field="user_id")
        await self.store.audit(actor.user_id, "user.create", request.user_id, None, user.public())
        return user, key

    def _quota_of(self, given: QuotaIn) -> Quota:
        """A quota as an admin gave it; `max_queued` left out is the default."""
        return Quota.of({**given.model_dump(), "max_queued": given.max_queued or self.settings.default_max_queued})

    async def get(self, user_id: str) -> User:
        user = await self.store.get(user_id)
        if user is None:
            raise NotFound(f"No user {user_id!r}.", field="user_id")
        return user

    async def page(self, limit: int, start: dict[str, Any] | None) -> tuple[list[User], dict[str, Any] | None]:
        """A page of users (admins), in the table's order."""
        return await self.store.page(limit, start)

    async def patch(self, actor: Principal, user_id: str, request: UserPatch) -> User:
        before = await self.get(user_id)
        changes = dict(request.model_dump(exclude_none=True))
        if request.quota:
            changes["quota"] = self._quota_of(request.quota).as_dict()
        if not changes:
            return before
        changes["updated_at"] = now_iso()
        await self.store.update(user_id, changes)
        if "quota" in changes:  # a higher max_running may let the parked head of the user's queue start
            await self.quotas.release_head(user_id)
        after = await self.get(user_id)
        old, new = before.public(), after.public()
        await self.store.audit(
            actor.user_id, "user.update", user_id, {k: old.get(k) for k in changes}, {k: new.get(k) for k in changes}
        )
        return after

    async def audit(self, actor: str, action: str, target: str, old: Any, new: Any) -> None:
        """One entry in the admin audit trail (user changes here, other admin changes from their endpoints)."""
        await self.store.audit(actor, action, target, old, new)

    async def audit_page(
        self, limit: int, start: dict[str, Any] | None
    ) -> tuple[list[AuditRecord], dict[str, Any] | None]:
        return await self.store.audit_page(limit, start)

    async def rotate_key(self, actor: Principal, user_id: str) -> tuple[User, str]:
        """The user with a new API key; the old key stops working."""
        user = await self.get(user_id)
        key = new_api_key()
        if not await self.store.replace_key(user_id, user.key_hash, hash_key(key)):
            raise Conflict("The key changed meanwhile; try again.")
        await self.store.audit(
            actor.user_id,
            "user.rotate_key",
            user_id,
            {"key_hash": user.key_hash[:12] + "…"},
            {"key_hash": hash_key(key)[:12] + "…"},
        )
        return await self.get(user_id), key

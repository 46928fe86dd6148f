"""The one authentication dependency every endpoint passes through.

`Authorization: Bearer <key>`. The bootstrap admin key (ADMIN_API_KEY) is compared in
constant time and has no quota; every other key is looked up by its SHA-256 hash
(keys are random, 256 bits: a slow hash adds nothing) and must be the user's current key
and the user not disabled.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.deps import ClientsDep, SettingsDep
from app.errors import Forbidden, Unauthorized
from app.identity.keys import hash_key
from app.identity.principal import BOOTSTRAP_ADMIN, Principal
from app.users.store import UserStore
from core.quota import Quota

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API key>`")
_CHALLENGE = 'Bearer realm="validation-service"'


def _invalid() -> Unauthorized:
    return Unauthorized(
        "The API key is not valid.", headers={"WWW-Authenticate": _CHALLENGE + ', error="invalid_token"'}
    )


async def current_principal(
    settings: SettingsDep,
    clients: ClientsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized(
            "Send an API key as `Authorization: Bearer <key>`.", headers={"WWW-Authenticate": _CHALLENGE}
        )
    key = credentials.credentials
    admin_key = settings.admin_api_key.get_secret_value() if settings.admin_api_key else None
    if admin_key and hmac.compare_digest(key.encode(), admin_key.encode()):
        return Principal(user_id=BOOTSTRAP_ADMIN, role="admin")
    store = UserStore(clients, settings)
    digest = hash_key(key)
    user_id = await store.user_of_key(digest)
    user = await store.get(user_id) if user_id else None
    if user is None or user.get("disabled") or user.get("key_hash") != digest:
        raise _invalid()
    return Principal(
        user_id=user["user_id"], role=user["role"], quota=Quota.of(user["quota"]), on_limit=user["on_limit"]
    )


async def admin_principal(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if not principal.is_admin:
        raise Forbidden("This endpoint is for admins.")
    return principal


CurrentUser = Annotated[Principal, Depends(current_principal)]
CurrentAdmin = Annotated[Principal, Depends(admin_principal)]

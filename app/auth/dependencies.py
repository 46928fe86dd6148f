"""The one authentication dependency every endpoint passes through.

`Authorization: Bearer <key>`. The bootstrap admin key (ADMIN_API_KEY) is compared in
constant time and has no quota; every other key is resolved by the users service
(`UserService.principal_of_key`): looked up by its SHA-256 hash (keys are random, 256
bits: a slow hash adds nothing), it must be the user's current key and the user not
disabled.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.deps import SettingsDep
from app.errors import Forbidden, Unauthorized
from app.identity.principal import BOOTSTRAP_ADMIN, Principal
from app.users.dependencies import Users

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API key>`")
_CHALLENGE = 'Bearer realm="validation-service"'


def _invalid() -> Unauthorized:
    return Unauthorized(
        "The API key is not valid.", headers={"WWW-Authenticate": _CHALLENGE + ', error="invalid_token"'}
    )


async def current_principal(
    settings: SettingsDep,
    users: Users,
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
    principal = await users.principal_of_key(key)
    if principal is None:
        raise _invalid()
    return principal


async def admin_principal(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if not principal.is_admin:
        raise Forbidden("This endpoint is for admins.")
    return principal


CurrentUser = Annotated[Principal, Depends(current_principal)]
CurrentAdmin = Annotated[Principal, Depends(admin_principal)]

"""The one authentication dependency every endpoint passes through."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.deps import SettingsDep
from app.errors import Forbidden, Unauthorized

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API key>`")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="validation-service"'}


@dataclass(frozen=True)
class Principal:
    user_id: str
    role: Literal["admin", "user"]

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


async def current_principal(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized("Send an API key as `Authorization: Bearer <key>`.", headers=_CHALLENGE)
    admin_key = settings.admin_api_key.get_secret_value() if settings.admin_api_key else None
    if admin_key and hmac.compare_digest(credentials.credentials.encode(), admin_key.encode()):
        return Principal(user_id="admin", role="admin")
    raise Unauthorized("The API key is not valid.", headers={**_CHALLENGE, "WWW-Authenticate": _CHALLENGE["WWW-Authenticate"] + ', error="invalid_token"'})


async def admin_principal(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if not principal.is_admin:
        raise Forbidden("This endpoint is for admins.")
    return principal


CurrentUser = Annotated[Principal, Depends(current_principal)]
CurrentAdmin = Annotated[Principal, Depends(admin_principal)]

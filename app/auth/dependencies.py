"""What endpoints ask for: the caller, authenticated before the app by `app/auth/middleware.py`.

The bearer scheme is declared here so the OpenAPI document shows it; the key itself was
resolved (and a bad one answered 401) before any body byte was read.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth.middleware import missing_key
from app.errors import Forbidden
from app.identity.principal import Principal

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API key>`")


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],  # for the OpenAPI document
) -> Principal:
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:  # a route the middleware treats as public asked for a caller
        raise missing_key()
    return principal


async def admin_principal(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if not principal.is_admin:
        raise Forbidden("This endpoint is for admins.")
    return principal


def key_hash(request: Request) -> str:
    """SHA-256 of the caller's API key (event streams re-check it while open)."""
    return str(request.state.key_hash)


CurrentUser = Annotated[Principal, Depends(current_principal)]
CurrentAdmin = Annotated[Principal, Depends(admin_principal)]
KeyHash = Annotated[str, Depends(key_hash)]

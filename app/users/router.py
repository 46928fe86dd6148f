"""`GET /me`: who the caller's key belongs to (the web page's sign-in checks a key with it)."""

from __future__ import annotations

from fastapi import APIRouter

from app.auth.dependencies import CurrentUser
from app.errors import problem_responses
from app.users.schemas import MeOut

router = APIRouter(tags=["users"], responses=problem_responses(401))


@router.get("/me", response_model=MeOut)
async def get_me(principal: CurrentUser) -> MeOut:
    """The caller: user id, role and quota (none for the bootstrap admin, who is not rate limited)."""
    return MeOut.of(principal)

"""`POST /validations/{id}/stream-token`: a short-lived token for the event stream (EventSource
sends no Authorization header). Thin: authorize as GET /validations/{id}, issue, shape."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Response

from app.auth.dependencies import CurrentUser, KeyHash
from app.errors import problem_responses
from app.stream_tokens.dependencies import StreamTokens
from app.stream_tokens.schemas import StreamTokenOut
from app.stream_tokens.service import QUERY_NAME, iso_of
from app.validations.dependencies import Service, ValidationId

router = APIRouter(prefix="/validations", tags=["events"])


@router.post(
    "/{validation_id}/stream-token",
    status_code=201,
    response_model=StreamTokenOut,
    responses=problem_responses(401, 404, 422),
)
async def create_stream_token(
    validation_id: ValidationId,
    principal: CurrentUser,
    caller_key: KeyHash,
    service: Service,
    tokens: StreamTokens,
    response: Response,
) -> StreamTokenOut:
    """A token that opens this validation's event stream as `?token=` (for EventSource) until it
    expires; owner or admin. Rotating the key it was asked with, or disabling the user, revokes it."""
    validation = await service.get(principal, validation_id)  # same authorization as GET /validations/{id}
    token, record = await tokens.issue(principal, caller_key, validation.id)
    response.headers["Cache-Control"] = "no-store"
    return StreamTokenOut(
        token=token,
        expires_at=iso_of(record.expires_at),
        events_url=f"/validations/{validation.id}/events?{QUERY_NAME}={quote(token)}",
    )

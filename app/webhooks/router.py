"""HTTP surface of webhooks: each user's own, under /me. Thin: parse, call the service, shape."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.auth.dependencies import CurrentUser
from app.errors import problem_responses
from app.webhooks.dependencies import Webhooks
from app.webhooks.schemas import DeliveryOut, DeliveryPage, WebhookIn, WebhookOut, WebhookWithSecret

router = APIRouter(prefix="/me/webhook", tags=["webhooks"], responses=problem_responses(401, 422))


@router.put("", response_model=WebhookWithSecret, responses={201: {"model": WebhookWithSecret}})
async def put_webhook(
    body: WebhookIn, principal: CurrentUser, webhooks: Webhooks, response: Response
) -> WebhookWithSecret:
    """Register (201) or replace (200) your webhook; the signing secret is in this answer only."""
    webhook, secret, created = await webhooks.register(principal, body.url)
    response.status_code = 201 if created else 200
    return WebhookWithSecret(**WebhookOut.of(webhook).model_dump(), secret=secret)


@router.get("", response_model=WebhookOut, responses=problem_responses(404))
async def get_webhook(principal: CurrentUser, webhooks: Webhooks) -> WebhookOut:
    """Your webhook's URL (never its secret)."""
    return WebhookOut.of(await webhooks.get(principal))


@router.delete("", status_code=204, responses=problem_responses(404))
async def delete_webhook(principal: CurrentUser, webhooks: Webhooks) -> Response:
    """Remove your webhook: no more deliveries, retries of earlier events included."""
    await webhooks.remove(principal)
    return Response(status_code=204)


@router.get("/deliveries", response_model=DeliveryPage, responses=problem_responses(400))
async def list_deliveries(
    principal: CurrentUser,
    webhooks: Webhooks,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> DeliveryPage:
    """Every delivery attempt of your events, newest first: HTTP status or error, duration."""
    items, next_cursor = await webhooks.deliveries(principal, limit, cursor)
    return DeliveryPage(items=[DeliveryOut.of(d) for d in items], next_cursor=next_cursor)

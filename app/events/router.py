"""`GET /validations/{id}/events`: progress and results as server-sent events (sse-starlette)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask

from app.auth.authenticator import Authenticator
from app.auth.dependencies import CurrentUser, KeyHash
from app.deps import SettingsDep
from app.errors import BadRequest, problem_responses
from app.events.hub import EventHub
from app.events.streams import StreamSlots
from app.validations.dependencies import Service, ValidationId
from core.events import END

log = logging.getLogger(__name__)
router = APIRouter(prefix="/validations", tags=["events"])


def get_hub(request: Request) -> EventHub:
    hub: EventHub = request.app.state.hub
    return hub


def get_streams(request: Request) -> StreamSlots:
    streams: StreamSlots = request.app.state.streams
    return streams


def get_authenticator(request: Request) -> Authenticator:
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator


def _last_event_id(header: str | None, query: str | None) -> int:
    raw = header if header is not None else query
    if raw is None or raw == "":
        return 0
    if not raw.isdigit() or len(raw) > 18:
        raise BadRequest(
            "Last-Event-ID must be an event id this stream sent (a non-negative integer).", field="Last-Event-ID"
        )
    return int(raw)


@router.get(
    "/{validation_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "status, progress, result events; then end"},
        **problem_responses(400, 401, 404, 429),
    },
)
async def stream_events(
    validation_id: ValidationId,
    principal: CurrentUser,
    caller_key: KeyHash,
    service: Service,
    settings: SettingsDep,
    hub: Annotated[EventHub, Depends(get_hub)],
    streams: Annotated[StreamSlots, Depends(get_streams)],
    authenticator: Annotated[Authenticator, Depends(get_authenticator)],
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    after: str | None = None,
    token: Annotated[
        str | None,
        Query(
            max_length=128,
            description="A stream token (POST /validations/{id}/stream-token) instead of the Authorization "
            "header, which EventSource cannot send; read by the auth middleware, accepted on this route only",
        ),
    ] = None,
) -> EventSourceResponse:
    """Server-sent events of one validation; resumes after `Last-Event-ID`; ends with `end`.

    At most `max_streams` open streams per user (429); a stream closes within one poll
    after its key is rotated or its user disabled."""
    start = _last_event_id(last_event_id, after)
    slot = streams.take(principal)  # the cheap check first: a user at the cap costs no read
    try:
        validation = await service.get(principal, validation_id)  # same authorization as GET /validations/{id}
    except BaseException:
        slot.release()
        raise

    async def still_allowed() -> bool:
        try:
            now = await authenticator.recheck(principal, caller_key)
        except Exception:  # noqa: BLE001 - a failed re-check keeps an authenticated stream; the next poll asks again
            log.warning("event stream %s: re-checking the caller failed", validation_id, exc_info=True)
            return True
        if now is None or not (now.is_admin or now.user_id == validation.owner):
            log.info("event stream %s closed: %s's key or access changed", validation_id, principal.user_id)
            return False
        return True

    async def events() -> AsyncIterator[ServerSentEvent]:
        feed = hub.join(validation_id)
        try:
            first, last_id = True, start
            async for event in feed.follow(start, still_allowed):
                retry = settings.sse_retry_millis if first else None
                first = False
                if event is None:
                    status = next((e.data for e in reversed(feed.events) if e.type == "status"), {})
                    yield ServerSentEvent(
                        data=json.dumps({"status": status.get("status")}), event=END, id=str(last_id), retry=retry
                    )
                    return
                last_id = event.seq
                yield ServerSentEvent(data=json.dumps(event.data), event=event.type, id=str(event.seq), retry=retry)
        finally:
            slot.release()
            await hub.leave(feed)

    return EventSourceResponse(
        events(),
        ping=settings.sse_heartbeat_seconds,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        background=BackgroundTask(slot.release),  # HEAD, or a client gone before the stream started
    )

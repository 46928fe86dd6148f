"""Webhooks: register (a secret shown once), read, remove, list delivery attempts; and start
the notification of a validation that ended (the cancel path: its execution was stopped, so no
Finalize runs).

A URL is refused (422 naming `url`) unless it is https (or http where allowed) and its host
resolves to public addresses only (or private ones are allowed: WEBHOOK_ALLOW_PRIVATE). The
notify Lambda checks again at every delivery, against the address it then connects to.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from app.aws.stepfunctions import Executions
from app.errors import BadRequest, Conflict, NotFound, Unprocessable
from app.identity.principal import Principal
from app.pagination import decode_cursor, encode_cursor
from app.settings import Settings
from app.webhooks.records import Delivery, Webhook
from app.webhooks.store import WebhookStore
from core import webhooks
from core.clock import now_iso

log = logging.getLogger(__name__)

Resolve = Callable[[str, int], Awaitable[list[str]]]


RESOLVE_TIMEOUT_SECONDS = 5.0


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to; [] when it does not resolve (within a few seconds)."""
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_SECONDS
        )
    except (socket.gaierror, TimeoutError, UnicodeError):
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class WebhookService:
    def __init__(self, store: WebhookStore, settings: Settings, resolver: Resolve = resolve) -> None:
        self.store = store
        self.settings = settings
        self.resolver = resolver

    async def register(self, principal: Principal, url: str) -> tuple[Webhook, str, bool]:
        """(webhook, its new secret, created). A second PUT replaces the URL and the secret."""
        await self._check_target(url)
        now = now_iso()
        before = await self.store.get(principal.user_id)
        webhook = Webhook(
            owner=principal.user_id, url=url, created_at=before.created_at if before else now, updated_at=now
        )
        secret = webhooks.new_secret()
        await self.store.put(webhook, secret)
        return webhook, secret, before is None

    async def _check_target(self, url: str) -> None:
        try:
            target = webhooks.parse_target(url, allow_http=self.settings.webhooks_http_allowed)
        except webhooks.TargetRefused as exc:
            raise Unprocessable(f"The webhook URL is refused: {exc}.", field="url") from exc
        refusal = webhooks.addresses_refusal(
            target.host,
            await self.resolver(target.host, target.port),
            allow_private=self.settings.webhooks_private_allowed,
        )
        if refusal is not None:
            raise Unprocessable(f"The webhook URL is refused: {refusal}.", field="url")

    async def get(self, principal: Principal) -> Webhook:
        webhook = await self.store.get(principal.user_id)
        if webhook is None:
            raise NotFound("You have no webhook; PUT /me/webhook registers one.")
        return webhook

    async def remove(self, principal: Principal) -> None:
        """No more deliveries, including retries of earlier events."""
        if not await self.store.delete(principal.user_id):
            raise NotFound("You have no webhook; nothing to delete.")

    async def deliveries(
        self, principal: Principal, limit: int, cursor: str | None
    ) -> tuple[list[Delivery], str | None]:
        start = decode_cursor(cursor) if cursor else None
        if start is not None and (not isinstance(start, dict) or start.get("owner") != principal.user_id):
            raise BadRequest("The cursor is not valid; use `next_cursor` from a previous page.", field="cursor")
        items, last = await self.store.deliveries(principal.user_id, limit, start)
        return items, encode_cursor(last) if last else None


class Notifications:
    """Starts a validation's notification: one execution of the notify state machine per
    (validation, run, terminal status), named after the event's `webhook-id`, so a second
    start is refused by Step Functions and the owner gets the event once (then at least once:
    its Retry)."""

    def __init__(self, store: WebhookStore, executions: Executions | None) -> None:
        self.store = store
        self.executions = executions

    async def validation_ended(self, record: Mapping[str, Any], run: int) -> str | None:
        """For the stored validation `record` (core/webhooks.RECORD_FIELDS): the message id of the
        notification started (or started before), None when run `run` has not ended or the owner
        has no webhook."""
        payload = webhooks.notification(record, run)
        if payload is None or self.executions is None or await self.store.get(str(record["owner"])) is None:
            return None
        name = str(payload["message_id"])
        if await self.executions.start_once(name, payload):
            log.info("notification %s started", name)
        return name

    async def resend(self, record: Mapping[str, Any], now: float) -> str:
        """Send the event of the validation `record`'s ended run again (same `webhook-id`: a
        receiver that processed it drops the repeat), as a new notify execution with its own
        Retry. Refused while the first delivery still runs (its Retry would send it anyway),
        more than once a minute, or when the owner has no webhook."""
        payload = webhooks.notification(record)
        if payload is None:
            raise Conflict(f"Validation {record['id']} has not ended: there is no event to send yet.", field="status")
        if self.executions is None or await self.store.get(str(record["owner"])) is None:
            raise NotFound("The validation's owner has no webhook (PUT /me/webhook).", field="webhook")
        message_id = str(payload["message_id"])
        if await self.executions.status(self.executions.arn_of(message_id)) == "RUNNING":
            raise Conflict(
                f"Event {message_id} is still being delivered (with retries); see GET /me/webhook/deliveries.",
                field="message_id",
            )
        if not await self.executions.start_once(webhooks.resend_name(message_id, now), payload):
            raise Conflict(
                f"Event {message_id} was sent again less than {webhooks.RESEND_EVERY_SECONDS} s ago.",
                field="message_id",
            )
        log.info("notification %s sent again", message_id)
        return message_id

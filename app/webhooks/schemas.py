"""Request and response shapes of `/me/webhook`."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.webhooks.records import Delivery, Webhook
from core.webhooks import MAX_URL_CHARS


class WebhookIn(BaseModel):
    url: str = Field(
        min_length=1,
        max_length=MAX_URL_CHARS,
        description="Where to POST events: https (http only where allowed), a host on public addresses",
    )


class WebhookOut(BaseModel):
    url: str
    created_at: str
    updated_at: str
    events: list[str] = Field(description="What is sent: one event per terminal status of each of your validations")

    @classmethod
    def of(cls, webhook: Webhook) -> WebhookOut:
        return cls(
            url=webhook.url,
            created_at=webhook.created_at,
            updated_at=webhook.updated_at,
            events=["validation.succeeded", "validation.failed", "validation.cancelled"],
        )


class WebhookWithSecret(WebhookOut):
    secret: str = Field(
        description="whsec_ + base64 of 32 random bytes: verify `webhook-signature` with it. Shown only in this "
        "answer; a new PUT issues a new one"
    )


class DeliveryOut(BaseModel):
    attempted_at: str
    event_id: str = Field(description="The event's `webhook-id`: the same on every attempt of one event")
    event_type: str
    validation_id: str
    attempt: int = Field(description="1 for the first attempt of this event")
    url: str
    status_code: int | None = Field(description="Your endpoint's HTTP status; null when it gave none")
    error: str | None = Field(description="Why the attempt failed (HTTP status, timeout, connection, refused URL)")
    duration_ms: int

    @classmethod
    def of(cls, delivery: Delivery) -> DeliveryOut:
        return cls(
            attempted_at=delivery.attempted_at,
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            validation_id=delivery.validation_id,
            attempt=delivery.attempt,
            url=delivery.url,
            status_code=delivery.status_code,
            error=delivery.error,
            duration_ms=delivery.duration_ms,
        )


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None

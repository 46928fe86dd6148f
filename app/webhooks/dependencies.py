"""What the webhook endpoints (and the validations service, for cancels) ask for."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.aws.stepfunctions import Executions
from app.deps import ClientsDep, SettingsDep
from app.webhooks.service import Notifications, WebhookService
from app.webhooks.store import WebhookStore


def get_webhook_service(settings: SettingsDep, clients: ClientsDep) -> WebhookService:
    return WebhookService(WebhookStore(clients, settings), settings)


def get_notifications(settings: SettingsDep, clients: ClientsDep) -> Notifications:
    arn = settings.notify_machine_arn
    return Notifications(WebhookStore(clients, settings), Executions(clients.sfn, arn) if arn else None)


Webhooks = Annotated[WebhookService, Depends(get_webhook_service)]
NotificationsDep = Annotated[Notifications, Depends(get_notifications)]

"""What endpoints of validations (and of their event streams) ask for."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from app.aws.functions import Functions
from app.aws.stepfunctions import Executions
from app.deps import ClientsDep, SettingsDep
from app.events.service import EventLog
from app.events.store import EventStore
from app.models.dependencies import Models
from app.pricing.limits import LiveLimits
from app.pricing.prices import PriceBook
from app.pricing.spend import SpendStore
from app.quotas.service import QuotaService
from app.rulesets.dependencies import get_ruleset_service
from app.uploads.dependencies import Uploads as UploadsDep
from app.users.dependencies import Users
from app.validations.service import ValidationService
from app.validations.store import ValidationStore
from app.webhooks.dependencies import NotificationsDep


def get_service(
    request: Request,
    settings: SettingsDep,
    clients: ClientsDep,
    users: Users,
    notifications: NotificationsDep,
    uploads: UploadsDep,
    models: Models,
) -> ValidationService:
    return ValidationService(
        ValidationStore(clients, settings),
        Executions(clients.sfn, settings.state_machine_arn or ""),
        QuotaService(clients, settings),
        users,
        EventLog(EventStore(clients, settings)),
        settings,
        notifications,
        plan_limiter=getattr(request.app.state, "plan_limiter", None),
        prices=PriceBook(clients, settings),
        spending=SpendStore(clients, settings),
        limits=LiveLimits(clients, settings),
        rulesets=get_ruleset_service(settings, clients, users),
        uploads=uploads,
        models=models,
        functions=Functions(clients.lambda_),
    )


Service = Annotated[ValidationService, Depends(get_service)]
ValidationId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]

"""What the user-management endpoints ask for."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.deps import ClientsDep, SettingsDep
from app.quotas.service import QuotaService
from app.users.service import UserService
from app.users.store import UserStore


def get_user_service(settings: SettingsDep, clients: ClientsDep) -> UserService:
    return UserService(UserStore(clients, settings), QuotaService(clients, settings), settings)


Users = Annotated[UserService, Depends(get_user_service)]

"""Annotated dependency aliases: what endpoints ask for."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.aws.clients import AWSClients
from app.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_clients(request: Request) -> AWSClients:
    clients: AWSClients = request.app.state.clients
    return clients


SettingsDep = Annotated[Settings, Depends(get_settings)]
ClientsDep = Annotated[AWSClients, Depends(get_clients)]

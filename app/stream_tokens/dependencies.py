"""What the stream-token endpoint (and the auth middleware, through app.state) asks for."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.aws.clients import AWSClients
from app.deps import ClientsDep, SettingsDep
from app.settings import Settings
from app.stream_tokens.service import StreamTokenService
from app.stream_tokens.store import StreamTokenStore


def stream_token_service(settings: Settings, clients: AWSClients) -> StreamTokenService:
    return StreamTokenService(StreamTokenStore(clients, settings), settings.stream_token_seconds)


def get_stream_tokens(settings: SettingsDep, clients: ClientsDep) -> StreamTokenService:
    return stream_token_service(settings, clients)


StreamTokens = Annotated[StreamTokenService, Depends(get_stream_tokens)]

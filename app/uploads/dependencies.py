"""What the upload endpoints (and a validation built from uploads) ask for, and the presigning
client (opened with the app's other AWS clients) the router's lifespan hands out."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Path, Request

from app.deps import ClientsDep, SettingsDep
from app.uploads.objects import UploadObjects
from app.uploads.service import Clock, UploadService
from app.uploads.store import UploadStore


@asynccontextmanager
async def presigning(app: FastAPI) -> AsyncIterator[None]:
    """Runs inside the app's lifespan, once its clients are open: the page reads `app.state.presigner` too."""
    app.state.presigner = app.state.clients.presigner
    yield


def get_clock() -> Clock:
    """When uploads expire is decided against this clock (tests move it)."""
    return time.time


def get_upload_service(
    request: Request, settings: SettingsDep, clients: ClientsDep, clock: Annotated[Clock, Depends(get_clock)]
) -> UploadService:
    objects = UploadObjects(clients.s3, request.app.state.presigner, settings.bucket)
    return UploadService(UploadStore(clients, settings), objects, settings, clock)


Uploads = Annotated[UploadService, Depends(get_upload_service)]
UploadId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]

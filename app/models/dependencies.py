"""What endpoints (and the validations service) ask for to know the models offered."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.deps import ClientsDep, SettingsDep
from app.models.catalog import ModelCatalog


def get_catalog(clients: ClientsDep, settings: SettingsDep) -> ModelCatalog:
    return ModelCatalog(clients, settings)


Models = Annotated[ModelCatalog, Depends(get_catalog)]

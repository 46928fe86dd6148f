"""The admin's list of models: which models validations may ask for, and each one's limits."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.admin.parallelism import GovernorView, ParallelismSettings, limits_of
from app.auth.dependencies import CurrentAdmin, CurrentUser
from app.aws.functions import Functions
from app.deps import ClientsDep, SettingsDep
from app.errors import problem_responses
from app.models.dependencies import Models
from app.models.schemas import ModelsOut, ModelsPatch, OfferedModel, OfferedOut
from app.users.dependencies import Users
from core.models import Catalog
from core.pricing import TIERS

router = APIRouter(prefix="/admin", tags=["admin"], responses=problem_responses(401, 403, 422))
offered_router = APIRouter(tags=["validations"], responses=problem_responses(401))


@offered_router.get("/models", response_model=OfferedOut, responses=problem_responses(502))
async def offered(principal: CurrentUser, models: Models) -> OfferedOut:
    """The models your validations may name, with the tiers each may be asked at, and the tiers your
    quota allows (a submission's `model` and `tier`; docs: Lanes)."""
    quota = principal.quota
    return OfferedOut(
        models=[OfferedModel(name=e.name, tiers=list(e.tiers), default=e.default) for e in await models.entries()],
        your_tiers=list(quota.tiers) if quota is not None else list(TIERS),  # type: ignore[arg-type]  # stored tiers
        default_tier=quota.default_tier if quota is not None else "standard",  # type: ignore[arg-type]
    )


async def _view(catalog: Catalog, clients: ClientsDep, settings: SettingsDep) -> dict[str, Any]:
    configured = await ParallelismSettings(clients, settings).read()
    view = GovernorView(clients, settings)
    limits = limits_of(configured)
    budgets = await view.models(catalog, limits)
    return {
        "models": [
            {**entry.as_dict(), "family": entry.family, "budget": budgets[entry.name]} for entry in catalog.entries
        ],
        "window_seconds": settings.governor_window_seconds,
        "in_sync": view.in_sync(await view.mirror(), limits, catalog),
    }


@router.get("/models", response_model=ModelsOut, responses=problem_responses(502))
async def get_models(admin: CurrentAdmin, models: Models, clients: ClientsDep, settings: SettingsDep) -> dict[str, Any]:
    """The models validations may ask for (SSM `<prefix>/models`; without it, the deployment's model alone),
    each with its limits, tiers and governor budget now."""
    return await _view(await models.catalog(fresh=True), clients, settings)


@router.patch("/models", response_model=ModelsOut, responses=problem_responses(502))
async def patch_models(
    body: ModelsPatch, admin: CurrentAdmin, models: Models, clients: ClientsDep, settings: SettingsDep, users: Users
) -> dict[str, Any]:
    """Replace the list of models live (no redeploy): saved in SSM (the default's targets are `target-tpm` and
    `target-rpm`) and copied to the governor, so validators follow within CONFIG_CACHE_SECONDS. A model the
    service cannot ask (no structured outputs, not a chat model) is refused, naming the field. Audited."""
    before, after = await models.replace([m.entry() for m in body.models])
    if after != before:
        await users.audit(
            admin.user_id,
            "models.update",
            "models",
            [e.as_dict() for e in before.entries] if before is not None else None,
            [e.as_dict() for e in after.entries],
        )
        await Functions(clients.lambda_).copy_live_parameters(settings.reconcile_function)
    return await _view(after, clients, settings)

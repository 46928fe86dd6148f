"""Admin endpoints: users and keys, parallelism (SSM), the audit trail."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from app.admin.parallelism import GovernorView, ParallelismSettings
from app.admin.schemas import ParallelismPatch, ParallelismView
from app.auth.dependencies import CurrentAdmin
from app.aws.functions import Functions
from app.deps import ClientsDep, SettingsDep
from app.errors import problem_responses
from app.models.dependencies import Models
from app.pagination import decode_cursor, encode_cursor, is_key
from app.users.dependencies import Users
from app.users.schemas import (
    AuditEntry,
    AuditPage,
    UserCreate,
    UserOut,
    UserPage,
    UserPatch,
    UserWithKey,
)
from app.validations.dependencies import Service

UserId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]
router = APIRouter(prefix="/admin", tags=["admin"], responses=problem_responses(401, 403, 422))


@router.post("/users", status_code=201, response_model=UserWithKey, responses=problem_responses(409))
async def create_user(body: UserCreate, admin: CurrentAdmin, users: Users) -> UserWithKey:
    """Create a user; the API key is in this answer only."""
    return UserWithKey.issued(*await users.create(admin, body))


@router.get("/users", response_model=UserPage, responses=problem_responses(400))
async def list_users(
    admin: CurrentAdmin,
    users: Users,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> UserPage:
    """Users (not the bootstrap admin), a page at a time in no particular order; `next_cursor` for more."""
    start = decode_cursor(cursor, lambda v: is_key(v, {"user_id"})) if cursor else None
    items, last = await users.page(limit, start)
    return UserPage(items=[UserOut.of(u) for u in items], next_cursor=encode_cursor(last) if last else None)


@router.get("/users/{user_id}", response_model=UserOut, responses=problem_responses(404))
async def get_user(user_id: UserId, admin: CurrentAdmin, users: Users) -> UserOut:
    """A user's role, quota, policy and state."""
    return UserOut.of(await users.get(user_id))


@router.patch("/users/{user_id}", response_model=UserOut, responses=problem_responses(404))
async def patch_user(
    user_id: UserId, body: UserPatch, admin: CurrentAdmin, users: Users, validations: Service
) -> UserOut:
    """Change quota, policy, role, or disable. Disabling also cancels the user's queued validations
    (nothing of theirs is admitted after it; running ones finish, or an admin cancels them)."""
    user = await users.patch(admin, user_id, body)
    if body.disabled:
        cancelled = await validations.cancel_queued_of(admin, user_id)
        if cancelled:
            await users.audit(admin.user_id, "user.disable.cancel_queued", user_id, None, {"cancelled": cancelled})
    return UserOut.of(user)


@router.post(
    "/users/{user_id}/keys", status_code=201, response_model=UserWithKey, responses=problem_responses(404, 409)
)
async def rotate_key(user_id: UserId, admin: CurrentAdmin, users: Users) -> UserWithKey:
    """Issue a new key; the old one stops working."""
    return UserWithKey.issued(*await users.rotate_key(admin, user_id))


@router.post("/reconcile", responses=problem_responses(502))
async def reconcile(admin: CurrentAdmin, settings: SettingsDep, clients: ClientsDep, users: Users) -> dict[str, Any]:
    """Run one reconciler pass now (it also runs on a schedule) and answer what it fixed: validations
    ended because their execution was gone or had ended (`ended`), runs refunded (`refunded`), cancels
    stopped again (`stopped`), dead governor leases reclaimed, live parameters copied from SSM to the validators'
    copy (`parameters`). Audited."""
    report = await Functions(clients.lambda_).invoke(settings.reconcile_function, {"source": "admin"})
    await users.audit(admin.user_id, "reconcile", "validations", None, report)
    return report


@router.get("/parallelism", response_model=ParallelismView, responses=problem_responses(502))
async def get_parallelism(
    admin: CurrentAdmin, settings: SettingsDep, clients: ClientsDep, models: Models
) -> dict[str, Any]:
    """The SSM values (configured), the default model's effective budget, and the tokens it used in the last
    window (every model's: `GET /admin/models`)."""
    configured = await ParallelismSettings(clients, settings).read()
    return await GovernorView(clients, settings).read(configured, await models.catalog(fresh=True))


@router.patch("/parallelism", response_model=ParallelismView, responses=problem_responses(502))
async def patch_parallelism(
    body: ParallelismPatch,
    admin: CurrentAdmin,
    settings: SettingsDep,
    clients: ClientsDep,
    users: Users,
    models: Models,
) -> dict[str, Any]:
    """Change parallelism settings live (no redeploy): saved in SSM and copied to the governor's budget item,
    so running validations follow within CONFIG_CACHE_SECONDS plus one call; range-checked, audited.
    `target_tpm` and `target_rpm` are the default model's (`GET /admin/models`)."""
    parameters = ParallelismSettings(clients, settings)
    before = await parameters.read()
    changes = body.model_dump(exclude_none=True)
    await parameters.write(changes)
    after = await parameters.read()
    if changes:
        await users.audit(
            admin.user_id,
            "parallelism.update",
            settings.ssm_prefix,
            {k: before[k] for k in changes},
            {k: after[k] for k in changes},
        )
        await parameters.propagate()
    return await GovernorView(clients, settings).read(after, await models.catalog(fresh=True))


@router.get("/audit", response_model=AuditPage, responses=problem_responses(400))
async def get_audit(
    admin: CurrentAdmin,
    users: Users,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> AuditPage:
    """Admin changes, newest first: who, when, what, old → new."""
    # The audit table's LastEvaluatedKey: the one partition, and a sort key as `UserStore.audit` writes it.
    start = decode_cursor(cursor, lambda v: is_key(v, {"stream", "at"}) and v["stream"] == "admin") if cursor else None
    items, last = await users.audit_page(limit, start)
    return AuditPage(
        items=[AuditEntry.model_validate(asdict(i)) for i in items], next_cursor=encode_cursor(last) if last else None
    )

"""Admin API shapes: users, keys, parallelism, audit."""

from __future__ import annotations

import unicodedata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.identity.principal import BOOTSTRAP_ADMIN, Principal
from app.users.records import User
from core.fairness import MAX_WEIGHT, MIN_WEIGHT


class QuotaIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    capacity_tokens: int = Field(ge=1, le=10**12)
    refill_tokens_per_minute: int = Field(ge=1, le=10**12)
    max_running: int = Field(ge=1, le=10_000)
    max_queued: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="Validations that may wait queued at once (default DEFAULT_MAX_QUEUED)",
    )
    weight: float = Field(
        default=1.0,
        ge=MIN_WEIGHT,
        le=MAX_WEIGHT,
        allow_inf_nan=False,
        description="Share of the deployment's token budget relative to other users with work waiting",
    )
    max_spend_usd: float | None = Field(
        default=None,
        gt=0,
        le=10**9,
        allow_inf_nan=False,
        description="Spend budget in USD per `spend_period`: a submission whose estimated cost would pass what "
        "is left is refused (429 naming `budget`); none: no budget",
    )
    spend_period: Literal["day", "month"] = Field(
        default="month", description="The budget's UTC calendar period: `day` or `month`"
    )
    tiers: list[Literal["standard", "flex", "batch"]] = Field(
        default=["standard", "flex"], min_length=1, description="The service tiers the user may ask"
    )
    default_tier: Literal["standard", "flex", "batch"] = Field(
        default="standard", description="The tier of a submission that names none (one of `tiers`)"
    )

    @model_validator(mode="after")
    def _default_allowed(self) -> QuotaIn:
        if self.default_tier not in self.tiers:
            raise ValueError(f"default_tier {self.default_tier!r} is not one of tiers {self.tiers}")
        return self


# Ids no user may take: `admin` is the bootstrap admin's (ADMIN_API_KEY), who owns validations
# and the audit trail under that id; a user of that name would see and cancel them.
RESERVED_USER_IDS = frozenset({"admin", BOOTSTRAP_ADMIN})


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    role: Literal["user", "admin"] = "user"
    quota: QuotaIn | None = None
    on_limit: Literal["queue", "reject"] | None = None

    @field_validator("user_id", mode="before")
    @classmethod
    def _normalized(cls, value: Any) -> Any:
        """NFC, so one id has one spelling (the pattern then allows ASCII only)."""
        return unicodedata.normalize("NFC", value) if isinstance(value, str) else value

    @field_validator("user_id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.casefold() in RESERVED_USER_IDS:
            raise ValueError(f"{value!r} is reserved (the bootstrap admin's id)")
        return value


class UserPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quota: QuotaIn | None = None
    on_limit: Literal["queue", "reject"] | None = None
    disabled: bool | None = None
    role: Literal["user", "admin"] | None = None


class UserOut(BaseModel):
    user_id: str
    role: Literal["user", "admin"]
    quota: QuotaIn
    on_limit: Literal["queue", "reject"]
    disabled: bool
    created_at: str
    updated_at: str | None = None

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(**_shown(user))


class UserWithKey(UserOut):
    api_key: str = Field(description="Shown once; only its hash is stored.")

    @classmethod
    def issued(cls, user: User, api_key: str) -> UserWithKey:
        return cls(**_shown(user), api_key=api_key)


def _shown(user: User) -> dict[str, Any]:
    return {
        "user_id": user.user_id,
        "role": user.role,
        "quota": QuotaIn.model_validate(user.quota.as_dict()),
        "on_limit": user.on_limit,
        "disabled": user.disabled,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    }


class AuditEntry(BaseModel):
    at: str
    actor: str
    action: str
    target: str
    old: Any = None
    new: Any = None


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_cursor: str | None


class UserPage(BaseModel):
    items: list[UserOut]
    next_cursor: str | None


class MeOut(BaseModel):
    """The caller, as its key resolves now."""

    user_id: str
    role: Literal["user", "admin"]
    quota: QuotaIn | None = Field(description="None for the bootstrap admin (not rate limited)")
    on_limit: Literal["queue", "reject"]

    @classmethod
    def of(cls, principal: Principal) -> MeOut:
        quota = QuotaIn.model_validate(principal.quota.as_dict()) if principal.quota is not None else None
        return cls(user_id=principal.user_id, role=principal.role, quota=quota, on_limit=principal.on_limit)

"""The shapes of `GET` and `PATCH /admin/models`: the models offered and each one's governor budget."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from core.models import BATCH_QUEUE_RANGE, MAX_MODELS, RPM_RANGE, TPM_RANGE, Family, ModelEntry
from core.pricing import Tier


class ModelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(
        min_length=1,
        max_length=128,
        description="The model as the model server names it (`gpt-4o-mini`, `o4-mini`, `ft:gpt-4o-mini:org::id`)",
    )
    target_tpm: int = Field(
        ge=TPM_RANGE[0], le=TPM_RANGE[1], description="Its tokens-per-minute limit: its governor budget's target"
    )
    target_rpm: int = Field(ge=RPM_RANGE[0], le=RPM_RANGE[1], description="Its requests-per-minute limit")
    tiers: list[Tier] = Field(min_length=1, description="The tiers it may be asked at: standard, flex, batch")
    default: bool = Field(default=False, description="The model of a validation that names none; exactly one is")
    batch_queue_tokens: int | None = Field(
        default=None,
        ge=BATCH_QUEUE_RANGE[0],
        le=BATCH_QUEUE_RANGE[1],
        description="Its Batch API queue limit: prompt tokens in batches not ended (null: BATCH_QUEUE_LIMIT_TOKENS)",
    )

    def entry(self) -> ModelEntry:
        return ModelEntry(
            self.name, self.target_tpm, self.target_rpm, tuple(self.tiers), self.default, self.batch_queue_tokens
        )


class ModelsPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[ModelIn] = Field(
        min_length=1,
        max_length=MAX_MODELS,
        description=f"The whole list (1-{MAX_MODELS}), replacing the one in effect; the default's targets become "
        "`target-tpm` and `target-rpm`",
    )


class ModelBudget(BaseModel):
    tokens_per_window: int = Field(
        description="Its budget now: target_tpm (or a lower upstream limit) × throttle_threshold × factor"
    )
    requests_per_window: int | None = Field(description="The same for requests (null: not governed)")
    factor: float = Field(description="1.0, lowered after this model's 429s, recovering over time")
    upstream_limit_tokens: int | None = Field(description="The limit its answers' headers reported, when lower")
    upstream_limit_requests: int | None = Field(description="The request limit its headers reported, when lower")
    tokens_last_window: int = Field(description="Tokens charged to its calls in the last window")


class ModelOut(BaseModel):
    name: str
    target_tpm: int
    target_rpm: int | None = Field(description="null: its requests are not governed")
    tiers: list[Tier]
    default: bool
    batch_queue_tokens: int | None = Field(
        default=None, description="Its Batch API queue limit (null: the deployment's BATCH_QUEUE_LIMIT_TOKENS)"
    )
    family: Family = Field(
        description="How it is asked: `reasoning` (o-series, gpt-5: max_completion_tokens, no temperature) or `chat`"
    )
    budget: ModelBudget


class ModelsOut(BaseModel):
    """The models validations may ask for, each with a governor budget of its own."""

    models: list[ModelOut]
    window_seconds: float = Field(description="The window the budgets' figures are per (60 outside benchmarks)")
    in_sync: bool = Field(
        description="The validators' copy of the list and settings matches SSM; false after a direct SSM edit "
        "until the reconciler's next pass"
    )


class OfferedModel(BaseModel):
    name: str
    tiers: list[Tier] = Field(description="The tiers it may be asked at (those you may ask: `your_tiers`)")
    default: bool = Field(description="The model of a validation that names none")


class OfferedOut(BaseModel):
    """What a validation of yours may name: `model` one of `models`, `tier` one of its tiers and of yours."""

    models: list[OfferedModel]
    your_tiers: list[Tier] = Field(description="The tiers your quota allows (all of them: no quota)")
    default_tier: Tier = Field(description="The tier of your submission that names none")

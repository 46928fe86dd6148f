"""The shapes of `GET` and `PATCH /admin/parallelism`: the live settings and what the governor does with them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from core.headroom import MAX_PARALLELISM


class ParallelismOut(BaseModel):
    max_parallelism: int
    target_tpm: int = Field(description="The default model's tokens-per-minute limit")
    target_rpm: int | None = Field(
        description="The default model's requests-per-minute limit (null: requests are not governed)"
    )
    throttle_threshold: float
    fair_share: bool = Field(
        description="Weighted fair share of the budget across users (off: first come, first served)"
    )


class GovernorEffective(BaseModel):
    tokens_per_window: int = Field(
        description="The default model's budget now: target_tpm (or a lower upstream limit) × throttle_threshold "
        "× factor"
    )
    requests_per_window: int | None = Field(
        description="The same for requests: target_rpm (or a lower upstream limit) × throttle_threshold × factor"
    )
    window_seconds: float = Field(description="The window the TPM and RPM figures are per (60 outside benchmarks)")
    factor: float = Field(description="1.0, lowered after upstream 429s, recovering over time")
    upstream_limit_tokens: int | None = Field(description="The limit OpenAI's headers reported, when below target_tpm")
    upstream_limit_requests: int | None = Field(
        description="The request limit OpenAI's headers reported, when below target_rpm"
    )
    burst_tokens: int = Field(description="Tokens the budget may grant at once")
    tokens_per_request: int = Field(
        description="The least a call is charged: a request's share of the budget in tokens (0: requests not governed)"
    )
    in_sync: bool = Field(
        description="The validators' copy of the settings (on the governor's budget item) matches SSM; false "
        "after a direct SSM edit until the reconciler's next pass"
    )


class GovernorUsage(BaseModel):
    tokens_last_window: int = Field(
        description="Tokens charged to the default model's calls in the last window (prompt + max_tokens, at least "
        "a request's worth)"
    )
    calls_in_flight: int = Field(description="Call slots held by validators now, across all validations")


class ParallelismView(ParallelismOut):
    """The configured values (SSM) and what the governor is doing with them."""

    model: str = Field(
        description="The default model: target_tpm and target_rpm are its limits, `effective` and "
        "`usage.tokens_last_window` its budget's (every model's: GET /admin/models)"
    )
    effective: GovernorEffective
    usage: GovernorUsage


class ParallelismPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_parallelism: int | None = Field(
        default=None,
        ge=1,
        le=MAX_PARALLELISM,
        description=f"Model calls in flight per validation: 1-{MAX_PARALLELISM} "
        "(above 40, the Map's 40 invocations each run several calls)",
    )
    target_tpm: int | None = Field(default=None, ge=1_000, le=100_000_000)
    target_rpm: int | None = Field(
        default=None, ge=1, le=10_000_000, description="The model's requests-per-minute limit: 1-10,000,000"
    )
    throttle_threshold: float | None = Field(
        default=None, ge=0.05, le=1.0, description="Share of target_tpm and target_rpm to use: 0.05-1.0"
    )
    fair_share: bool | None = Field(default=None, description="Weighted fair share across users on or off")

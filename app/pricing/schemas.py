"""Shapes of the cost endpoints: prices, spend, budgets."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class PricesOut(BaseModel):
    prices: dict[str, dict[str, dict[str, float]]] = Field(
        description="USD per 1M tokens: {model: {tier: {input, cached_input, output}}}; tiers: standard, flex, batch"
    )
    overrides: dict[str, Any] = Field(description="What `PATCH /admin/prices` changed from the defaults")
    defaults_read: str = Field(description="When the default prices were read from the provider's price page")
    model: str = Field(description="The default model (`GET /admin/models`): what a validation naming none asks")
    model_priced: bool = Field(description="Whether that model has a price (else validations' cost is null)")
    unpriced: list[str] = Field(
        description="`model/tier` of each offered model and tier it may use that has no price here: "
        "validations in that lane show `cost_usd: null` and budgets refuse them"
    )


class PricesPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prices: dict[str, dict[str, dict[str, float]] | None] = Field(
        description="Per model: its tiers' prices (replacing the model's tiers), `{}` (no price), or null "
        "(drop the override: back to the default)"
    )


class SpendOut(BaseModel):
    user_id: str | None = None
    period: str = Field(description="`day#YYYY-MM-DD` or `month#YYYY-MM` (UTC)")
    spent_usd: float = Field(description="Cost of the runs settled in the period")
    reserved_usd: float = Field(description="Estimates of submitted validations not settled yet (budgets)")
    prompt_tokens: int
    cached_prompt_tokens: int
    completion_tokens: int
    runs: int = Field(description="Runs settled in the period")
    unpriced_runs: int = Field(description="Of those, runs whose model had no price (their cost is not in spent_usd)")


class BudgetOut(BaseModel):
    max_spend_usd: float
    spend_period: Literal["day", "month"]
    remaining_usd: float = Field(description="What is left this period after what is spent and reserved")
    resets_at: str = Field(description="When the period ends (UTC)")
    threshold_alerted: bool = Field(description="Whether `budget.threshold` (80%) was sent this period")


class UsageOut(BaseModel):
    user_id: str
    current: str = Field(description="The period key of now")
    items: list[SpendOut] = Field(description="Newest first")
    budget: BudgetOut | None
    next_cursor: str | None


class SpendPage(BaseModel):
    period: str
    items: list[SpendOut]
    next_cursor: str | None

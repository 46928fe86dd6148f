"""What users spend, per UTC calendar day and month, and spend budgets.

The `spend` table holds one item per user and period (`day#2026-12-07`, `month#2026-12`):

- `spent_usd`: the cost of every settled run in the period (core/pricing.py prices it);
- `reserved_usd`: estimates of submitted validations not settled yet;
- `committed_usd`: their sum, kept as one number because a condition expression cannot add:
  a reservation succeeds only while `committed_usd <= max_spend_usd - estimate`, in one
  conditional UpdateItem, so concurrent submissions cannot overspend by more than one
  validation's estimate (what its run may use beyond it);
- token counts, runs settled, runs without a price (`unpriced`: their cost is unknown, never guessed);
- `alerted`: set once, when the budget's threshold (80%) is first passed — the `budget.threshold`
  webhook goes out for exactly the request that set it.

A budget (`max_spend_usd`, `spend_period`) lives on the user's quota. Settlement charges the
actual cost to the day and the month of the settlement and releases the run's reservation
from the period it was made in: a validation in flight is never cut off by its own overrun.

`listing` (the period key, on user items only) is the `by_period` index's hash key: every
user's spend of one period, for the admin. Items expire `RETENTION_DAYS` after their period.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from core.dynamo import Update
from core.pricing import Tokens

Period = Literal["day", "month"]
PERIODS: tuple[Period, ...] = ("day", "month")
THRESHOLD = Decimal("0.8")  # the share of a budget at which `budget.threshold` is sent
KEEP_SECONDS = 400 * 86_400  # a period's item outlives its month by about a year


def _at(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)


def period_key(period: Period, now: float) -> str:
    """`day#2026-12-07` or `month#2026-12`: the UTC calendar period holding `now`."""
    at = _at(now)
    return f"day#{at:%Y-%m-%d}" if period == "day" else f"month#{at:%Y-%m}"


def period_start(period: Period, now: float) -> float:
    at = _at(now)
    start = (
        at.replace(hour=0, minute=0, second=0, microsecond=0)
        if period == "day"
        else at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    )
    return start.timestamp()


def resets_at(period: Period, now: float) -> float:
    """When the period holding `now` ends (the next UTC midnight, or the first of the next month)."""
    if period == "day":
        return period_start("day", now) + 86_400
    first = _at(now).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (
        first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)
    )
    return following.timestamp()


@dataclass(frozen=True)
class Budget:
    """A spend limit per UTC calendar period."""

    max_usd: Decimal
    period: Period

    @classmethod
    def of(cls, quota: Mapping[str, Any] | None) -> Budget | None:
        """From a stored quota's `max_spend_usd` and `spend_period` (none set: no budget)."""
        if not quota or quota.get("max_spend_usd") is None:
            return None
        period = quota.get("spend_period") or "month"
        return cls(Decimal(str(quota["max_spend_usd"])), "day" if period == "day" else "month")

    def room(self, committed: Decimal) -> Decimal:
        return max(Decimal(0), self.max_usd - committed)


def reserve_update(
    table: str, user_id: str, key: str, amount: Decimal, budget: Budget, expires_at: int
) -> dict[str, Any]:
    """Reserve a submission's estimated cost in the budget's period: refused (ConditionalCheckFailed)
    when what is spent and reserved already leaves less than `amount`."""
    return (
        Update()
        .add(reserved_usd=amount, committed_usd=amount)
        .set(listing=key, expires_at=expires_at)
        .when("attribute_not_exists({committed_usd}) OR {committed_usd} <= :room", room=budget.max_usd - amount)
        .item(table, {"user_id": user_id, "period": key})
    )


def release_update(table: str, user_id: str, key: str, amount: Decimal) -> dict[str, Any]:
    """Give a reservation back (a submission that did not start)."""
    return Update().add(reserved_usd=-amount, committed_usd=-amount).item(table, {"user_id": user_id, "period": key})


@dataclass(frozen=True)
class Charge:
    """What one settled run adds to its owner's spend."""

    cost: Decimal | None  # None: not priced (counted as `unpriced`, never guessed)
    tokens: Tokens
    reserved_key: str | None = None  # the period its reservation was made in
    reserved: Decimal = Decimal(0)


def charge_updates(table: str, user_id: str, charge: Charge, now: float) -> list[dict[str, Any]]:
    """One update per item: the day and the month of `now` get the cost and tokens; the
    reservation leaves the period it was made in (one of those, or an earlier one)."""
    expires_at = int(now) + KEEP_SECONDS
    cost = charge.cost if charge.cost is not None else Decimal(0)
    added: dict[str, dict[str, Any]] = {}
    for period in PERIODS:
        added[period_key(period, now)] = {
            "spent_usd": cost,
            "committed_usd": cost,
            "prompt_tokens": charge.tokens.prompt,
            "cached_prompt_tokens": charge.tokens.cached,
            "completion_tokens": charge.tokens.completion,
            "runs": 1,
            "unpriced": 1 if charge.cost is None else 0,
        }
    if charge.reserved_key is not None and charge.reserved:
        counters = added.setdefault(charge.reserved_key, {})
        counters["reserved_usd"] = -charge.reserved
        counters["committed_usd"] = counters.get("committed_usd", Decimal(0)) - charge.reserved
    updates = []
    for key, counters in added.items():
        update = Update().add(**counters)
        if "runs" in counters:  # a period of this charge (an earlier one only gives a reservation back)
            update.set(listing=key, expires_at=expires_at)
        updates.append(update.item(table, {"user_id": user_id, "period": key}))
    return updates


def threshold_update(table: str, user_id: str, key: str, budget: Budget) -> dict[str, Any]:
    """Mark the period alerted, once, when its spend has passed the threshold (ConditionalCheckFailed
    otherwise: below it, or already alerted)."""
    return (
        Update()
        .set(alerted=True)
        .when(
            "attribute_not_exists({alerted}) AND {spent_usd} >= :threshold",
            threshold=budget.max_usd * THRESHOLD,
        )
        .item(table, {"user_id": user_id, "period": key})
    )


def spend_view(item: Mapping[str, Any] | None, key: str) -> dict[str, Any]:
    """A period's item as the API shows it (an absent item: nothing spent)."""
    item = item or {}
    return {
        "period": key,
        "spent_usd": float(Decimal(str(item.get("spent_usd", 0))).quantize(Decimal("0.000001"))),
        "reserved_usd": float(Decimal(str(item.get("reserved_usd", 0))).quantize(Decimal("0.000001"))),
        "prompt_tokens": int(item.get("prompt_tokens", 0)),
        "cached_prompt_tokens": int(item.get("cached_prompt_tokens", 0)),
        "completion_tokens": int(item.get("completion_tokens", 0)),
        "runs": int(item.get("runs", 0)),
        "unpriced_runs": int(item.get("unpriced", 0)),
    }


# --- completion ÷ prompt ratios, per model (what estimates expect a model to answer) -------------
RATIOS_USER = "#ratios"  # the user id of the per-model ratio items (never a user's: `#` is not allowed)
RATIO_STEP = 100  # buckets of 0.01
RATIO_BUCKETS = 300  # up to 3.0; above it counts as 3.0


def ratio_bucket(prompt: int, completion: int) -> int:
    return min(RATIO_BUCKETS, int(completion * RATIO_STEP / prompt)) if prompt else 0


def ratio_update(table: str, model: str, prompt: int, completion: int) -> dict[str, Any]:
    """One ended run's completion ÷ prompt tokens into its model's histogram."""
    return (
        Update()
        .add(**{f"b{ratio_bucket(prompt, completion)}": 1, "runs": 1})
        .item(table, {"user_id": RATIOS_USER, "period": f"model#{model}"})
    )


def ratio_percentiles(item: Mapping[str, Any] | None, *quantiles: float) -> tuple[float, ...] | None:
    """The histogram's quantiles (the upper edge of the bucket reaching each), None without history."""
    if not item or not int(item.get("runs", 0)):
        return None
    counts = sorted((int(k[1:]), int(v)) for k, v in item.items() if k.startswith("b") and k[1:].isdigit())
    total = sum(n for _, n in counts)
    answers = []
    for q in quantiles:
        reached, wanted = 0, q * total
        for bucket, n in counts:
            reached += n
            if reached >= wanted:
                answers.append((bucket + 1) / RATIO_STEP)
                break
    return tuple(answers)

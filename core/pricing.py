"""What model calls cost in US dollars: a price table per model and tier, and the arithmetic.

A price is USD per 1M tokens, for input (prompt) tokens, cached input tokens (the part of the
prompt OpenAI served from its prefix cache, `usage.prompt_tokens_details.cached_tokens`) and
output (completion) tokens. Each model has a price per tier the service names:

- `standard`: OpenAI's `service_tier: "default"` (also what "auto" and "scale" answers are billed at here);
- `flex`: `service_tier: "flex"`, Batch prices, slower;
- `batch`: the Batch API.

A call is priced at the tier that served it (the response's `service_tier`), never at the one
asked for. A served model name matches the table by `match`: the name itself, or the name
without its snapshot date (`gpt-4o-mini-2024-07-18` → `gpt-4o-mini`). Nothing else: a model the
table does not name has no price, and its cost is `None`, never a guess.

Amounts are `Decimal` (DynamoDB numbers), rounded to `QUANTUM` only where they are shown.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

Tier = Literal["standard", "flex", "batch"]
TIERS: tuple[Tier, ...] = ("standard", "flex", "batch")
MILLION = Decimal(1_000_000)
QUANTUM = Decimal("0.000001")  # costs are shown to a millionth of a dollar

# A dated snapshot suffix: `-2024-07-18` (today's names) or `-0613` (older ones).
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{4})$")

# The defaults, USD per 1M tokens, as OpenAI's pricing page listed them when they were read
# (DEFAULTS_READ). Prices change: an operator checks the page and overrides with PATCH /admin/prices.
DEFAULTS_READ = "2025-08-15"
LOCAL_MODEL = "simulator"  # the local simulator's model name (local/simulator/app.py MODEL_NAME)


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens of one model at one tier."""

    input: Decimal
    cached_input: Decimal
    output: Decimal

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> Price:
        """From a stored or sent mapping; every amount a finite number ≥ 0 (ValueError otherwise)."""
        amounts = {}
        for name in ("input", "cached_input", "output"):
            if name not in values:
                raise ValueError(f"missing `{name}`")
            raw = values[name]
            if isinstance(raw, bool) or not isinstance(raw, int | float | str | Decimal):
                raise ValueError(f"`{name}` is not a number")
            amount = Decimal(str(raw))
            if not amount.is_finite() or amount < 0:
                raise ValueError(f"`{name}` must be a finite number ≥ 0")
            amounts[name] = amount
        unknown = sorted(set(values) - set(amounts))
        if unknown:
            raise ValueError(f"unknown field `{unknown[0]}`")
        if amounts["cached_input"] > amounts["input"]:
            raise ValueError("`cached_input` above `input`")
        return cls(**amounts)

    def as_dict(self) -> dict[str, float]:
        return {"input": float(self.input), "cached_input": float(self.cached_input), "output": float(self.output)}

    def cost(self, prompt_tokens: int, cached_prompt_tokens: int, completion_tokens: int) -> Decimal:
        """USD of one call (or of a sum of calls at this price): cached tokens are part of the prompt's."""
        cached = min(cached_prompt_tokens, prompt_tokens)
        return (
            (prompt_tokens - cached) * self.input + cached * self.cached_input + completion_tokens * self.output
        ) / MILLION


def _p(input_: str, cached: str, output: str) -> Price:
    return Price(Decimal(input_), Decimal(cached), Decimal(output))


def _half(price: Price) -> Price:
    """The Batch API's and Flex's discount: half of every standard amount."""
    return Price(price.input / 2, price.cached_input / 2, price.output / 2)


def _tiers(standard: Price, *, flex: bool = False) -> dict[Tier, Price]:
    tiers: dict[Tier, Price] = {"standard": standard, "batch": _half(standard)}
    if flex:
        tiers["flex"] = _half(standard)
    return tiers


PriceTable = dict[str, dict[Tier, Price]]

DEFAULT_PRICES: PriceTable = {
    "gpt-4o-mini": _tiers(_p("0.15", "0.075", "0.60")),
    "gpt-4o": _tiers(_p("2.50", "1.25", "10.00")),
    "gpt-4.1-mini": _tiers(_p("0.40", "0.10", "1.60")),
    "gpt-4.1-nano": _tiers(_p("0.10", "0.025", "0.40")),
    "gpt-5-mini": _tiers(_p("0.25", "0.025", "2.00"), flex=True),
    "o4-mini": _tiers(_p("1.10", "0.275", "4.40"), flex=True),
    # The local simulator, priced like gpt-4o-mini (with a flex tier), so that estimates, usage
    # and budgets can be seen and tested without a key. Not a real price.
    LOCAL_MODEL: _tiers(_p("0.15", "0.075", "0.60"), flex=True),
}


def table_of(values: Mapping[str, Any]) -> PriceTable:
    """A price table from its JSON form `{model: {tier: {input, cached_input, output}}}`.
    ValueError naming the model and tier at fault."""
    table: PriceTable = {}
    for model, tiers in values.items():
        if not isinstance(model, str) or not model or len(model) > 128:
            raise ValueError("a model name is 1-128 characters")
        if not isinstance(tiers, Mapping) or not tiers:
            raise ValueError(f"{model}: a mapping of tiers ({', '.join(TIERS)}) to prices")
        table[model] = {}
        for tier, price in tiers.items():
            if tier not in TIERS:
                raise ValueError(f"{model}: unknown tier `{tier}` (one of {', '.join(TIERS)})")
            if not isinstance(price, Mapping):
                raise ValueError(f"{model}.{tier}: a price is {{input, cached_input, output}}")
            try:
                table[model][tier] = Price.of(price)
            except ValueError as exc:
                raise ValueError(f"{model}.{tier}: {exc}") from None
    return table


def table_json(table: PriceTable) -> dict[str, dict[str, dict[str, float]]]:
    return {model: {tier: price.as_dict() for tier, price in tiers.items()} for model, tiers in sorted(table.items())}


def merged(overrides: Mapping[str, Any] | None) -> PriceTable:
    """The defaults with an override table on top: a model the overrides name takes their tiers
    whole; an override of `{}` for a model removes its price."""
    table = dict(DEFAULT_PRICES)
    for model, tiers in (overrides or {}).items():
        if tiers:
            table[model] = table_of({model: tiers})[model]
        else:
            table.pop(model, None)
    return table


def match(table: Mapping[str, Any], model: str) -> str | None:
    """The table's key for a served model name: the name, else the name without a snapshot date."""
    if model in table:
        return model
    base = _SNAPSHOT.sub("", model)
    return base if base != model and base in table else None


def tier_of(service_tier: str | None) -> Tier:
    """The tier a response's `service_tier` is billed at (absent, "default", "auto", "scale": standard)."""
    if service_tier in ("flex", "batch"):
        return service_tier  # type: ignore[return-value]  # narrowed by the test above
    return "standard"


def price_of(table: PriceTable, model: str, tier: Tier) -> Price | None:
    key = match(table, model)
    return table[key].get(tier) if key is not None else None


@dataclass(frozen=True)
class Tokens:
    """Token counts of a set of calls served at one tier."""

    prompt: int = 0
    cached: int = 0
    completion: int = 0

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(self.prompt + other.prompt, self.cached + other.cached, self.completion + other.completion)

    @property
    def empty(self) -> bool:
        return not (self.prompt or self.completion)


def cost(table: PriceTable, model: str, by_tier: Mapping[Tier, Tokens]) -> Decimal | None:
    """USD of calls of `model` at each tier; None when a tier that served tokens has no price."""
    total = Decimal(0)
    for tier, tokens in by_tier.items():
        if tokens.empty:
            continue
        price = price_of(table, model, tier)
        if price is None:
            return None
        total += price.cost(tokens.prompt, tokens.cached, tokens.completion)
    return total


def shown(amount: Decimal | None) -> float | None:
    """An amount as an API answer shows it: to a millionth of a dollar."""
    return None if amount is None else float(amount.quantize(QUANTUM))


# --- a validation's usage by tier ---------------------------------------------------------
# A record holds totals (`prompt_tokens`, `cached_prompt_tokens`, `completion_tokens`, over every
# tier) and, for each tier but standard, its own share (`flex_prompt_tokens`, …): standard is
# the totals less the others. A record written before tiers existed is all standard.
_KINDS = ("prompt_tokens", "cached_prompt_tokens", "completion_tokens")


def counters(tier: Tier, prompt: int, cached: int, completion: int) -> dict[str, int]:
    """What one answered call adds to a validation's usage counters."""
    added = {"prompt_tokens": prompt, "cached_prompt_tokens": cached, "completion_tokens": completion}
    if tier != "standard":
        added.update({f"{tier}_{kind}": added[kind] for kind in _KINDS})
    return added


def tokens_by_tier(record: Mapping[str, Any]) -> dict[Tier, Tokens]:
    """A record's usage counters as tokens per tier."""

    def of(prefix: str) -> Tokens:
        values = [int(record.get(f"{prefix}{kind}") or 0) for kind in _KINDS]
        return Tokens(values[0], values[1], values[2])

    others: dict[Tier, Tokens] = {tier: of(f"{tier}_") for tier in TIERS if tier != "standard"}
    total = of("")
    rest = Tokens(
        total.prompt - sum(t.prompt for t in others.values()),
        total.cached - sum(t.cached for t in others.values()),
        total.completion - sum(t.completion for t in others.values()),
    )
    return {"standard": rest, **others}


# --- a validation's prices and cost ---------------------------------------------------------
# A validation stores its model's prices per tier when it is created (`prices`), so that what it
# costs does not move when the table changes while it runs, and the Lambdas never read the table.
USAGE_FIELDS = (
    *_KINDS,
    *(f"{tier}_{kind}" for tier in TIERS if tier != "standard" for kind in _KINDS),
)


def stored_prices(table: PriceTable, model: str) -> dict[str, dict[str, Decimal]] | None:
    """What a new validation of `model` stores as its `prices` (None: the model has no price)."""
    key = match(table, model)
    if key is None:
        return None
    return {
        tier: {"input": p.input, "cached_input": p.cached_input, "output": p.output} for tier, p in table[key].items()
    }


def record_cost(record: Mapping[str, Any]) -> Decimal | None:
    """USD of every answered call of a validation (all runs), at the tiers that served them;
    None without stored prices, or when a tier that served tokens has none."""
    prices = record.get("prices")
    if not prices:
        return None
    table: PriceTable = {"_": {tier: Price.of(values) for tier, values in prices.items() if tier in TIERS}}
    return cost(table, "_", tokens_by_tier(record))


def total_tokens(record: Mapping[str, Any]) -> Tokens:
    return Tokens(
        int(record.get("prompt_tokens") or 0),
        int(record.get("cached_prompt_tokens") or 0),
        int(record.get("completion_tokens") or 0),
    )

"""Prices (core/pricing.py): matching served names, arithmetic by tier with cached tokens, records' cost."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from core import pricing
from core.pricing import DEFAULT_PRICES, Price, Tokens


@pytest.mark.parametrize(
    ("served", "key"),
    [
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # a dated snapshot: its base name
        ("gpt-4o-2024-08-06", "gpt-4o"),  # not gpt-4o-mini's price, though it shares a prefix
        ("gpt-4o-mini-0613", "gpt-4o-mini"),  # an older snapshot form
        ("gpt-4o-mini-search-preview", None),  # another model: no price, never a neighbour's
        ("gpt-4", None),
        ("simulator", "simulator"),
    ],
)
def test_a_served_name_matches_itself_or_its_base_without_the_snapshot_date(served: str, key: str | None) -> None:
    assert pricing.match(DEFAULT_PRICES, served) == key


def test_a_call_costs_uncached_input_plus_cached_input_plus_output_per_million() -> None:
    price = Price(Decimal("0.15"), Decimal("0.075"), Decimal("0.60"))

    # 10,000 prompt tokens of which 4,096 cached, 500 completion tokens:
    # 5,904 × 0.15 + 4,096 × 0.075 + 500 × 0.60 = 885.6 + 307.2 + 300 = 1,492.8 per 1M.
    assert price.cost(10_000, 4_096, 500) == Decimal("0.0014928")
    assert price.cost(100, 500, 0) == Decimal("0.0000075")  # never more cached than prompt tokens


def test_flex_and_batch_cost_half_of_standard() -> None:
    tokens = Tokens(prompt=20_000, cached=2_048, completion=1_000)
    standard = pricing.cost(DEFAULT_PRICES, "gpt-5-mini", {"standard": tokens})
    flex = pricing.cost(DEFAULT_PRICES, "gpt-5-mini", {"flex": tokens})
    batch = pricing.cost(DEFAULT_PRICES, "gpt-5-mini-2025-08-07", {"batch": tokens})

    assert standard is not None and flex == batch == standard / 2


def test_a_tier_without_a_price_makes_the_cost_unknown_not_a_guess() -> None:
    # gpt-4o-mini has no flex tier in the defaults.
    assert pricing.cost(DEFAULT_PRICES, "gpt-4o-mini", {"flex": Tokens(1000, 0, 10)}) is None
    assert pricing.cost(DEFAULT_PRICES, "no-such-model", {"standard": Tokens(1000, 0, 10)}) is None
    assert pricing.cost(DEFAULT_PRICES, "no-such-model", {"standard": Tokens()}) == 0  # nothing used: nothing owed


@pytest.mark.parametrize(
    ("answer", "tier"), [(None, "standard"), ("default", "standard"), ("auto", "standard"), ("flex", "flex")]
)
def test_the_served_tier_is_what_is_billed(answer: str | None, tier: str) -> None:
    assert pricing.tier_of(answer) == tier


def test_a_records_cost_sums_its_tiers_at_its_stored_prices() -> None:
    record: dict[str, Any] = {
        "prices": pricing.stored_prices(DEFAULT_PRICES, "gpt-5-mini"),
        **pricing.counters("standard", 10_000, 1_024, 800),
    }
    for name, value in pricing.counters("flex", 4_000, 0, 200).items():
        record[name] = record.get(name, 0) + value

    by_tier = pricing.tokens_by_tier(record)

    assert by_tier == {
        "standard": Tokens(10_000, 1_024, 800),
        "flex": Tokens(4_000, 0, 200),
        "batch": Tokens(0, 0, 0),
    }
    expected = (
        (8_976 * Decimal("0.25") + 1_024 * Decimal("0.025") + 800 * Decimal("2.00"))
        + (4_000 * Decimal("0.125") + 200 * Decimal("1.00"))
    ) / 1_000_000
    assert pricing.record_cost(record) == expected
    assert pricing.record_cost({**record, "prices": None}) is None


def test_overrides_replace_a_models_tiers_and_an_empty_one_removes_its_price() -> None:
    table = pricing.merged({"gpt-4o-mini": {"standard": {"input": 1, "cached_input": 0.5, "output": 2}}, "gpt-4o": {}})

    assert set(table["gpt-4o-mini"]) == {"standard"}
    assert table["gpt-4o-mini"]["standard"].input == 1
    assert "gpt-4o" not in table and "gpt-4o" in DEFAULT_PRICES  # the defaults are untouched


@pytest.mark.parametrize(
    ("overrides", "fault"),
    [
        ({"m": {"turbo": {"input": 1, "cached_input": 1, "output": 1}}}, "m: unknown tier `turbo`"),
        ({"m": {"standard": {"input": -1, "cached_input": 0, "output": 1}}}, "m.standard: `input` must be"),
        ({"m": {"standard": {"input": 1, "cached_input": 2, "output": 1}}}, "m.standard: `cached_input` above"),
        ({"m": {"standard": {"input": 1, "output": 1}}}, "m.standard: missing `cached_input`"),
        ({"m": {"standard": {"input": "NaN", "cached_input": 0, "output": 1}}}, "m.standard: `input` must be"),
        ({"m": {"standard": {"input": True, "cached_input": 0, "output": 1}}}, "m.standard: `input` is not"),
    ],
)
def test_a_bad_price_table_is_refused_naming_the_model_and_tier(overrides: dict, fault: str) -> None:
    with pytest.raises(ValueError, match=fault.replace("`", ".").replace("(", r"\(")):
        pricing.merged(overrides)

"""Spend periods and budgets (core/spend.py): UTC calendar windows, charges, the ratio histogram."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from core import spend
from core.pricing import Tokens
from core.spend import Budget, Charge


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("moment", "day", "month", "day_resets", "month_resets"),
    [
        ("2026-12-31T23:59:59.999", "day#2026-12-31", "month#2026-12", "2027-01-01T00:00:00", "2027-01-01T00:00:00"),
        ("2027-01-01T00:00:00", "day#2027-01-01", "month#2027-01", "2027-01-02T00:00:00", "2027-02-01T00:00:00"),
        ("2028-02-29T12:00:00", "day#2028-02-29", "month#2028-02", "2028-03-01T00:00:00", "2028-03-01T00:00:00"),
        ("2026-01-31T08:00:00", "day#2026-01-31", "month#2026-01", "2026-02-01T00:00:00", "2026-02-01T00:00:00"),
    ],
)
def test_periods_are_utc_calendar_days_and_months_and_reset_at_their_end(
    moment: str, day: str, month: str, day_resets: str, month_resets: str
) -> None:
    now = at(moment)

    assert (spend.period_key("day", now), spend.period_key("month", now)) == (day, month)
    assert spend.resets_at("day", now) == at(day_resets)
    assert spend.resets_at("month", now) == at(month_resets)


def test_a_charge_at_the_month_boundary_lands_in_the_new_month_and_gives_the_old_reservation_back() -> None:
    charge = Charge(Decimal("0.25"), Tokens(1000, 200, 50), reserved_key="month#2026-12", reserved=Decimal("0.4"))

    updates = spend.charge_updates("spend", "alice", charge, at("2027-01-01T00:00:01"))

    keys = [u["Key"]["period"]["S"] for u in updates]
    assert keys == ["day#2027-01-01", "month#2027-01", "month#2026-12"]
    old = updates[2]
    assert "listing" not in str(old["ExpressionAttributeNames"])  # only the reservation goes back there
    values = old["ExpressionAttributeValues"]
    assert {v["N"] for v in values.values()} == {"-0.4"}


def test_a_charge_in_the_reserved_period_merges_into_one_update_of_that_item() -> None:
    charge = Charge(Decimal("0.25"), Tokens(1000, 0, 50), reserved_key="month#2026-12", reserved=Decimal("0.4"))

    updates = spend.charge_updates("spend", "alice", charge, at("2026-12-15T10:00:00"))

    month = next(u for u in updates if u["Key"]["period"]["S"] == "month#2026-12")
    values = {k: v.get("N") for k, v in month["ExpressionAttributeValues"].items()}
    assert values[":add_committed_usd"] == "-0.15"  # +0.25 spent, -0.4 reserved
    assert values[":add_reserved_usd"] == "-0.4" and values[":add_spent_usd"] == "0.25"
    assert len(updates) == 2


def test_an_unpriced_run_counts_its_tokens_and_itself_as_unpriced_never_a_guessed_cost() -> None:
    updates = spend.charge_updates("spend", "alice", Charge(None, Tokens(10, 0, 1)), at("2026-12-15T10:00:00"))

    for update in updates:
        values = {k: v.get("N") for k, v in update["ExpressionAttributeValues"].items()}
        assert values[":add_unpriced"] == "1" and values[":add_spent_usd"] == "0"


def test_a_budget_is_read_from_a_quota_with_month_by_default() -> None:
    assert Budget.of({"capacity_tokens": 1}) is None
    assert Budget.of({"max_spend_usd": 2.5}) == Budget(Decimal("2.5"), "month")
    assert Budget.of({"max_spend_usd": 2.5, "spend_period": "day"}) == Budget(Decimal("2.5"), "day")


def test_the_ratio_histogram_gives_quantiles_by_the_upper_edge_of_their_bucket() -> None:
    item = {"runs": 10, "b5": 5, "b9": 4, "b30": 1}  # ratios 0.05 (×5), 0.09 (×4), 0.30 (×1)

    assert spend.ratio_percentiles(item, 0.5, 0.9, 1.0) == (0.06, 0.10, 0.31)
    assert spend.ratio_percentiles(None, 0.5) is None
    assert spend.ratio_bucket(1000, 75) == 7 and spend.ratio_bucket(10, 1000) == spend.RATIO_BUCKETS

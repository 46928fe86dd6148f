"""The governor's rules (core/governor.py), without I/O: budget bounds, feedback, plan."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import governor as g

LIMITS = g.Limits(max_parallelism=8, target_tpm=60_000, throttle_threshold=0.9)


def _budget(state: g.BudgetState | None = None, limits: g.Limits = LIMITS, window: float = 60.0) -> g.Budget:
    return g.Budget(limits, state or g.BudgetState(), window)


@settings(max_examples=60, deadline=None)
@given(
    costs=st.lists(st.integers(min_value=200, max_value=4_000), min_size=5, max_size=120),
    gaps=st.lists(st.floats(min_value=0.0, max_value=3.0), min_size=120, max_size=120),
    threshold=st.floats(min_value=0.5, max_value=0.98),
)
def test_grants_in_any_window_stay_within_the_target(costs: list[int], gaps: list[float], threshold: float) -> None:
    """Replay the schedule as the validators follow it: no window of calls exceeds target_tpm."""
    limits = g.Limits(8, 60_000, threshold)
    window, now, tat, calls = 60.0, 1_000.0, 0.0, []
    for cost, gap in zip(costs, gaps, strict=False):  # more gaps than costs
        now += gap
        budget = _budget(g.BudgetState(tat=tat), limits, window)
        tat, starts_at = budget.schedule(cost, now, tat)
        assert starts_at >= now
        calls.append((starts_at, cost))  # the validator sleeps until its place, then calls
    headroom = limits.target_tpm * (1 - threshold) / 2
    for start, _ in calls:
        in_window = sum(c for t, c in calls if start <= t < start + window)
        assert in_window <= threshold * limits.target_tpm + max(max(costs), headroom) + 1
        if max(costs) <= headroom:
            assert in_window <= limits.target_tpm


def test_a_grant_is_a_compare_and_set_on_the_exact_stored_number() -> None:
    budget = _budget(g.BudgetState(tat=1_700_000_100.123456, tat_exact="1700000100.123456"))
    reserved = g.grant("governor", budget, 900, now=1_700_000_000.0)
    values = reserved.request["ExpressionAttributeValues"]
    assert reserved.request["ConditionExpression"] == "#tat = :seen"
    assert values[":seen"] == {"N": "1700000100.123456"}
    assert values[":set_tat"] == {"N": reserved.stored} and reserved.stored == "1700000101.123456"
    assert reserved.starts_at == pytest.approx(reserved.tat - budget.capacity(900) / budget.rate(0))
    idle = g.grant("governor", _budget(), 900, now=1_700_000_000.0)
    assert idle.request["ConditionExpression"] == "attribute_not_exists(#tat) OR #tat <= :now"
    assert idle.starts_at == 1_700_000_000.0


def test_the_burst_is_half_the_headroom_and_never_below_one_call() -> None:
    budget = _budget()
    assert budget.capacity(100) == pytest.approx(60_000 * 0.1 / 2)
    assert budget.capacity(50_000) == 50_000
    assert budget.lease_size(1_000, 1_000) == 1_000  # a 3-call burst: leases of one call
    big = _budget(limits=g.Limits(8, 2_000_000, 0.9))  # a 100-call burst
    assert big.lease_size(1_000, 1_000) == 4_000
    assert big.lease_size(1_000, 300) == 4_000


def test_a_429_lowers_the_rate_which_recovers_over_windows() -> None:
    penalized = _budget(g.BudgetState(factor=0.5, penalized_at=100.0))
    assert penalized.tokens_per_window(100.0) == 60_000 * 0.9 * 0.5
    assert penalized.factor(100.0 + 60.0) == 0.75
    assert penalized.factor(100.0 + 120.0) == 1.0
    assert penalized.factor(10_000.0) == 1.0


@settings(max_examples=200, deadline=None)
@given(
    limit=st.one_of(st.none(), st.text(max_size=8), st.integers(min_value=-5, max_value=10**9).map(str)),
    remaining=st.one_of(st.none(), st.text(max_size=8), st.integers(min_value=-5, max_value=10**9).map(str)),
    reset=st.one_of(st.none(), st.sampled_from(["", "1s", "6m0s", "20ms", "garbage", "-3", "1.5s", "2h"])),
)
def test_headers_only_ever_slow_the_budget_down(limit: str | None, remaining: str | None, reset: str | None) -> None:
    budget, now = _budget(), 500.0
    headers = {
        k: v
        for k, v in {
            "x-ratelimit-limit-tokens": limit,
            "x-ratelimit-remaining-tokens": remaining,
            "x-ratelimit-reset-tokens": reset,
        }.items()
        if v is not None
    }
    feedback = g.read_headers(headers, budget, 1_000, now)
    if feedback.upstream_tpm is not None:
        assert 0 < feedback.upstream_tpm < LIMITS.target_tpm
        lowered = _budget(g.BudgetState(upstream_tpm=feedback.upstream_tpm))
        assert lowered.tokens_per_window(now) <= budget.tokens_per_window(now)
    if feedback.pause_until is not None:
        assert now <= feedback.pause_until <= now + budget.window_seconds / 4


def test_durations_in_openai_format() -> None:
    assert g.parse_duration("20ms") == 0.02
    assert g.parse_duration("1.5s") == 1.5
    assert g.parse_duration("6m0s") == 360
    assert g.parse_duration("1h2m3s") == 3723
    assert g.parse_duration("7") == 7
    assert g.parse_duration("soon") is None
    assert g.parse_duration(None) is None


def test_the_plan_follows_max_parallelism_batches_and_the_free_budget() -> None:
    budget = _budget(limits=g.Limits(8, 2_000_000, 0.9))
    common: dict[str, Any] = {"call_tokens": 1_000, "call_seconds": 1.0, "ceiling": 10, "now": 0.0}
    roomy = g.plan(budget.limits, budget, batches=100, tokens_last_window=0, **common)
    assert (roomy.parallelism, roomy.map_concurrency, roomy.reason) == (8, 10, "max_parallelism")
    few = g.plan(budget.limits, budget, batches=3, tokens_last_window=0, **common)
    assert (few.parallelism, few.map_concurrency, few.reason) == (3, 3, "batches")
    small = _budget(limits=g.Limits(8, 60_000, 0.9))  # 900 tokens/s feeds one 1,000-token call per second
    fed = g.plan(small.limits, small, batches=100, tokens_last_window=0, **common)
    busy = g.plan(small.limits, small, batches=100, tokens_last_window=54_000 * 0.9, **common)
    assert (fed.parallelism, fed.reason) == (2, "token_budget")
    assert busy.parallelism == 1 and busy.map_concurrency == 10


def test_effective_parallelism_is_the_plan_until_an_admin_changes_max_parallelism() -> None:
    record = {"plan": {"parallelism": 3, "map_concurrency": 10, "max_parallelism": 8}}
    assert g.effective_parallelism(8, record) == 3
    assert g.effective_parallelism(2, record) == 2  # lowered live
    assert g.effective_parallelism(20, record) == 10  # raised live, up to the Map's concurrency
    assert g.effective_parallelism(5, {}) == 5


def test_a_lease_item_is_typed_at_the_boundary_and_an_item_without_a_holder_is_no_lease() -> None:
    item = {
        "pk": "lease#v1",
        "sk": "03",
        "holder": "h",
        "expires_at": 12.5,
        "leased": 40,
        "committed": 25,
        "reported": 10,
    }

    lease = g.LeaseRecord.of(item)

    assert lease == g.LeaseRecord("lease#v1", "03", "h", 12.5, 40, 25, 10) and lease.slot == 3
    assert g.leftover(lease) == (15, 15)  # unspent back to the budget, committed but unreported counted as used
    assert g.LeaseRecord.of({"pk": "lease#v1", "sk": "03", "expires_at": 12.5}) is None
    assert g.reclaim("governor", lease)["ExpressionAttributeValues"][":exp"] == {"N": "12.5"}

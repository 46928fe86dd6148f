"""The governor's rules (core/governor.py), without I/O: budget bounds, feedback, plan."""

from __future__ import annotations

import heapq
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import fairness as fair
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
    burst = limits.target_tpm * (1 - threshold) / 2
    room = limits.target_tpm * (1 - threshold)  # what the threshold leaves
    for start, _ in calls:
        in_window = sum(c for t, c in calls if start <= t < start + window)
        # A window holds the rate's tokens and one burst or one call, whichever is larger...
        assert in_window <= threshold * limits.target_tpm + max(max(costs), burst) + 1
        if max(costs) <= room:  # ...so the target holds while the largest call fits the room left
            assert in_window <= limits.target_tpm + 1


@settings(max_examples=60, deadline=None)
@given(
    costs=st.lists(st.integers(min_value=200, max_value=1_800), min_size=150, max_size=150),
    threshold=st.floats(min_value=0.9, max_value=0.97),
)
def test_a_busy_budget_fills_every_window_to_its_threshold_and_never_past_the_target(
    costs: list[int], threshold: float
) -> None:
    """Calls that always wait (demand above the limit), each within the room the threshold leaves
    (calls of up to 1,800 tokens, 3% of 60,000: at OpenAI's tiers a call is a far smaller share):
    every window holds at most the target and, past the first, at least the threshold's tokens
    less one call. So U ≥ threshold − largest call and peak ≤ 1.00 together (bench/governor.py)."""
    limits, window = g.Limits(8, 60_000, threshold), 60.0
    budget = _budget(g.BudgetState(), limits, window)
    now, tat, calls = 0.0, 0.0, []
    for cost in costs:
        tat, starts_at = budget.schedule(cost, now, tat)
        calls.append((starts_at, cost))
        now = starts_at  # the next one asks as this one starts
    end = calls[-1][0]
    largest = max(costs)
    assert largest <= limits.target_tpm * (1 - threshold)
    for start in [t for t, _ in calls] + [window * k for k in range(int(end // window))]:
        in_window = sum(c for t, c in calls if start <= t < start + window)
        assert in_window <= limits.target_tpm + 1  # the peak
        if window <= start and start + window <= end:  # a full window past the first
            assert in_window >= threshold * limits.target_tpm - largest - 1  # U


def test_a_call_larger_than_the_room_the_threshold_leaves_can_take_a_window_past_the_target() -> None:
    """The bound above is reached: calls of 1,336 tokens always waiting, at a threshold of 0.95 of
    20,000 tokens per 20 s (room: 1,000): some window holds 15 calls, 20,040 tokens. No schedule
    at a rate keeps such calls under the target at 0.95 of it: that needs the rate at most
    target − largest call (0.933 here)."""
    limits, window, cost = g.Limits(8, 20_000, 0.95), 20.0, 1_336
    budget = g.Budget(limits, g.BudgetState(), window)
    now, tat, starts = 0.0, 0.0, []
    for _ in range(60):
        tat, starts_at = budget.schedule(cost, now, tat)
        starts.append(starts_at)
        now = starts_at  # the next one asks as this one starts: always waiting
    peak = max(sum(cost for t in starts if s <= t < s + window) for s in starts)
    assert peak == 15 * cost > limits.target_tpm


def test_a_grant_is_one_conditional_update_in_one_of_two_shapes() -> None:
    busy = _budget(g.BudgetState(tat=1_700_000_100.5, tat_exact="1700000100.5"))
    reserved = g.grant("governor", busy, 900, now=1_700_000_000.0, shard=3, latest=1_700_000_090.0)
    request, values = reserved.request, reserved.request["ExpressionAttributeValues"]
    # Behind the stored schedule: an ADD (grants made at once all land, one after the other), only
    # while the shard is still busy and the call can still start by `latest`.
    assert request["UpdateExpression"] == "ADD #tat :add_tat, #granted :add_granted"
    assert request["ConditionExpression"] == "(#tat > :now) AND (#tat <= :latest)"
    step, burst = 900 / busy.rate(0), busy.capacity(900) / busy.rate(0)
    assert float(values[":add_tat"]["N"]) == pytest.approx(step)
    assert float(values[":latest"]["N"]) == pytest.approx(1_700_000_090.0 - step + burst)
    assert request["Key"]["pk"] == {"S": "budget~3"} and request["ReturnValues"] == "UPDATED_NEW"
    assert request["ReturnValuesOnConditionCheckFailure"] == "ALL_OLD"  # a refusal needs no read
    assert g.started(busy, 900, 1_700_000_000.0, 1_700_000_101.5) == pytest.approx(1_700_000_101.5 - burst)
    idle = g.grant("governor", _budget(), 900, now=1_700_000_000.0)
    assert idle.request["ConditionExpression"] == "attribute_not_exists(#tat) OR #tat <= :now"
    assert idle.request["Key"]["pk"] == {"S": "budget"}  # shard 0 keeps the unsharded key
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
    # The Map as wide as the plan, two calls per invocation to reach the ceiling's 10 at a raise.
    assert (roomy.parallelism, roomy.map_concurrency, roomy.calls_per_invocation) == (8, 8, 2)
    assert roomy.reason == "max_parallelism"
    few = g.plan(budget.limits, budget, batches=3, tokens_last_window=0, **common)
    assert (few.parallelism, few.map_concurrency, few.reason) == (3, 3, "batches")
    small = _budget(limits=g.Limits(8, 60_000, 0.9))  # 900 tokens/s feeds one 1,000-token call per second
    fed = g.plan(small.limits, small, batches=100, tokens_last_window=0, **common)
    busy = g.plan(small.limits, small, batches=100, tokens_last_window=54_000 * 0.9, **common)
    assert (fed.parallelism, fed.reason) == (2, "token_budget")
    assert (busy.parallelism, busy.map_concurrency, busy.calls_per_invocation) == (1, 1, 10)


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

    assert lease == g.LeaseRecord("lease#v1", "03", "h", 12.5, 40, 25, 10, taken={0: 40}) and lease.slot == 3
    assert g.leftover(lease) == (15, 15)  # unspent back to the budget, committed but unreported counted as used
    assert g.LeaseRecord.of({"pk": "lease#v1", "sk": "03", "expires_at": 12.5}) is None
    assert g.reclaim("governor", lease)["ExpressionAttributeValues"][":exp"] == {"N": "12.5"}
    sharded = g.LeaseRecord.of({**item, "taken_2": 30, "taken_5": 10})  # tokens from two shards (borrowed)
    assert sharded is not None and sharded.taken == {2: 30, 5: 10}
    renewed = g.renew("governor", "v1", 3, "h", 0.0, 90.0, leased=30, committed=0, reported=0, shard=2)
    assert "#taken_2 :add_taken_2" in renewed["UpdateExpression"]


# --- one budget per model ---------------------------------------------------------------------


def test_each_model_has_keys_of_its_own_and_the_configured_model_keeps_the_unsuffixed_ones() -> None:
    home, other = g.Scope.of("gpt-4o-mini", "gpt-4o-mini"), g.Scope.of("o4-mini", "gpt-4o-mini")
    budget = _budget()

    assert home == g.HOME and home.budget_key == g.BUDGET_KEY and home.stats_key == g.STATS_KEY
    assert other.budget_key == {"pk": "budget#o4-mini", "sk": "tokens"}
    requests = {
        "grant": g.grant("t", budget, 100, 0.0, other).request,
        "refund": g.refund("t", budget, 10, 0.0, other),
        "overdraw": g.overdraw("t", budget, 10, 0.0, other),
        "penalize": g.penalize("t", budget, 0.0, 1.0, other),
        "pause": g.pause("t", budget, 5.0, other),
        "lower": g.lower_upstream("t", "upstream_tpm", 1_000, other),
    }
    assert {name: r["Key"]["pk"]["S"] for name, r in requests.items()} == dict.fromkeys(requests, "budget#o4-mini")
    assert g.add_usage("t", 5, 0.0, 60.0, other)["Key"]["pk"] == {"S": "usage#o4-mini"}
    assert {k["pk"] for k in g.usage_keys(0.0, 60.0, other)} == {
        "usage#o4-mini",
        *(f"usage#o4-mini~{s}" for s in range(1, g.COUNTER_SHARDS)),
    }
    assert g.Scope.of_budget("budget#o4-mini~3") == other and g.Scope.of_budget("budget~3") == g.HOME
    assert g.record_calls("t", 1, 1.0, 100, 0.0, other)["Key"]["pk"] == {"S": "stats#o4-mini"}
    assert fair.account_key("alice", 7, other)["pk"] == "share#alice#o4-mini"
    assert fair.account_key("alice", 7)["pk"] == "share#alice"
    assert fair.demand_query("t", other)["ExpressionAttributeValues"][":pk"] == {"S": "demand#o4-mini"}
    beat = fair.heartbeat("t", fair.Tenant("alice"), 0.0, 60.0, other)
    assert beat["Key"]["pk"] == {"S": "demand#o4-mini"}


def test_a_lease_names_its_budget_so_a_reclaim_gives_its_tokens_back_there() -> None:
    other = g.Scope("o4-mini")
    claimed = g.claim("t", "v1", 2, "h", 0.0, 90.0, other)
    stored = {"pk": "lease#v1", "sk": "02", "holder": "h", "expires_at": 90.0}

    assert claimed["ExpressionAttributeValues"][":set_budget"] == {"S": "budget#o4-mini"}
    lease = g.LeaseRecord.of({**stored, "budget": "budget#o4-mini"})
    assert lease is not None and lease.scope == other
    legacy = g.LeaseRecord.of(stored)  # claimed before there were several budgets
    assert legacy is not None and legacy.scope == g.HOME


# --- requests per minute: the same schedule, a call charged at least a request's worth --------


def _replay(
    costs: list[int], gaps: list[float], budget_at: Any, start: float = 1_000.0
) -> list[tuple[float, int, int]]:
    """The schedule as the validators follow it, with the limits of `budget_at(now)`:
    (start, tokens, charged) per call."""
    now, tat, calls = start, 0.0, []
    for tokens, gap in zip(costs, gaps, strict=False):
        now += gap
        budget = budget_at(now)
        charged = budget.cost(tokens)
        tat, starts_at = budget.schedule(charged, now, tat)
        calls.append((starts_at, tokens, charged))
    return calls


def _busiest(calls: list[tuple[float, int, int]], window: float, after: float = float("-inf")) -> tuple[int, int]:
    """The most requests, and the most tokens, of calls starting in any window [s, s + window), s > after."""
    starts = sorted(c for c in calls if c[0] > after)
    most_requests = most_tokens = end = tokens = 0
    for i, (s, t, _) in enumerate(starts):  # two pointers: [i, end) is the window starting at s
        while end < len(starts) and starts[end][0] < s + window:
            tokens += starts[end][1]
            end += 1
        most_requests, most_tokens = max(most_requests, end - i), max(most_tokens, tokens)
        tokens -= t
    return most_requests, most_tokens


@settings(max_examples=60, deadline=None)
@given(
    costs=st.lists(st.integers(min_value=200, max_value=3_000), min_size=5, max_size=150),
    gaps=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=150, max_size=150),
    rpm=st.integers(min_value=20, max_value=2_000),
    threshold=st.floats(min_value=0.5, max_value=0.9),
)
def test_no_window_holds_more_requests_or_tokens_than_the_targets(
    costs: list[int], gaps: list[float], rpm: int, threshold: float
) -> None:
    """Both limits from one schedule: a grant takes a request and its tokens, whichever binds."""
    limits = g.Limits(8, 200_000, threshold, target_rpm=rpm)
    budget = _budget(limits=limits)
    calls = _replay(costs, gaps, lambda now: budget)
    requests, tokens = _busiest(calls, budget.window_seconds)
    if max(budget.cost(c) for c in costs) <= budget.capacity(0):  # every call fits the burst: exactly
        assert requests <= rpm
        assert tokens <= limits.target_tpm
    else:  # a call above the burst (a request's worth above it: a small target-rpm): one call more at most
        assert requests <= rpm + 1
        assert tokens <= limits.target_tpm + max(costs)


def test_a_call_is_charged_its_tokens_or_a_requests_worth_whichever_is_more() -> None:
    budget = _budget(limits=g.Limits(8, 60_000, 0.9, target_rpm=60))  # a request's worth: 1,000 tokens
    assert budget.tokens_per_request == 1_000
    assert (budget.cost(300), budget.cost(2_500)) == (1_000, 2_500)
    assert budget.requests_per_window(0) == pytest.approx(54)
    lowered = _budget(g.BudgetState(upstream_rpm=30), budget.limits)  # OpenAI says 30: the lower one
    assert lowered.limit_rpm == 30 and lowered.cost(300) == 2_000
    ungoverned = _budget()  # no target-rpm (a deployment without the parameter): tokens alone
    assert ungoverned.limit_rpm is None and ungoverned.cost(300) == 300
    assert ungoverned.requests_per_window(0) is None
    learned = _budget(g.BudgetState(upstream_rpm=500))  # ...until OpenAI's headers name a request limit
    assert learned.limit_rpm == 500 and learned.cost(10) == 120


@settings(max_examples=40, deadline=None)
@given(
    before=st.integers(min_value=20, max_value=600),
    after=st.integers(min_value=20, max_value=600),
    validators=st.integers(min_value=2, max_value=40),
    call_seconds=st.floats(min_value=0.05, max_value=4.0),
    tokens=st.integers(min_value=100, max_value=1_500),
)
def test_a_live_change_of_target_rpm_holds_from_the_first_window_after_the_calls_granted_before_it(
    before: int, after: int, validators: int, call_seconds: float, tokens: int
) -> None:
    """Validators that always have a next call (each asks again once its call ends); target-rpm
    changes at `change`: every window after the grants made before the change holds at most the
    new limit, and while the validators ask for more, the schedule keeps up with it."""
    window, change, end = 60.0, 300.0, 900.0

    def budget_at(now: float) -> g.Budget:
        return _budget(limits=g.Limits(8, 100_000_000, 0.9, target_rpm=before if now < change else after))

    tat, asks, calls = 0.0, [(0.0, v) for v in range(validators)], []
    while asks:
        now, v = heapq.heappop(asks)
        if now >= end:
            continue
        budget = budget_at(now)
        charged = budget.cost(tokens)
        tat, starts_at = budget.schedule(charged, now, tat)
        calls.append((starts_at, tokens, charged, now))
        heapq.heappush(asks, (starts_at + call_seconds, v))
    granted_before = max(s for s, _, _, asked in calls if asked < change)
    requests, _ = _busiest([c[:3] for c in calls if c[0] < end], window, after=granted_before)
    assert requests <= after
    # Keeping up: the validators ask more than the new limit allows, so a full window after the
    # change (and after what was queued before it) holds the new rate but for a burst.
    demand = validators * window / call_seconds
    if demand >= 1.5 * after:
        first = granted_before + 1.0
        inside = sum(1 for s, *_ in calls if first <= s < first + window)
        assert inside >= 0.9 * after - budget_at(end).capacity(0) / budget_at(end).tokens_per_request - 1


@settings(max_examples=200, deadline=None)
@given(
    limit=st.one_of(st.none(), st.text(max_size=8), st.integers(min_value=-5, max_value=10**7).map(str)),
    remaining=st.one_of(st.none(), st.text(max_size=8), st.integers(min_value=-5, max_value=10**7).map(str)),
    reset=st.one_of(st.none(), st.sampled_from(["", "1s", "6m0s", "20ms", "garbage", "-3", "1.5s", "2h"])),
    target_rpm=st.one_of(st.none(), st.integers(min_value=1, max_value=10**6)),
)
def test_request_headers_only_ever_slow_the_budget_down(
    limit: str | None, remaining: str | None, reset: str | None, target_rpm: int | None
) -> None:
    budget, now = _budget(limits=g.Limits(8, 60_000, 0.9, target_rpm=target_rpm)), 500.0
    headers = {
        k: v
        for k, v in {
            "x-ratelimit-limit-requests": limit,
            "x-ratelimit-remaining-requests": remaining,
            "x-ratelimit-reset-requests": reset,
        }.items()
        if v is not None
    }
    feedback = g.read_headers(headers, budget, 1_000, now)
    assert feedback.upstream_tpm is None
    if feedback.upstream_rpm is not None:
        assert feedback.upstream_rpm > 0 and (target_rpm is None or feedback.upstream_rpm < target_rpm)
        lowered = _budget(g.BudgetState(upstream_rpm=feedback.upstream_rpm), budget.limits)
        assert lowered.cost(1) >= budget.cost(1)  # a request costs at least as much: fewer fit a window
        assert (lowered.requests_per_window(now) or 0) <= (budget.requests_per_window(now) or float("inf"))
    if feedback.pause_until is not None:
        assert now <= feedback.pause_until <= now + budget.window_seconds / 4


def test_an_upstream_with_no_request_left_pauses_grants_until_one_is_back() -> None:
    budget, now = _budget(limits=g.Limits(8, 10_000_000, 0.9, target_rpm=60)), 500.0
    empty = {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "59s",
    }
    feedback = g.read_headers(empty, budget, 1_000, now)
    assert feedback.pause_until == pytest.approx(now + 2.0)  # two requests at one a second: not the full reset
    plenty = {**empty, "x-ratelimit-remaining-requests": "40"}
    assert g.read_headers(plenty, budget, 1_000, now).pause_until is None
    lower = {**plenty, "x-ratelimit-limit-requests": "30"}
    assert g.read_headers(lower, budget, 1_000, now).upstream_rpm == 30
    request = g.lower_upstream("governor", "upstream_rpm", 30)
    assert request["UpdateExpression"] == "SET #upstream_rpm = :limit"
    assert request["ExpressionAttributeValues"][":limit"] == {"N": "30"}


def test_the_live_parameters_mirror_copies_only_newer_versions() -> None:
    stored = {
        "live_max_parallelism": "5",
        "live_max_parallelism_version": 3,
        "live_target_tpm": "50000",
        "live_target_tpm_version": 1,
        "live_throttle_threshold": "0.9",
        "live_throttle_threshold_version": 1,
    }
    mirrored = g.Mirror.of(stored)
    assert mirrored.complete and mirrored.limits() == g.Limits(5, 50_000, 0.9, True, None)
    ssm = {
        "max-parallelism": ("5", 3),
        "target-tpm": ("60000", 2),
        "throttle-threshold": ("0.9", 1),
        "target-rpm": ("60", 1),
    }
    assert mirrored.behind(ssm) == {"target-tpm": ("60000", 2), "target-rpm": ("60", 1)}
    assert not g.Mirror.of({"live_max_parallelism": "5"}).complete and not g.Mirror.of(None).complete
    (request,) = g.mirror("governor", {"target-rpm": ("60", 1)})
    assert request["ConditionExpression"] == (
        "attribute_not_exists(#live_target_rpm_version) OR #live_target_rpm_version <= :v_live_target_rpm"
    )
    assert request["ReturnValuesOnConditionCheckFailure"] == "ALL_OLD"


# --- shards: the budget split over items, each a GCRA at its part of the rate -----------------

TOP_TIER = g.Limits(8, 150_000_000, 0.95, target_rpm=30_000)


def test_the_top_tier_is_split_over_the_default_shards_and_small_budgets_stay_whole() -> None:
    top = _budget(limits=TOP_TIER)
    assert top.shard_count(g.SHARDS) == g.SHARDS
    assert top.shard_count(1) == 1  # GOVERNOR_SHARDS=1: the budget as one item
    shard = top.shard(g.SHARDS)
    assert shard.rate(0) * g.SHARDS == pytest.approx(top.rate(0))
    assert shard.capacity(0) >= g.SHARD_MIN_BURST_CALLS * g.SHARD_CALL_TOKENS
    assert _budget(limits=g.Limits(8, 20_000, 0.95, target_rpm=300)).shard_count(g.SHARDS) == 1


@settings(max_examples=80, deadline=None)
@given(
    tpm=st.integers(min_value=1_000, max_value=10**9),
    threshold=st.floats(min_value=0.5, max_value=0.99),
    configured=st.integers(min_value=1, max_value=64),
)
def test_a_shard_is_split_only_while_its_burst_holds_large_calls(tpm: int, threshold: float, configured: int) -> None:
    whole = _budget(limits=g.Limits(8, tpm, threshold))
    n = whole.shard_count(configured)
    assert 1 <= n <= configured
    if n > 1:
        assert whole.shard(n).capacity(0) >= g.SHARD_MIN_BURST_CALLS * g.SHARD_CALL_TOKENS


def _sharded_replay(
    limits: g.Limits, shards: int, calls: list[tuple[int, float, int, float]], window: float
) -> list[tuple[float, int]]:
    """Workers reserving as lambdas/common/governor.Lease does: the own shard (by hash) when it
    has a place within BORROW_AHEAD, else the next that has (borrowing), else the earliest. Each
    shard moves as its conditional update moves it (idle: from now; busy: behind `tat`); part of a
    grant may come back (a call charged less than its estimate) to the shard that granted it, at
    the budget's fastest rate. (start, tokens sent) per call."""
    whole = g.Budget(limits, g.BudgetState(), window)
    n = whole.shard_count(shards)
    budget = whole.shard(n)
    tats = [0.0] * n
    now, sent = 1_000.0, []
    for cost, gap, worker, unused in calls:
        now += gap
        own, offers = worker % n, []
        for i in range(n):
            shard = (own + i) % n
            tat, starts_at = budget.schedule(cost, now, tats[shard])
            offers.append((starts_at, shard, tat))
            if starts_at <= now + BORROW * window:
                break
        starts_at, shard, tats[shard] = offers[-1] if offers[-1][0] <= now + BORROW * window else min(offers)
        back = int(cost * unused)
        for where, tokens in g.refunds(back, {shard: cost}, shard).items():
            tats[where] -= tokens / budget.full_rate
        sent.append((starts_at, cost - back))
    return sent


BORROW = fair.HORIZON  # lambdas/common/governor.BORROW_AHEAD


@settings(max_examples=60, deadline=None)
@given(
    calls=st.lists(
        st.tuples(
            st.integers(min_value=500, max_value=8_192),
            st.floats(min_value=0.0, max_value=0.004),
            st.integers(min_value=0, max_value=10_000),
            st.sampled_from([0.0, 0.0, 0.1, 0.5]),
        ),
        min_size=50,
        max_size=600,
    ),
    shards=st.integers(min_value=1, max_value=16),
    threshold=st.floats(min_value=0.8, max_value=0.97),
)
def test_summed_over_shards_no_window_holds_more_than_the_target(
    calls: list[tuple[int, float, int, float]], shards: int, threshold: float
) -> None:
    """At the top tier's scale (a window of 6 s, so a few hundred calls fill several): whatever
    shard each call comes from, its own or borrowed, the tokens sent in any window summed over
    every shard stay below target_tpm."""
    window = 6.0
    limits = g.Limits(8, 15_000_000, threshold, target_rpm=3_000)
    sent = _sharded_replay(limits, shards, calls, window)
    starts = sorted(sent)
    end, tokens, most = 0, 0, 0
    for start, t in starts:
        while end < len(starts) and starts[end][0] < start + window:
            tokens += starts[end][1]
            end += 1
        most = max(most, tokens)
        tokens -= t
    assert most <= limits.target_tpm


@settings(max_examples=200, deadline=None)
@given(
    taken=st.dictionaries(st.integers(min_value=0, max_value=15), st.integers(min_value=0, max_value=50_000)),
    unused=st.floats(min_value=0.0, max_value=1.0),
    last=st.integers(min_value=-1, max_value=15),
    factor=st.floats(min_value=0.25, max_value=1.0),
    upstream=st.one_of(st.none(), st.integers(min_value=1_000, max_value=60_000)),
)
def test_borrowing_never_creates_tokens(
    taken: dict[int, int], unused: float, last: int, factor: float, upstream: int | None
) -> None:
    """A lease's unused tokens go back only to shards that granted them, never more than each
    granted, and a refund moves a shard's schedule back by no more time than the grant took,
    whatever the 429 factor or the lowered limit when it was made."""
    back = int(sum(taken.values()) * unused)
    given_back = g.refunds(back, taken, last)
    assert sum(given_back.values()) == back
    assert all(0 < tokens <= taken[shard] for shard, tokens in given_back.items())
    if last in taken and taken[last] > 0:
        assert given_back.get(last, 0) == min(back, taken[last])  # the last grant's shard first
    state = g.BudgetState(factor=factor, penalized_at=1_000.0, upstream_tpm=upstream)
    budget = _budget(state, limits=g.Limits(8, 60_000, 0.9)).shard(4)
    for tokens in given_back.values():
        assert tokens / budget.full_rate <= tokens / budget.rate(1_000.0)

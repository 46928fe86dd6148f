"""The headroom rules (core/headroom.py, core/governor.plan), without I/O: the Map's width,
calls per invocation and batch grouping for any parallelism from 1 to 500."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from core import governor as g
from core import headroom
from core.records import MAX_MAP_ITEMS, batches, part_id

ROOMY = g.Budget(g.Limits(500, 100_000_000, 0.9), g.BudgetState(), 60.0)  # the budget feeds 500 calls easily


def _plan(
    max_parallelism: int, parts: int, *, ceiling: int = 10, other_items: int = 0, fed: int | None = None
) -> tuple[g.Plan, list[Any]]:
    """The plan of a first run of `parts` parts (batched as the API batches them), and its Map
    items; `fed`: the calls the budget feeds (by default far more than 500)."""
    ranges = batches([part_id(0, i) for i in range(parts)], MAX_MAP_ITEMS)
    limits = g.Limits(max_parallelism, ROOMY.limits.target_tpm, ROOMY.limits.throttle_threshold)
    plan = g.plan(
        limits,
        ROOMY,
        batches=len(ranges),
        tokens_last_window=0,
        call_tokens=1_000 if fed is None else _fed_by(fed),
        call_seconds=3.0,
        ceiling=ceiling,
        now=0.0,
        parts=parts,
        other_items=other_items,
    )
    return plan, headroom.regroup(ranges, plan.group)


def _fed_by(calls: int) -> float:
    """Tokens a call so that the roomy budget feeds `calls` calls of 3 s at once (core/governor.plan)."""
    return 1.25 * ROOMY.rate(0.0) * 3.0 / calls


def _sizes(items: list[dict[str, str]]) -> list[int]:
    """Parts per Map item (the ids are part_id(0, i): their index is the part number)."""
    return [int(item["last"].split("-")[1]) - int(item["first"].split("-")[1]) + 1 for item in items]


@pytest.mark.parametrize(
    ("max_parallelism", "parts", "expected"),
    [
        # (Map width, calls per invocation, Map items); the ceiling is 10
        (1, 500, (1, 10, 25)),  # one invocation at a time, ten calls each keep the ceiling's reach
        (5, 20, (5, 2, 10)),  # the defaults: one-part batches merged in pairs, two calls each at a raise
        (5, 500, (5, 2, 125)),  # batches of 4 parts already hold two
        (40, 500, (40, 1, 125)),  # the inline Map alone
        (41, 500, (21, 2, 125)),  # two calls each from 21 invocations (batches hold 4 parts)
        (120, 168, (12, 10, 12)),  # 84 batches of 2 merged 7 at a time: one wave of the Map
        (120, 180, (30, 4, 30)),  # 90 batches of 2 merged 3 at a time: one wave, no idle worker
        (500, 1_000, (39, 13, 63)),  # batches of 4 merged 4 at a time: 16 parts an item
        (500, 60_000, (39, 13, 1_000)),  # 60 parts a batch already hold 13
        (500, 100, (25, 4, 25)),  # fewer parts than the reach: every part at once
    ],
)
def test_the_plan_spreads_max_parallelism_over_the_map_and_its_invocations(
    max_parallelism: int, parts: int, expected: tuple[int, int, int]
) -> None:
    plan, items = _plan(max_parallelism, parts)

    assert (plan.map_concurrency, plan.calls_per_invocation, len(items)) == expected
    assert plan.parallelism == min(max_parallelism, parts)
    assert plan.map_concurrency <= plan.parallelism
    assert plan.map_concurrency * plan.calls_per_invocation >= max(plan.parallelism, min(10, parts))
    assert g.effective_parallelism(max_parallelism, {"plan": plan.as_dict()}) == plan.parallelism


@settings(max_examples=300, deadline=None)
@given(
    max_parallelism=st.integers(1, headroom.MAX_PARALLELISM),
    parts=st.integers(1, 20_000),
    ceiling=st.integers(1, 40),
    fed=st.integers(1, headroom.MAX_PARALLELISM),
)
@example(max_parallelism=241, parts=241, ceiling=1, fed=19)  # batches of 2 parts: items of 12, not 13
def test_any_parallelism_is_reachable_through_a_map_no_wider_than_the_planned_one(
    max_parallelism: int, parts: int, ceiling: int, fed: int
) -> None:
    plan, items = _plan(max_parallelism, parts, ceiling=ceiling, fed=fed)
    m, k, planned = plan.map_concurrency, plan.calls_per_invocation, plan.parallelism
    # What live raises may reach: an invocation runs at most MAX_CALLS calls.
    reach = min(max(max_parallelism, ceiling), parts, min(headroom.MAP_LIMIT, planned) * headroom.MAX_CALLS)

    assert 1 <= planned <= min(max_parallelism, parts, fed)
    assert 1 <= m <= min(headroom.MAP_LIMIT, len(items), planned)  # no wider than the planned cap
    # Items tile the parts in order; the m largest hold the calls the reach needs, and k is the
    # fewest calls per invocation that does it.
    sizes = _sizes(items)
    assert sum(sizes) == parts and items[0]["first"] == part_id(0, 0)
    assert all(a["last"] < b["first"] for a, b in zip(items, items[1:], strict=False))

    def at_once(calls: int) -> int:
        return sum(min(calls, size) for size in sorted(sizes, reverse=True)[:m])

    # Items are whole batches and an invocation runs at most 13 calls: where the batches' sizes
    # do not divide the reach well, it is reached up to a few per cent (480 of 498 with 142
    # batches of 4 parts: 40 items of 12), or up to a batch less one part per item (228 of 241
    # with 121 batches of 2 parts, a Map 19 wide: 19 items of 12; items of 14 would be 18).
    size = math.ceil(parts / len(batches([part_id(0, i) for i in range(parts)], MAX_MAP_ITEMS)))
    if k == headroom.MAX_CALLS or k >= max(sizes):
        assert at_once(k) >= min(0.95 * reach, reach - m * (size - 1))
    else:
        assert at_once(k) >= reach
    assert k == 1 or at_once(k - 1) < reach
    # At the planned cap every invocation's first call has a slot (m ≤ cap), and the workers fit
    # the cap: exactly with a Map as wide as the cap, else fewer than one to spare per
    # invocation (a spare worker gives its part back and leaves; its invocation calls on).
    workers = m * headroom.workers(planned, plan.as_dict())
    assert m <= workers and workers - planned < m
    if m == planned:
        assert workers == planned


@settings(max_examples=300, deadline=None)
@given(
    max_parallelism=st.integers(1, headroom.MAX_PARALLELISM),
    parts=st.integers(1, 5_000),
    fed=st.integers(1, headroom.MAX_PARALLELISM),
    live=st.integers(1, headroom.MAX_PARALLELISM),
)
def test_a_live_change_bounds_every_invocation_and_a_raise_adds_workers_up_to_the_reach(
    max_parallelism: int, parts: int, fed: int, live: int
) -> None:
    plan, _ = _plan(max_parallelism, parts, fed=fed)
    record = {"plan": plan.as_dict()}
    m, k = plan.map_concurrency, plan.calls_per_invocation
    cap = g.effective_parallelism(live, record)
    workers = headroom.workers(cap, record["plan"])
    planned = headroom.workers(plan.parallelism, record["plan"])

    assert 1 <= cap <= m * k
    if live != max_parallelism:
        assert cap == min(live, m * k)  # the admin's value, within the reach
    assert 1 <= workers <= k
    assert m * workers >= cap  # the Map's invocations together can fill every slot...
    assert m * workers - cap < m  # ...and fewer than one per invocation waits for a slot
    if cap > plan.parallelism:
        assert workers >= planned  # a raise adds workers to running invocations
    else:
        assert workers <= planned  # a lowered cap takes them away


def test_a_plan_made_before_headroom_means_one_call_per_invocation() -> None:
    old = {"parallelism": 3, "map_concurrency": 10, "max_parallelism": 8, "reason": "token_budget"}

    assert headroom.calls_per_invocation(old) == 1
    assert headroom.workers(8, old) == 1
    assert g.effective_parallelism(20, {"plan": old}) == 10


def test_the_combine_steps_items_share_the_width_and_are_never_merged() -> None:
    shaped = headroom.shape(reach=200, batches=50, parts=200, other_items=100)

    assert shaped.map_concurrency <= headroom.MAP_LIMIT
    assert shaped.reach >= 200
    assert math.ceil(50 / shaped.group) * 4 * shaped.group >= 200  # the parts' items hold the reach too
    assert headroom.regroup([], shaped.group) == []  # a retry of combine steps only: no parts' items


def test_the_admin_range_check_accepts_up_to_five_hundred() -> None:
    from pydantic import ValidationError

    from app.admin.schemas import ParallelismPatch

    assert ParallelismPatch.model_validate({"max_parallelism": 500}).max_parallelism == 500
    with pytest.raises(ValidationError, match="max_parallelism"):
        ParallelismPatch.model_validate({"max_parallelism": 501})

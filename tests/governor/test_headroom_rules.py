"""The headroom rules (core/headroom.py, core/governor.plan), without I/O: the Map's width,
calls per invocation and batch grouping for any parallelism from 1 to 500."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import governor as g
from core import headroom
from core.records import MAX_MAP_ITEMS, batches, part_id

ROOMY = g.Budget(g.Limits(500, 100_000_000, 0.9), g.BudgetState(), 60.0)  # the budget feeds 500 calls easily


def _plan(max_parallelism: int, parts: int, *, ceiling: int = 10, other_items: int = 0) -> tuple[g.Plan, list[Any]]:
    """The plan of a first run of `parts` parts (batched as the API batches them), and its Map items."""
    ranges = batches([part_id(0, i) for i in range(parts)], MAX_MAP_ITEMS)
    limits = g.Limits(max_parallelism, ROOMY.limits.target_tpm, ROOMY.limits.throttle_threshold)
    plan = g.plan(
        limits,
        ROOMY,
        batches=len(ranges),
        tokens_last_window=0,
        call_tokens=1_000,
        call_seconds=3.0,
        ceiling=ceiling,
        now=0.0,
        parts=parts,
        other_items=other_items,
    )
    return plan, headroom.regroup(ranges, plan.group)


def _sizes(items: list[dict[str, str]]) -> list[int]:
    """Parts per Map item (the ids are part_id(0, i): their index is the part number)."""
    return [int(item["last"].split("-")[1]) - int(item["first"].split("-")[1]) + 1 for item in items]


@pytest.mark.parametrize(
    ("max_parallelism", "parts", "expected"),
    [
        # (Map width, calls per invocation, Map items)
        (1, 500, (10, 1, 125)),  # the ceiling keeps room for a live raise, one call per invocation
        (40, 500, (40, 1, 125)),  # the inline Map alone, as before headroom
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
    assert plan.map_concurrency * plan.calls_per_invocation >= plan.parallelism
    assert g.effective_parallelism(max_parallelism, {"plan": plan.as_dict()}) == plan.parallelism


@settings(max_examples=200, deadline=None)
@given(
    max_parallelism=st.integers(1, headroom.MAX_PARALLELISM),
    parts=st.integers(1, 20_000),
    ceiling=st.integers(1, 40),
)
def test_any_parallelism_is_reachable_through_at_most_forty_iterations(
    max_parallelism: int, parts: int, ceiling: int
) -> None:
    plan, items = _plan(max_parallelism, parts, ceiling=ceiling)
    m, k = plan.map_concurrency, plan.calls_per_invocation
    reach = min(max(max_parallelism, ceiling), parts)  # what live raises may reach

    assert 1 <= m <= min(headroom.MAP_LIMIT, len(items))
    assert 1 <= plan.parallelism <= min(max_parallelism, parts, m * k)
    # Items tile the parts in order; the m largest hold the calls the reach needs, and k is the
    # fewest calls per invocation that does it.
    sizes = _sizes(items)
    assert sum(sizes) == parts and items[0]["first"] == part_id(0, 0)
    assert all(a["last"] < b["first"] for a, b in zip(items, items[1:], strict=False))

    def at_once(calls: int) -> int:
        return sum(min(calls, size) for size in sorted(sizes, reverse=True)[:m])

    # Items are whole batches and an invocation runs at most 13 calls: where the batches' sizes
    # do not divide the reach well, it is reached up to a few per cent (480 of 498 with 142
    # batches of 4 parts: 40 items of 12).
    if k == headroom.MAX_CALLS or k >= max(sizes):
        assert at_once(k) >= 0.95 * reach
    else:
        assert at_once(k) >= reach
    assert k == 1 or at_once(k - 1) < reach
    if max(max_parallelism, ceiling) <= headroom.MAP_LIMIT:  # as before headroom: one call each, no merging
        assert (k, plan.group) == (1, 1)
        assert m == min(headroom.MAP_LIMIT, len(items), max(plan.parallelism, ceiling, max_parallelism))


@settings(max_examples=200, deadline=None)
@given(
    max_parallelism=st.integers(1, headroom.MAX_PARALLELISM),
    parts=st.integers(1, 5_000),
    live=st.integers(1, headroom.MAX_PARALLELISM),
)
def test_a_live_change_bounds_every_invocation_and_leaves_fewer_idle_workers_than_invocations(
    max_parallelism: int, parts: int, live: int
) -> None:
    plan, _ = _plan(max_parallelism, parts)
    record = {"plan": plan.as_dict()}
    m, k = plan.map_concurrency, plan.calls_per_invocation
    cap = g.effective_parallelism(live, record)
    workers = headroom.workers(cap, record["plan"])

    assert 1 <= cap <= m * k
    if live != max_parallelism:
        assert cap == min(live, m * k)  # the admin's value, within the reach
    assert 1 <= workers <= k
    assert m * workers >= cap  # the Map's invocations together can fill every slot...
    assert m * workers - cap < m  # ...and fewer than one per invocation waits for a slot


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

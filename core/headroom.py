"""Headroom: one validation with more model calls in flight than the inline Map's 40 iterations.

An inline Map runs at most 40 iterations at once (DOMAIN.md), and an iteration is one
validator invocation. So an invocation runs up to `k` calls at once, each on a call slot of
its own (a lease of the governor, core/governor.py) with its own grant from the budget: a
validation reaches `map_concurrency × k` calls in flight. The controller (`plan` in
core/governor.py) wants some reach R — max-parallelism (up to `MAX_PARALLELISM`), or the
MAP_CONCURRENCY_CEILING, never more than the parts left — and shapes it here:

- the Map no wider than `width`, the planned parallelism p (and 40, and its items): at the
  planned cap every invocation's first call has a slot, so none starts only to wait for one;
- `k = ⌈R ÷ widest⌉` calls per invocation, the fewest that reach R through that Map (at most
  MAX_CALLS: a Map w wide reaches at most 13 w);
- of the widths that reach R with that k, the one with the fewest workers to spare at the
  planned cap (none with a Map p wide: one worker each), then at R;
- an invocation can run only as many calls at once as its item has parts, so neighbouring
  batches (part-id ranges, core/records.batches) are merged `group` at a time until an item
  holds at least k parts — and, when there are at most `MAX_ROUNDS` rounds of k calls per
  item that way, until the Map needs a single wave (items beyond the width would wait for
  whole invocations to end, leaving calls idle); merging may leave fewer items than the
  width, so the width and k are computed again from the merged items (and k made up for a
  short last item when the Map runs every item at once).

With R ≤ p (the cap is the reach) and enough items: k = 1, no merging. At the defaults (p = 5,
the ceiling 10): a Map 5 wide, k = 2, one-part batches merged in pairs.

Live, an invocation runs `workers(cap)` calls at once: its part of the validation's live
parallelism (`⌈cap ÷ map_concurrency⌉`, never more than k), so lowering max-parallelism
shrinks running invocations too; each call still needs a slot below the cap, which is what
bounds the validation exactly (lambdas/common/governor.py). The combine step's Map shares the
width and k; its invocations count their part over the invocations that run at once, the
width or its items when fewer (`combine_items` in the plan: a file's tree levels are asked k
at a time, lambdas/combine_file/combiner.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAP_LIMIT = 40  # an inline Map runs at most 40 iterations at once
MAX_PARALLELISM = 500  # max-parallelism's upper bound (the admin API's range check): 40 × 13 calls
# Rounds of k calls one invocation may be given so that the Map needs a single wave: 8 rounds
# of ~3 s calls end well within validate_part's 120 s (less RESERVE_MILLIS' 15 s).
MAX_ROUNDS = 8
MAX_CALLS = math.ceil(MAX_PARALLELISM / MAP_LIMIT)  # k: threads of one invocation (13)


@dataclass(frozen=True)
class Shape:
    map_concurrency: int  # the Map's MaxConcurrency
    calls_per_invocation: int  # k: calls one invocation may have in flight at once
    group: int  # neighbouring batches merged into one Map item (1: the batches as they are)

    @property
    def reach(self) -> int:
        """The most calls the validation can have in flight."""
        return self.map_concurrency * self.calls_per_invocation


def shape(reach: int, batches: int, parts: int, other_items: int = 0, width: int = MAP_LIMIT) -> Shape:
    """The Map's width, calls per invocation and batch grouping for `reach` calls in flight.

    `batches`: the parts' Map items as submitted; `parts`: the part calls they hold (at
    least one per item); `other_items`: the combine step's Map items, which share the Map
    width (`$.plan.map_concurrency` serves both Maps) and are never merged; `width`: the
    widest the Map may be (the planned parallelism, so that no invocation of a run at its
    planned cap starts only to wait for a call slot; at most 40).
    """
    batches = max(1, batches)
    parts = max(parts, batches)
    cap, limit = max(1, width), max(1, min(MAP_LIMIT, width))
    # An invocation runs at most MAX_CALLS calls, so a Map `limit` wide reaches at most limit × MAX_CALLS.
    reach = max(1, min(reach, MAX_PARALLELISM, max(parts, other_items), limit * MAX_CALLS))
    if reach <= min(limit, batches):  # the Map alone: one call per iteration
        return Shape(reach, 1, 1)
    size = math.ceil(parts / batches)  # parts per batch: batches() makes them equal but the last
    best: tuple[tuple[int, ...], Shape] | None = None
    for group in range(1, batches + 1):
        shaped = _grouped(reach, batches, parts, size, group, other_items, cap)
        merged, k = math.ceil(batches / group), shaped.calls_per_invocation
        rounds = math.ceil(group * size / k)  # of k calls, per invocation
        if group > 1 and rounds > MAX_ROUNDS:
            break  # larger groups: longer invocations still
        # The calls in flight it reaches (up to the reach), then the time in rounds of calls
        # (waves of the Map × rounds per item), then idle workers (spare calls) at the planned
        # cap, then at the reach.
        waves = math.ceil(merged / shaped.map_concurrency)
        m = shaped.map_concurrency
        idle = (spare(m, k, cap), shaped.reach - reach)
        cost = (-min(reach, _at_once(shaped, batches, parts, size)), waves * rounds, *idle)
        if best is None or cost < best[0]:
            best = (cost, shaped)
        if merged == 1:
            break
    assert best is not None  # group 1 is always looked at
    return best[1]


def _grouped(reach: int, batches: int, parts: int, size: int, group: int, other_items: int, cap: int) -> Shape:
    """The width and k for `reach` with batches merged `group` at a time: k the fewest calls
    per invocation that reach it through the widest Map the items and `cap` allow (no more
    than an item holds, or MAX_CALLS), then of the widths that reach it with that k the one
    with the fewest workers to spare at the live cap `cap` (none at a Map `cap` wide: each
    invocation runs one call), then at the reach."""
    merged, full = math.ceil(batches / group), group * size
    widest = min(MAP_LIMIT, cap, max(merged, other_items))
    k = min(MAX_CALLS, full, math.ceil(reach / widest))
    width = min(
        range(min(widest, math.ceil(reach / k)), widest + 1),
        key=lambda w: (spare(w, k, cap), w * k - reach),
    )
    # Every merged item holds `full` parts but the last; when the Map runs them all at once, a
    # short last item is made up for.
    shaped = Shape(width, k, group)
    while k < min(full, MAX_CALLS) and _at_once(shaped, batches, parts, size) < reach:
        k += 1
        shaped = Shape(width, k, group)
    return shaped


def spare(width: int, k: int, cap: int) -> int:
    """Workers a Map `width` wide of k calls per invocation runs beyond a live `cap` (each
    invocation runs `workers(cap)`): a spare one finds no slot, gives its part back and leaves."""
    return max(0, width * min(k, math.ceil(cap / width)) - cap)


def _at_once(shaped: Shape, batches: int, parts: int, size: int) -> int:
    """Calls the Map's widest items can have in flight at once: every merged item holds `full`
    parts but the last, which holds the rest."""
    merged, full = math.ceil(batches / shaped.group), shaped.group * size
    last = max(1, parts - (merged - 1) * full)
    k, width = shaped.calls_per_invocation, shaped.map_concurrency
    if width < merged:
        return width * min(k, full)
    return (merged - 1) * min(k, full) + min(k, last)


def regroup(batches: Sequence[Mapping[str, str]], group: int) -> list[dict[str, str]]:
    """Neighbouring part-id ranges {first, last} merged `group` at a time (ranges are sorted
    and disjoint, so a merged range holds theirs; a part between two ranges that is not
    pending — a retry runs only the failed ones — is skipped by the validator as settled)."""
    if group <= 1:
        return [dict(b) for b in batches]
    return [
        {"first": batches[i]["first"], "last": batches[min(i + group, len(batches)) - 1]["last"]}
        for i in range(0, len(batches), group)
    ]


def calls_per_invocation(plan: Mapping[str, Any] | None) -> int:
    """k of a stored plan (1 for a plan made before headroom)."""
    return max(1, int((plan or {}).get("calls_per_invocation", 1)))


def workers(cap: int, plan: Mapping[str, Any] | None, items: int | None = None) -> int:
    """Calls one invocation may run at once now: its part of the live cap, at most k. The cap is
    shared by the Map's invocations that run at once: its width, or its `items` when fewer (the
    combine step's Map, whose items — one per range of multi-part files — are often fewer than
    the width: a gigabyte file is one item, which may then run k calls at the planned cap)."""
    k = calls_per_invocation(plan)
    if k <= 1 or not plan:
        return 1
    running = int(plan["map_concurrency"])
    if items is not None and int(items) > 0:
        running = min(running, int(items))
    return max(1, min(k, math.ceil(cap / max(1, running))))

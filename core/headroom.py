"""Headroom: one validation with more model calls in flight than the inline Map's 40 iterations.

An inline Map runs at most 40 iterations at once (DOMAIN.md), and an iteration is one
validator invocation. So an invocation runs up to `k` calls at once, each on a call slot of
its own (a lease of the governor, core/governor.py) with its own grant from the budget: a
validation reaches `map_concurrency × k` calls in flight. The controller (`plan` in
core/governor.py) wants some reach R — max-parallelism (up to `MAX_PARALLELISM`), or the
MAP_CONCURRENCY_CEILING, never more than the parts left — and shapes it here:

- `k = ⌈R ÷ min(40, items, R)⌉` calls per invocation, the fewest that reach R through a
  Map of at most 40 iterations and no more iterations than items;
- `map_concurrency = ⌈R ÷ k⌉`, so `map_concurrency × k ≥ R` with fewer than k calls to
  spare (a spare call is an idle worker waiting for a slot);
- an invocation can run only as many calls at once as its item has parts, so neighbouring
  batches (chunk-id ranges, core/records.batches) are merged `group` at a time until an item
  holds at least k parts; merging may leave fewer items than that width, so the width and k
  are computed again from the merged items (and k made up for a short last item when the
  Map runs every item at once).

With R ≤ 40 (max-parallelism ≤ 40, the default 5) nothing changes: k = 1, no merging.

Live, an invocation runs `workers(cap)` calls at once: its part of the validation's live
parallelism (`⌈cap ÷ map_concurrency⌉`, never more than k), so lowering max-parallelism
shrinks running invocations too; each call still needs a slot below the cap, which is what
bounds the validation exactly (lambdas/common/governor.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAP_LIMIT = 40  # an inline Map runs at most 40 iterations at once
MAX_PARALLELISM = 500  # max-parallelism's upper bound (the admin API's range check): 40 × 13 calls


@dataclass(frozen=True)
class Shape:
    map_concurrency: int  # the Map's MaxConcurrency
    calls_per_invocation: int  # k: calls one invocation may have in flight at once
    group: int  # neighbouring batches merged into one Map item (1: the batches as they are)

    @property
    def reach(self) -> int:
        """The most calls the validation can have in flight."""
        return self.map_concurrency * self.calls_per_invocation


def shape(reach: int, batches: int, parts: int, other_items: int = 0) -> Shape:
    """The Map's width, calls per invocation and batch grouping for `reach` calls in flight.

    `batches`: the parts' Map items as submitted; `parts`: the part calls they hold (at
    least one per item); `other_items`: the combine step's Map items, which share the Map
    width (`$.plan.map_concurrency` serves both Maps) and are never merged.
    """
    batches = max(1, batches)
    parts = max(parts, batches)
    reach = max(1, min(reach, MAX_PARALLELISM, max(parts, other_items)))
    k = math.ceil(reach / min(MAP_LIMIT, max(batches, other_items), reach))
    width = math.ceil(reach / k)  # no wider than needed: fewer than k calls to spare, not a Map's worth
    group = max(1, math.ceil(k / (parts / batches)))
    merged = math.ceil(batches / group)
    width = min(width, max(merged, other_items))
    k = math.ceil(reach / width)
    # batches() makes batches of one size but the last, so every merged item holds `full` parts
    # but the last; when the Map runs them all at once, a short last item is made up for.
    full = group * math.ceil(parts / batches)
    last = max(1, parts - (merged - 1) * full)
    while width >= merged and (merged - 1) * min(k, full) + min(k, last) < reach and k < full:
        k += 1
    return Shape(width, k, group)


def regroup(batches: Sequence[Mapping[str, str]], group: int) -> list[dict[str, str]]:
    """Neighbouring chunk-id ranges {first, last} merged `group` at a time (ranges are sorted
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


def workers(cap: int, plan: Mapping[str, Any] | None) -> int:
    """Calls one invocation may run at once now: its part of the live cap, at most k."""
    k = calls_per_invocation(plan)
    if k <= 1 or not plan:
        return 1
    return max(1, min(k, math.ceil(cap / max(1, int(plan["map_concurrency"])))))

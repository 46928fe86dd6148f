"""State `Plan`: the controller that sets a validation's parallelism before its Map starts.

From the SSM values (max-parallelism, target-tpm, throttle-threshold) and the current
consumption (tokens sent in the last window, the average call seen lately), it computes
how many concurrent calls this validation gets at first, the Map's concurrency (no wider
than that, so no invocation starts only to wait for a slot) and the calls per invocation that
let a later raise of max-parallelism reach this validation too (core/governor.py `plan`).
It says whether the validation takes the Batch API lane first (`batch`). It plans from the
budget of the validation's model (its targets, usage and call statistics: one budget per
model). It also sweeps expired leases, so tokens held by dead validators are back before the
plan counts them.

It also chooses the parts' Map (core/part_ranges.py): the inline one with the items in the
state, or — when the validation has more items than the inline Map holds, or items longer than
an invocation — a Distributed Map over ranges of `parts_per_item` × k parts written to S3, shaped as the
inline Map would be (core/headroom.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from core import governor as g
from core import headroom, part_ranges
from lambdas.common import live_config
from lambdas.common.config import LambdaConfig, load_config
from lambdas.common.fairness import owner_share
from lambdas.common.governor import governor_for
from lambdas.common.observability import gauge, observed
from lambdas.common.stores import Store, store_for

log = logging.getLogger(__name__)

DEFAULT_CALL_SECONDS = 3.0  # before any call was measured


def control(
    store: Store,
    config: LambdaConfig,
    validation_id: str,
    batches: list[dict[str, str]],
    combine: int = 0,
    run: int = 0,
) -> dict[str, Any]:
    """The plan, saved on the validation; the parts' Map items: inline (`batches`, merged when an
    invocation may run more calls at once than an item has parts: core/headroom.py), or in a
    manifest for the Distributed Map (`distributed`, `manifest`); and whether the Batch API lane
    comes first (`batch`)."""
    v = store.validations.counted(
        validation_id, "run_cost", "total_parts", "succeeded", "owner", "priority", "model", "tier", "files"
    )
    model = str(v.get("model") or config.openai_model)
    # A model no longer listed is planned at the default's limits; its validators refuse the parts.
    limits = live_config.budget_limits(config, model)
    governor = governor_for(config, store.client, model)
    governor.sweep(force=True)
    budget = governor.read_budget()
    pending = max(1, int(v.get("total_parts", 1)) - int(v.get("succeeded", 0)))
    stats = governor.call_stats()
    call_tokens = float(
        stats.get("call_tokens") or (int(v.get("run_cost", 0)) / pending) or config.completion_max_tokens
    )
    now, used = time.time(), governor.tokens_last_window()
    gauge("BudgetTokensPerWindow", budget.tokens_per_window(now), model=model)
    gauge("TokensUsedLastWindow", used, model=model)
    plan = g.plan(
        limits,
        budget,
        batches=max(1, len(batches)),
        tokens_last_window=used,
        call_tokens=call_tokens,
        call_seconds=float(stats.get("call_seconds") or DEFAULT_CALL_SECONDS),
        ceiling=config.map_concurrency_ceiling,
        now=now,
        share=owner_share(store, governor, v, limits),
        parts=max(pending, len(batches), combine),  # calls that could run at once
        other_items=combine,
    )
    parts_per_file = [int(f.get("parts", 0)) for f in v.get("files") or []]
    items = headroom.regroup(batches, plan.group)
    manifest = None
    if part_ranges.distributed(
        part_ranges.count(items, parts_per_file),
        max_items=config.inline_map_max_items,
        parts_per_item=config.parts_per_item * plan.calls_per_invocation,
    ):
        # Shaped as the inline Map would be: no child at the planned cap starts only to wait.
        shaped, ranges = part_ranges.shape(
            batches, parts_per_file, plan.map_concurrency, plan.calls_per_invocation, config.parts_per_item
        )
        plan = replace(plan, map_concurrency=shaped.map_concurrency, calls_per_invocation=shaped.calls_per_invocation)
        manifest, items = store.files.put_map_items(validation_id, run, ranges), []
        log.info("validation %s run %d: %d part ranges for the Distributed Map", validation_id, run, len(ranges))
    # The combine step's items: its invocations share the live cap among as many (core/headroom.workers).
    store.validations.save_plan(validation_id, {**plan.as_dict(), "combine_items": combine})
    return {
        "map_concurrency": plan.map_concurrency,
        "parallelism": plan.parallelism,
        "reason": plan.reason,
        "calls_per_invocation": plan.calls_per_invocation,
        "batches": items,
        "distributed": manifest is not None,
        "manifest": manifest,
        "batch": v.get("tier") == "batch",  # the Batch API lane first (lambdas/batch), then the Map
    }


@observed
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config = load_config()
    # The same Map width serves the parts' Map and the combine step's Map, whichever has more items.
    batches = event.get("batches") or []
    combine = len(event.get("combine") or [])
    return control(store_for(config), config, event["validation_id"], batches, combine, int(event.get("run", 0)))

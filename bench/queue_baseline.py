"""The queue as it was before issue 13, kept for `bench/queue.py`'s baseline only.

`queue_baseline.asl.json` is `infra/terraform/statemachine/validation.asl.json` as of
commit 06e84f9 (the Admit ⇄ WaitInQueue loop), and `lambda_handler` below is that
commit's `lambdas/admit/handler.py` (its wait bounds were QUEUE_MIN_WAIT_SECONDS and
QUEUE_MAX_WAIT_SECONDS, defaults 2 and 60): every attempt that cannot admit returns how
long to Wait before the next one. The benchmark registers it as its own function and runs
the old definition against it, beside the current state machine, in the same run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from core.clock import now_iso
from core.quota import Admission, admission_steps
from lambdas.common.config import load_config
from lambdas.common.stores import store_for

ASL_FILE = Path(__file__).with_name("queue_baseline.asl.json")
MIN_WAIT_SECONDS, MAX_WAIT_SECONDS = 2, 60  # the old defaults


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config = load_config()
    store = store_for(config)
    validation_id, run = event["validation_id"], int(event["run"])
    v = store.validations.get(
        validation_id, "status", "run", "owner", "queue_key", "run_cost", "prompt_tokens", "completion_tokens"
    )
    if v["run"] != run or v["status"] not in ("QUEUED", "RUNNING"):
        return {"admitted": False, "gone": True, "wait_seconds": 0}
    if v["status"] == "RUNNING":
        return {"admitted": True, "gone": False, "wait_seconds": 0}
    admission = Admission(
        validations_table=config.validations_table,
        buckets_table=config.buckets_table,
        validation_id=validation_id,
        owner=v["owner"],
        queue_key=v["queue_key"],
        run=run,
        cost=v["run_cost"],
        usage_at_start=v.get("prompt_tokens", 0) + v.get("completion_tokens", 0),
        quota=store.users.quota_of(v["owner"]),
    )
    outcome = store.drive(admission_steps(admission, time.time(), now_iso()))
    if outcome.admitted:
        store.events.emit_status(validation_id)
    if outcome.admitted or outcome.gone:
        return {"admitted": outcome.admitted, "gone": outcome.gone, "wait_seconds": 0}
    wanted = outcome.refusal.retry_after if outcome.refusal and outcome.refusal.limit == "tokens" else MIN_WAIT_SECONDS
    wait = int(min(MAX_WAIT_SECONDS, max(MIN_WAIT_SECONDS, round(wanted + 0.5))))
    return {"admitted": False, "gone": False, "wait_seconds": wait}

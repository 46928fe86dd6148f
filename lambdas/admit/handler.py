"""State `Admit`: the throttler at the start of every execution.

A validation waits here while it is QUEUED: each attempt admits it if it is the oldest
queued validation of its user and the user's token bucket and running limit allow
(core/quota.py); otherwise it tells the state machine how long to Wait before the next
attempt. The queue needs no process of ours: it is this loop, in Step Functions.
"""

import time
from typing import Any

from core.clock import now_iso
from core.quota import Admission, admission_steps, queued_since
from lambdas.common.config import LambdaConfig, load_config
from lambdas.common.observability import gauge, observed
from lambdas.common.store import Store, store_for


def admit(store: Store, config: LambdaConfig, validation_id: str, run: int) -> dict[str, Any]:
    v = store.validation(
        validation_id, "status", "run", "owner", "queue_key", "run_cost", "prompt_tokens", "completion_tokens"
    )
    if v["run"] != run or v["status"] not in ("QUEUED", "RUNNING"):
        return {"admitted": False, "gone": True, "wait_seconds": 0}
    if v["status"] == "RUNNING":  # admitted by the API at submission
        return {"admitted": True, "gone": False, "wait_seconds": 0}
    gauge("QueuedSeconds", time.time() - queued_since(v["queue_key"]))
    admission = Admission(
        validations_table=config.validations_table,
        buckets_table=config.buckets_table,
        validation_id=validation_id,
        owner=v["owner"],
        queue_key=v["queue_key"],
        run=run,
        cost=v["run_cost"],
        usage_at_start=v.get("prompt_tokens", 0) + v.get("completion_tokens", 0),
        quota=store.quota_of(v["owner"]),
    )
    outcome = store.drive(admission_steps(admission, time.time(), now_iso()))
    if outcome.admitted:
        store.emit_status(validation_id)
    if outcome.admitted or outcome.gone:
        return {"admitted": outcome.admitted, "gone": outcome.gone, "wait_seconds": 0}
    wanted = (
        outcome.refusal.retry_after
        if outcome.refusal and outcome.refusal.limit == "tokens"
        else config.queue_min_wait_seconds
    )
    wait = int(min(config.queue_max_wait_seconds, max(config.queue_min_wait_seconds, round(wanted + 0.5))))
    return {
        "admitted": False,
        "gone": False,
        "wait_seconds": wait,
        "reason": outcome.refusal.limit if outcome.refusal else "behind",
    }


@observed
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config = load_config()
    return admit(store_for(config), config, event["validation_id"], int(event["run"]))

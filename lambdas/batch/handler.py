"""States `SubmitBatches` and `PollBatches`, and the cancel path: a validation's Batch API lane
(lambdas/batch/lane.py).

    {"action": "submit", "validation_id", "run", "poll": {"first", "max"}}
    {"action": "poll",   "validation_id", "run", "poll": {"first", "max"}, "wait_seconds": <last wait>}
        -> {"done": bool, "wait_seconds": <the next Wait's seconds>}
    {"action": "cancel", "validation_id", "run"?}   (the API after StopExecution: the current run;
        the state machine's CloseBatches before MarkFailed: the failing run)
        -> {"cancelled", "collected", "left"}
"""

from __future__ import annotations

from typing import Any

from core.batching import next_wait
from lambdas.batch.lane import Lane
from lambdas.common.config import load_config
from lambdas.common.errors import transient_aws_errors_retried
from lambdas.common.observability import observed
from lambdas.common.stores import store_for


@observed
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config = load_config()
    store = store_for(config)
    action = event.get("action", "poll")
    with transient_aws_errors_retried():
        if action == "cancel":
            run = int(event.get("run") or store.validations.get(event["validation_id"], "run")["run"])
            lane = Lane.of(store, config, event["validation_id"], run, context.get_remaining_time_in_millis)
            return lane.cancel()
        lane = Lane.of(store, config, event["validation_id"], int(event["run"]), context.get_remaining_time_in_millis)
        spacing = event.get("poll") or {}
        first, cap = int(spacing.get("first", 30)), int(spacing.get("max", 600))
        done = lane.poll()  # submits what fits, after reading what is open
        previous = None if action == "submit" else event.get("wait_seconds")
        return {"done": done, "wait_seconds": next_wait(previous, first, cap)}

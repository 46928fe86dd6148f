"""States `Finalize` and `MarkFailed`: write the validation's terminal status.

SUCCEEDED when every part has a result and every multi-part file a verdict; FAILED
naming how many parts (or files) have none (their
results stay readable and `POST /validations/{id}/retry` reruns them), or naming the
execution's error when the catch-all routed here. Then the owner's queue moves on (a
parked queued validation is woken: core/queue.py) and the owner's webhook is notified
(lambdas/common/webhooks.notify_ended), also when an earlier attempt of this state wrote the
status and died before starting the notification (the end's marker says so: core/ends.py).
"""

import time
from typing import Any

from core.records import ValidationStatus
from lambdas.common.config import load_config
from lambdas.common.errors import failure_reason
from lambdas.common.observability import count, observed
from lambdas.common.stores import store_for
from lambdas.common.webhooks import announce_end, notify_budget, notify_ended

# The plan step's refusals (lambdas/plan_files), as the validation's error type.
_PLAN_ERRORS = {"FilesRejected": "files_rejected", "OverCapacity": "over_capacity"}


@observed
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config = load_config()
    store = store_for(config)
    validation_id, run = event["validation_id"], int(event["run"])
    if event.get("error"):
        reason = failure_reason(event["error"])
        if reason["type"] in _PLAN_ERRORS:  # the plan step's verdict on the files, not a failure of ours
            error = {"type": _PLAN_ERRORS[reason["type"]], "detail": reason["message"]}
        else:
            error = {"type": "execution_failed", "detail": f"{reason['type']}: {reason['message']}"}
        status = ValidationStatus.FAILED
    else:
        counts = store.validations.counted(validation_id, "total_parts", "succeeded", "total_combines", "combined")
        total, succeeded = counts["total_parts"], counts.get("succeeded", 0)
        files, combined = counts.get("total_combines", 0), counts.get("combined", 0)
        if succeeded >= total and combined >= files:
            status, error = ValidationStatus.SUCCEEDED, None
        elif succeeded < total:
            status = ValidationStatus.FAILED
            error = {
                "type": "parts_failed",
                "detail": f"{total - succeeded} of {total} parts have no result; retry reruns only those",
            }
        else:
            status = ValidationStatus.FAILED
            error = {
                "type": "combine_failed",
                "detail": f"{files - combined} of {files} multi-part files have no verdict; retry combines only those",
            }
    # Settle first: whoever sees the terminal status can count on the refund being done.
    settled = store.validations.settle(validation_id)  # unused tokens back to the user's bucket, once
    if settled.cost is not None:
        count("CostUSD", float(settled.cost), model=settled.model or "unknown")
    # MarkFailed may come from Admit giving up (or the 7-day park timing out): the run is then
    # still QUEUED, and leaves the owner's queue (counted off once) before it ends.
    owner = store.validations.get(validation_id, "owner")["owner"]
    if event.get("error"):
        store.queue.leave(validation_id, owner)
    written = store.validations.finish(validation_id, run, status, error, from_queued=bool(event.get("error")))
    if written:
        count("ValidationsSucceeded" if status is ValidationStatus.SUCCEEDED else "ValidationsFailed")
        store.events.emit_status(validation_id)
    # The run's slot is free: wake the owner's queue head if it is parked (core/queue.py).
    # Every time, not only when this call settled: a retried Finalize must not skip it.
    woken = store.queue.release_head(owner)
    # The notification of whatever wrote this run's terminal status, then its marker off (core/ends.py);
    # a retried attempt finishes what an earlier one left marked. A failure here is retried with the state.
    if written:
        notify_ended(config, store, validation_id, run)
        store.validations.clear_end_marker(validation_id, run)
    else:
        announce_end(config, store, validation_id, run, wrote_status=False)
    # Every time, like the queue: a retried Finalize finishes what a crash after settling left.
    notify_budget(config, store, owner, validation_id, time.time())
    return {"status": status.value, "written": written, "settled": settled.done, "woken": woken}

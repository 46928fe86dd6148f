"""States `Admit` and `WaitForSlot`: the per-user queue at the start of every execution.

`Admit` admits the validation when it is the oldest queued one of its user (FIFO) and the
user's token bucket and running limit allow (core/quota.py). Otherwise it tells the state
machine how to wait, without polling (core/queue.py):

- only tokens missing: `wait_seconds`, exactly until the bucket holds the cost (one Wait);
- a running slot missing, or an older validation queued ahead: `park`. The `WaitForSlot`
  task invokes this function again with its task token, which is stored on the validation
  and then the admission is tried once more (the re-check that closes the race with a slot
  freed meanwhile). The execution then waits, running nothing, until whoever frees a slot
  or moves the queue sends the token back, and goes back to `Admit`.

After admitting, the next validation in the user's queue is woken: it may fit too. A run
of a disabled owner is not admitted: it ends CANCELLED (`owner_disabled`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

from core.clock import now_iso
from core.quota import Admission, admission_steps, queued_since
from core.records import ValidationStatus
from lambdas.common.config import LambdaConfig, load_config
from lambdas.common.observability import gauge, observed
from lambdas.common.stores import Store, store_for
from lambdas.common.webhooks import announce_end

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """What `Admit` tells the state machine (every field always present: the ASL selects them)."""

    admitted: bool = False
    gone: bool = False  # no longer this QUEUED run: cancelled, or rerun
    park: bool = False  # wait for a slot or for the validations ahead (WaitForSlot)
    wait_seconds: int = 0  # wait this long for the bucket's refill (WaitForTokens)
    reason: str = ""


def attempt(store: Store, config: LambdaConfig, validation_id: str, run: int) -> Decision:
    """One admission attempt, and what to do when it fails."""
    v = store.validations.counted(
        validation_id, "status", "run", "owner", "queue_key", "run_cost", "prompt_tokens", "completion_tokens"
    )
    if v["run"] != run or v["status"] not in ("QUEUED", "RUNNING"):
        return Decision(gone=True, reason="gone")
    if v["status"] == "RUNNING":  # admitted by the API at submission, or by a re-check
        return Decision(admitted=True, reason="running")
    if v.get("queue_key"):
        gauge("QueuedSeconds", time.time() - queued_since(v["queue_key"]))
    quota, disabled = store.users.limits_of(v["owner"])
    if disabled:  # a disabled user's validations are not admitted (a retry or a wake racing the disable)
        refuse_disabled(store, config, validation_id, run, v["owner"])
        return Decision(gone=True, reason="owner_disabled")
    admission = Admission(
        validations_table=config.validations_table,
        buckets_table=config.buckets_table,
        validation_id=validation_id,
        owner=v["owner"],
        queue_key=v.get("queue_key", ""),
        run=run,
        cost=v["run_cost"],
        usage_at_start=v.get("prompt_tokens", 0) + v.get("completion_tokens", 0),
        quota=quota,
    )
    outcome = store.drive(admission_steps(admission, time.time(), now_iso()))
    if outcome.admitted:
        store.events.emit_status(validation_id)
        store.queue.release_head(v["owner"])  # the next one in the queue may fit as well
        return Decision(admitted=True, reason="admitted")
    if outcome.gone:
        return Decision(gone=True, reason="gone")
    if outcome.refusal is not None and outcome.refusal.limit == "tokens":
        # One Wait of exactly the refill the bucket needs (at least the configured floor).
        wait = max(config.queue_min_wait_seconds, math.ceil(outcome.refusal.retry_after))
        return Decision(wait_seconds=wait, reason="tokens")
    return Decision(park=True, reason=outcome.refusal.limit if outcome.refusal else "behind")


def refuse_disabled(store: Store, config: LambdaConfig, validation_id: str, run: int, owner: str) -> None:
    """End a queued run of a disabled owner as CANCELLED, saying why: out of the queue (counted
    off once), nothing reserved to settle; announced like any end, and the owner's next queued
    validation is woken to be refused in turn."""
    store.queue.leave(validation_id, owner)
    error = {"type": "owner_disabled", "detail": "the owner was disabled while this validation was queued"}
    if store.validations.end_open(validation_id, run, ValidationStatus.QUEUED, ValidationStatus.CANCELLED, error):
        log.info("validation %s run %s cancelled: its owner is disabled", validation_id, run)
        announce_end(config, store, validation_id, run, wrote_status=True)
    store.queue.release_head(owner)


def admit(store: Store, config: LambdaConfig, validation_id: str, run: int) -> dict[str, Any]:
    return asdict(attempt(store, config, validation_id, run))


def park(store: Store, config: LambdaConfig, validation_id: str, run: int, token: str) -> dict[str, Any]:
    """`WaitForSlot`: store the task token, then try once more; the task ends only when the token is sent.

    The parker sends its own token when the validation moved on, or when the re-check admits
    it, finds it gone, or finds only tokens missing (`Admit` then computes the timed wait)."""
    if not store.queue.park(validation_id, run, token):
        store.queue.wake(token)
        return {"parked": False, "reason": "moved on"}
    decision = attempt(store, config, validation_id, run)
    if not decision.park:
        store.queue.wake(token)
    log.info(
        "validation %s run %s %s (%s)",
        validation_id,
        run,
        "parked" if decision.park else "woke itself",
        decision.reason,
    )
    return {"parked": decision.park, "reason": decision.reason}


@observed
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config = load_config()
    store = store_for(config)
    validation_id, run = event["validation_id"], int(event["run"])
    if "task_token" in event:
        return park(store, config, validation_id, run, event["task_token"])
    return admit(store, config, validation_id, run)

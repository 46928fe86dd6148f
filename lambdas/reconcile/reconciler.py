"""The reconciler: one pass that closes every crash window the writers leave open.

A validation that is QUEUED, RUNNING or CANCELLING must have a live execution of its
current run (`execution_arn`). When it has none — the API crashed between storing and
StartExecution, a retry failed half-way, the execution timed out, hit the history limit
or died in a bug before Finalize — this pass ends it: settlement first (the unused
reservation and the running slot back to the owner, exactly once: `settled_run`), then
the terminal status (CANCELLED for a CANCELLING record, else FAILED naming why), then a
status event. A CANCELLING record whose execution still runs is stopped again (the API's
StopExecution may have been lost) and, once stopped, settled and ended in the same pass.
Records younger than `grace_seconds` are left alone: their writer may still be between two
writes. Ends whose writer died before announcing them (the `notify_pending` marker,
core/ends.py) get their status event and notification. Expired governor leases (a validator
that died holding a call slot) are reclaimed through the governor's own sweep, and the live
parameters are copied from SSM onto the governor's budget item where an edit made directly in
SSM left the validators' copy behind (lambdas/common/live_config.py).

Each fix is a conditional write, so two passes at once (the schedule and
`POST /admin/reconcile`) fix each thing once. Run on a schedule (EventBridge Scheduler on
AWS, a timer of the embedded runtime locally) and on demand.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from core.clock import epoch_of
from core.records import ValidationStatus
from lambdas.common.stores import Store

log = logging.getLogger(__name__)

OPEN = (ValidationStatus.QUEUED, ValidationStatus.RUNNING, ValidationStatus.CANCELLING)


@dataclass
class Report:
    """What one pass looked at and fixed (the JSON `POST /admin/reconcile` answers)."""

    checked: int = 0
    ended: list[dict[str, str]] = field(default_factory=list)  # {"id", "from", "to", "reason"}
    refunded: list[str] = field(default_factory=list)  # validation ids whose run this pass settled
    stopped: list[str] = field(default_factory=list)  # CANCELLING with a live execution: stopped again
    woken: int = 0  # parked queue heads handed their token again
    leases_reclaimed: int = 0
    notified: list[str] = field(default_factory=list)  # webhook notifications started for the ended ones
    announced: list[str] = field(default_factory=list)  # ends another writer left marked, announced now
    parameters: list[str] = field(default_factory=list)  # live parameters copied from SSM to the validators' copy

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "ended": self.ended,
            "refunded": self.refunded,
            "stopped": self.stopped,
            "woken": self.woken,
            "leases_reclaimed": self.leases_reclaimed,
            "notified": self.notified,
            "announced": self.announced,
            "parameters": self.parameters,
        }


def execution_status(sfn: Any, arn: str | None) -> str | None:
    """The execution's status, or None when there is no such execution."""
    if not arn:
        return None
    try:
        return str(sfn.describe_execution(executionArn=arn)["status"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ExecutionDoesNotExist":
            return None
        raise


def _age_seconds(record: dict[str, Any], now: float) -> float:
    """Seconds since the current run was queued (`queue_key` starts with that time) or, failing
    that, since the validation was created."""
    return _seconds_since(str(record.get("run_queued_at") or record.get("created_at") or ""), now)


def _seconds_since(stamp: str, now: float) -> float:
    try:
        return now - epoch_of(stamp)
    except ValueError:
        return float("inf")  # no readable time: old enough


# announce(validation_id, run, wrote_status): lambdas/common/webhooks.announce_end.
Announce = Callable[[str, int | None, bool], str | None]


def reconcile(
    store: Store,
    sfn: Any,
    now: float,
    grace_seconds: float,
    sweep_leases: Callable[[], int] | None = None,
    announce: Announce | None = None,
    sync_parameters: Callable[[], list[str]] | None = None,
) -> Report:
    """`announce` writes the status event and starts the webhook notification of a run this
    pass ended, and finishes announcing ends that other writers left marked; `sync_parameters`
    copies the live parameters from SSM to the governor's budget item (the names copied)."""
    report = Report()
    if sync_parameters is not None:  # first: the validators of this pass's survivors follow SSM
        report.parameters = sync_parameters()
    owners: set[str] = set()  # whose queue to hand on: every owner with something queued or just ended
    for status in OPEN:
        for record in store.validations.open(status.value):
            report.checked += 1
            ended = _reconcile_one(store, sfn, record, now, grace_seconds, report, announce)
            if ended or status is ValidationStatus.QUEUED:
                owners.add(record["owner"])
    if announce is not None:
        _announce_marked(store, report, announce, now, grace_seconds)
    # Re-release queue heads: a wake lost in a crash (core/queue.py) leaves a parked head waiting
    # for a slot that is free; waking a head that cannot be admitted just parks it again.
    for owner in sorted(owners):
        if store.queue.release_head(owner):
            report.woken += 1
    if sweep_leases is not None:
        report.leases_reclaimed = sweep_leases()
    return report


def _announce_marked(store: Store, report: Report, announce: Announce, now: float, grace_seconds: float) -> None:
    """Ends whose writer died between the terminal status and announcing it (core/ends.py);
    one younger than `grace_seconds` may still be announced by its writer."""
    for validation_id, finished_at in store.validations.marked_ends():
        if _seconds_since(finished_at, now) < grace_seconds:
            continue
        try:
            announce(validation_id, None, False)
        except Exception:  # noqa: BLE001 - the marker stays: the next pass tries again
            log.exception("reconciler: announcing the end of %s failed", validation_id)
            continue
        report.announced.append(validation_id)


def _reconcile_one(
    store: Store,
    sfn: Any,
    record: dict[str, Any],
    now: float,
    grace_seconds: float,
    report: Report,
    announce: Announce | None = None,
) -> bool:
    """Fix one open validation if its execution is gone or ended; True when this pass ended it."""
    validation_id, status, run = record["id"], record["status"], int(record["run"])
    execution = execution_status(sfn, record.get("execution_arn"))
    if execution == "RUNNING" and status == ValidationStatus.CANCELLING:
        # The API's StopExecution was lost (or it died first): stop it, and settle below once stopped.
        sfn.stop_execution(executionArn=record["execution_arn"], error="Cancelled", cause="reconciler")
        report.stopped.append(validation_id)
        execution = execution_status(sfn, record["execution_arn"])
    if execution == "RUNNING":
        return False
    if execution is None and _age_seconds(record, now) < grace_seconds:
        return False  # its writer may be between storing and StartExecution
    reason = (
        "the execution of this run was never started or no longer exists"
        if execution is None
        else f"the execution ended ({execution}) without recording a final status"
    )
    if record.get("queue_key"):  # ending while QUEUED: out of the owner's queue, counted off once
        store.queue.leave(validation_id, record["owner"])
    if store.validations.settle(validation_id):  # settle first: a terminal status means the refund is done
        report.refunded.append(validation_id)
    target = ValidationStatus.CANCELLED if status == ValidationStatus.CANCELLING else ValidationStatus.FAILED
    error = None if target == ValidationStatus.CANCELLED else {"type": "execution_lost", "detail": reason}
    if store.validations.end_open(validation_id, run, ValidationStatus(status), target, error):
        report.ended.append({"id": validation_id, "from": status, "to": target.value, "reason": reason})
        log.info("reconciler: %s %s → %s (%s)", validation_id, status, target.value, reason)
        if announce is None:
            store.events.emit_status(validation_id)
            return True
        try:
            if announce(validation_id, run, True):
                report.notified.append(validation_id)
        except Exception:  # noqa: BLE001 - the next validations still get their pass; this end stays
            # marked and the sweep of this pass or the next announces it (core/ends.py)
            log.exception("reconciler: announcing the end of %s failed", validation_id)
        return True
    return False

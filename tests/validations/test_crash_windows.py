"""Crash windows of the API's writers, and the reconciler that closes what a crash leaves.

A fault is injected between two writes of a window (a raised error where the next write
would be; a "crash" also skips the writer's own undo); afterwards the validation is
terminal or running with a live execution, and every reserved token came back exactly once.
Every write of every window, failed in turn, is in test_fault_windows.py; these are the
scenarios it does not reach (a claim crashed long ago, DELETE of a run never started, the
reconciler's report, metrics and audit, disabling a user).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from app.settings import Settings
from app.validations.service import ValidationService
from core.quota import Quota
from tests.support.stack import (
    Aws,
    HeldCalls,
    MakeApi,
    make_user,
    wait_for,
    wait_for_status,
)
from tests.validations.ledger import item as _item
from tests.validations.ledger import running as _running
from tests.validations.ledger import settled_once as _settled_once

DOC = {"documents": [{"name": "a.txt", "content": "row 1\nrow 2\n"}], "rules": ["be tidy"]}
QUOTA = Quota(capacity_tokens=100_000, refill_tokens_per_minute=100_000, max_running=1).as_dict()


def test_a_crashed_claim_is_taken_over_after_its_lease_not_after_a_day(
    make_api: MakeApi, aws: Aws, settings: Settings
) -> None:
    api = make_api()
    user, auth = make_user(api, quota=QUOTA)
    first = api.post("/validations", json=DOC, headers={**auth, "Idempotency-Key": "k3"})
    fingerprint = _item(aws, settings.table("idempotency"), {"key": f"{user}#k3"})["request_hash"]
    now = int(time.time())

    def crashed_claim(key: str, lease_until: int) -> None:
        item = {
            "key": {"S": f"{user}#{key}"},
            "request_hash": {"S": fingerprint},
            "validation_id": {"S": "never-stored"},
            "state": {"S": "pending"},
            "lease_until": {"N": str(lease_until)},
            "expires_at": {"N": str(now + 86_400)},
        }
        aws.client("dynamodb").put_item(TableName=settings.table("idempotency"), Item=item)

    crashed_claim("live", now + 600)
    assert api.post("/validations", json=DOC, headers={**auth, "Idempotency-Key": "live"}).status_code == 409
    crashed_claim("dead", now - 1)
    taken = api.post("/validations", json=DOC, headers={**auth, "Idempotency-Key": "dead"})
    assert taken.status_code == 202, taken.text
    assert taken.json()["id"] not in ("never-stored", first.json()["id"])
    again = api.post("/validations", json=DOC, headers={**auth, "Idempotency-Key": "dead"})
    assert again.json()["id"] == taken.json()["id"]


def _crash_before_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API dies after storing and admitting, before StartExecution (its undo never runs)."""

    async def crash(self: ValidationService, name: str, payload: dict[str, Any]) -> str:
        raise RuntimeError("the API process died here")

    async def no_undo(self: ValidationService, *args: Any) -> None:
        return None

    monkeypatch.setattr(ValidationService, "_start_execution", crash)
    monkeypatch.setattr(ValidationService, "_undo", no_undo)


def test_a_validation_stored_but_never_started_can_be_cancelled(
    make_api: MakeApi, aws: Aws, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = make_api()
    user, auth = make_user(api, quota=QUOTA)
    _crash_before_start(monkeypatch)
    assert api.post("/validations", json=DOC, headers=auth).status_code == 502
    monkeypatch.undo()
    (stranded,) = api.get("/validations", headers=auth).json()["items"]
    assert stranded["status"] == "RUNNING" and _running(aws, settings, user) == 1
    cancelled = api.delete(f"/validations/{stranded['id']}", headers=auth)
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "CANCELLED", cancelled.text
    assert _running(aws, settings, user) == 0
    _settled_once(aws, settings, stranded["id"])


def test_the_reconciler_ends_runs_without_a_live_execution_and_refunds_each_once(
    make_api: MakeApi,
    aws: Aws,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    hold_calls: Any,
) -> None:
    api = make_api(reconcile_grace_seconds=0)
    user, auth = make_user(api, quota={**QUOTA, "max_running": 2})
    # 1. Never started: the API crashed between admission and StartExecution.
    _crash_before_start(monkeypatch)
    assert api.post("/validations", json=DOC, headers=auth).status_code == 502
    monkeypatch.undo()
    (never,) = api.get("/validations", headers=auth).json()["items"]
    # 2. Ended without Finalize: the execution dies mid-run (stopped behind our back, as a
    # timeout or the history limit would end it).
    held: HeldCalls = hold_calls(0)
    died = api.post("/validations", json=DOC, headers=auth).json()
    wait_for(lambda: held.waiting >= 1, timeout=60, what="the validator mid-call")
    arn = _item(aws, settings.table("validations"), {"id": died["id"]})["execution_arn"]
    aws.client("stepfunctions").stop_execution(executionArn=arn, error="States.Timeout", cause="test")
    held.release()  # the validator that was mid-call records its part (and its tokens), then nothing follows
    wait_for(
        lambda: api.get(f"/validations/{died['id']}", headers=auth).json()["progress"]["succeeded"] == 1,
        timeout=60,
        what="the last part's result",
    )
    assert _running(aws, settings, user) == 2

    report = api.post("/admin/reconcile")
    assert report.status_code == 200, report.text
    ended = {e["id"]: e for e in report.json()["ended"]}
    assert set(ended) == {never["id"], died["id"]}
    assert ended[never["id"]]["to"] == ended[died["id"]]["to"] == "FAILED"
    assert "ABORTED" in ended[died["id"]]["reason"]
    assert sorted(report.json()["refunded"]) == sorted(ended)
    assert _running(aws, settings, user) == 0
    for validation_id in ended:
        shown = api.get(f"/validations/{validation_id}", headers=auth).json()
        assert shown["status"] == "FAILED" and shown["error"]["type"] == "execution_lost"
        _settled_once(aws, settings, validation_id)
    fixes = api.app.state.metrics.registry.get_sample_value  # what the reconciler's EMF document fed locally
    assert fixes("validation_reconciler_fixes_total") == 2
    second = api.post("/admin/reconcile").json()  # once: a second pass finds nothing to fix
    assert second["ended"] == [] and second["refunded"] == []
    audit = api.get("/admin/audit").json()["items"]
    assert [e["action"] for e in audit].count("reconcile") == 2


def test_disabling_a_user_cancels_their_queue_and_admins_list_any_users_validations(
    make_api: MakeApi, aws: Aws, settings: Settings, hold_calls: Any
) -> None:
    api = make_api()
    user, auth = make_user(api, quota=QUOTA)  # max_running=1: the second waits in the queue
    other, other_auth = make_user(api)
    held: HeldCalls = hold_calls(0)
    running = api.post("/validations", json=DOC, headers=auth).json()
    wait_for(lambda: held.waiting >= 1, timeout=60, what="the first validation mid-call")
    queued = api.post("/validations", json=DOC, headers=auth).json()
    assert queued["status"] == "QUEUED"

    listed = api.get("/validations", params={"owner": user})  # the admin's key
    assert listed.status_code == 200 and {v["id"] for v in listed.json()["items"]} == {running["id"], queued["id"]}
    refused = api.get("/validations", params={"owner": user}, headers=other_auth)
    assert refused.status_code == 403 and refused.json()["field"] == "owner"
    assert api.get("/validations", params={"owner": other}, headers=other_auth).json()["items"] == []

    assert api.patch(f"/admin/users/{user}", json={"disabled": True}).status_code == 200
    assert api.get(f"/validations/{queued['id']}").json()["status"] == "CANCELLED"
    held.release()
    assert wait_for_status(api, running["id"])["status"] == "SUCCEEDED"  # running ones finish
    assert _running(aws, settings, user) == 0
    actions = [e["action"] for e in api.get("/admin/audit").json()["items"]]
    assert "user.disable.cancel_queued" in actions

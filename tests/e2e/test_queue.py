"""The per-user queue without polling (core/queue.py): a queued validation parks on a task
token, runs nothing and adds no history while it waits, and is woken when a slot frees;
max_queued; the race between parking and a slot freeing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from app.settings import Settings
from core.clock import now_iso
from core.queue import enqueue_steps
from lambdas.admit.handler import attempt, park
from lambdas.common.config import config_from_environ
from lambdas.common.stores import Store
from lambdas.common.stores.base import Clients
from local.aws import lambda_router
from local.aws.provision import Provisioner
from local.aws.server import EmbeddedAWS
from tests.local_aws.handlers import parked_tokens
from tests.support.stack import Aws, HeldCalls, make_user, wait_for, wait_for_status

DOC = {"documents": [{"name": "a.txt", "content": "row 1\nrow 2\n"}], "rules": ["be tidy"]}


def _record(aws: Aws, settings: Settings, vid: str) -> dict[str, Any]:
    item: dict[str, Any] = aws.client("dynamodb").get_item(
        TableName=settings.table("validations"), Key={"id": {"S": vid}}, ConsistentRead=True
    )["Item"]
    return item


def _bucket(aws: Aws, settings: Settings, user: str) -> dict[str, int]:
    item = aws.client("dynamodb").get_item(
        TableName=settings.table("buckets"), Key={"user_id": {"S": user}}, ConsistentRead=True
    )["Item"]
    return {k: int(float(item[k]["N"])) for k in ("running", "queued")}


def _history(aws: Aws, execution_arn: str) -> list[str]:
    pages = aws.client("stepfunctions").get_paginator("get_execution_history").paginate(executionArn=execution_arn)
    return [e["type"] for page in pages for e in page["events"]]


def _admit_calls(settings: Settings) -> int:
    return lambda_router.invocations().get(f"{settings.name_prefix}-admit", 0)


@pytest.mark.slow(15)
def test_a_validation_queued_behind_max_running_parks_with_a_flat_history_and_no_lambda_calls_then_runs(
    api: Any, aws: Aws, settings: Settings, hold_calls: Callable[[int], HeldCalls]
) -> None:
    held = hold_calls(0)  # the first validation stays running: its model call waits at the simulator
    # A bucket that refills completely twice a second: a polling queue would try again and again.
    quota = {"capacity_tokens": 2_000, "refill_tokens_per_minute": 240_000, "max_running": 1}
    user, auth = make_user(api, quota=quota, on_limit="queue")
    first = api.post("/validations", json=DOC, headers=auth).json()
    wait_for(lambda: held.waiting == 1, what="the first validation's call to be held")
    queued = api.post("/validations", json=DOC, headers=auth).json()
    assert (first["status"], queued["status"]) == ("RUNNING", "QUEUED")
    arn = _record(aws, settings, queued["id"])["execution_arn"]["S"]
    wait_for(lambda: "park_token" in _record(aws, settings, queued["id"]), what="the queued validation to park")
    wait_for(lambda: _history(aws, arn)[-1] == "TaskSubmitted", what="its WaitForSlot task to wait")
    parked_events, parked_calls = len(_history(aws, arn)), _admit_calls(settings)
    assert _bucket(aws, settings, user) == {"running": 1, "queued": 1}

    time.sleep(8 * 2_000 / (240_000 / 60))  # eight refill periods of the bucket (4 s), parked

    assert len(_history(aws, arn)) == parked_events  # flat: not one event while parked
    assert _admit_calls(settings) == parked_calls  # and not one Lambda invocation
    assert api.get(f"/validations/{queued['id']}", headers=auth).json()["status"] == "QUEUED"

    held.release()  # the first one finishes; Finalize frees its slot and wakes the queued one
    assert wait_for_status(api, first["id"])["status"] == "SUCCEEDED"
    assert wait_for_status(api, queued["id"])["status"] == "SUCCEEDED"
    assert _admit_calls(settings) == parked_calls + 1  # woken once, admitted at the first attempt
    events = _history(aws, arn)
    assert events[parked_events] == "TaskSucceeded"  # the wait ended by its token, nothing before
    assert _bucket(aws, settings, user) == {"running": 0, "queued": 0}


@pytest.mark.slow(12)
def test_past_max_queued_a_submission_is_429_and_a_cancel_or_a_higher_max_running_moves_the_queue(
    api: Any, aws: Aws, settings: Settings, hold_calls: Callable[[int], HeldCalls]
) -> None:
    held = hold_calls(0)
    quota = {"capacity_tokens": 100_000, "refill_tokens_per_minute": 100_000, "max_running": 1, "max_queued": 2}
    user, auth = make_user(api, quota=quota, on_limit="queue")
    running = api.post("/validations", json=DOC, headers=auth).json()
    wait_for(lambda: held.waiting == 1, what="the first validation's call to be held")
    queued = [api.post("/validations", json=DOC, headers=auth).json() for _ in range(2)]
    assert [v["status"] for v in queued] == ["QUEUED", "QUEUED"]

    refused = api.post("/validations", json=DOC, headers=auth)

    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    body = refused.json()
    assert (body["limit"], body["limit_value"], body["queued"]) == ("max_queued", 2, 2)
    assert int(refused.headers["retry-after"]) >= 5
    assert len(api.get("/validations", headers=auth).json()["items"]) == 3  # the refused one left nothing
    assert _bucket(aws, settings, user) == {"running": 1, "queued": 2}

    # Cancelling the head (parked) aborts its execution at once and hands the head on.
    wait_for(lambda: "park_token" in _record(aws, settings, queued[0]["id"]), what="the head to park")
    assert api.delete(f"/validations/{queued[0]['id']}", headers=auth).json()["status"] == "CANCELLED"
    assert _bucket(aws, settings, user) == {"running": 1, "queued": 1}
    again = api.post("/validations", json=DOC, headers=auth)
    assert again.status_code == 202 and again.json()["status"] == "QUEUED"
    assert _bucket(aws, settings, user) == {"running": 1, "queued": 2}

    # An admin raising max_running wakes the parked head: it starts beside the running one.
    head = queued[1]["id"]
    wait_for(lambda: "park_token" in _record(aws, settings, head), what="the new head to park")
    patched = api.patch(f"/admin/users/{user}", json={"quota": {**quota, "max_running": 2}})
    assert patched.status_code == 200 and patched.json()["quota"]["max_queued"] == 2
    assert wait_for_status(api, head, statuses=("RUNNING",))["status"] == "RUNNING"
    assert _bucket(aws, settings, user) == {"running": 2, "queued": 1}

    assert api.delete(f"/validations/{again.json()['id']}", headers=auth).json()["status"] == "CANCELLED"
    held.release()  # leave nothing queued or running
    assert [wait_for_status(api, vid)["status"] for vid in (running["id"], head)] == ["SUCCEEDED"] * 2
    assert _bucket(aws, settings, user) == {"running": 0, "queued": 0}


def _parked_execution(aws: Aws) -> tuple[str, str]:
    """A real execution parked on a task token (the token is what the WaitForSlot task would get)."""
    machine = aws.parking_machine(timeout_seconds=600)
    name = uuid.uuid4().hex
    execution = aws.start(machine, {"probe": name})
    return execution, wait_for(lambda: parked_tokens[name] and parked_tokens[name][0], what="a task token")


def test_a_slot_freed_before_the_token_is_stored_is_seen_by_the_parkers_recheck(
    api: Any, aws: Aws, settings: Settings, embedded_aws: EmbeddedAWS
) -> None:
    user, _ = make_user(api, quota={"capacity_tokens": 100_000, "refill_tokens_per_minute": 100_000, "max_running": 1})
    config = config_from_environ(Provisioner(settings, embedded_aws.endpoint_url).function_environment())
    kwargs = {"endpoint_url": embedded_aws.endpoint_url, "region_name": "us-east-1"}
    kwargs.update(aws_access_key_id="t", aws_secret_access_key="t")
    store = Store.of(
        Clients(
            config,
            boto3.resource("dynamodb", **kwargs),
            None,
            boto3.client("dynamodb", **kwargs),
            boto3.client("stepfunctions", **kwargs),
        )
    )
    db = aws.client("dynamodb")

    def set_running(n: int) -> None:  # another validation of the user holds (or frees) the one slot
        db.update_item(
            TableName=settings.table("buckets"),
            Key={"user_id": {"S": user}},
            UpdateExpression="SET running = :n",
            ExpressionAttributeValues={":n": {"N": str(n)}},
        )

    def queued_validation() -> str:
        vid = uuid.uuid4().hex
        record = {"id": vid, "owner": user, "status": "QUEUED", "run": 1, "queue_key": f"{now_iso()}#{vid}"}
        record.update(run_cost=100, created_at=now_iso(), prompt_tokens=0, completion_tokens=0, event_seq=0)
        assert store.drive(enqueue_steps(config.validations_table, config.buckets_table, record, 10)) is None
        return vid

    # The race: Admit cannot admit (no slot), the slot frees and its releaser finds no token.
    set_running(1)
    first = queued_validation()
    assert attempt(store, config, first, 1).reason == "max_running"
    set_running(0)
    assert store.queue.release_head(user) is None  # nobody to wake yet
    execution, token = _parked_execution(aws)

    outcome = park(store, config, first, 1, token)  # token stored, then admission tried again

    assert outcome == {"parked": False, "reason": "admitted"}
    assert aws.wait_until(execution)["status"] == "SUCCEEDED"  # it woke itself
    assert _record(aws, settings, first)["status"]["S"] == "RUNNING"

    # The other order: the token is stored first, then the slot frees and the releaser wakes it.
    second = queued_validation()
    execution, token = _parked_execution(aws)
    assert park(store, config, second, 1, token) == {"parked": True, "reason": "max_running"}
    assert aws.client("stepfunctions").describe_execution(executionArn=execution)["status"] == "RUNNING"
    set_running(0)

    assert store.queue.release_head(user) == second

    assert aws.wait_until(execution)["status"] == "SUCCEEDED"
    assert _bucket(aws, settings, user)["queued"] == 1  # the first counted off when admitted

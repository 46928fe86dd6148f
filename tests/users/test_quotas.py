"""Per-user token buckets: bounded grants under contention, 429 vs queue, refunds exactly once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import boto3
import pytest

from app.settings import Settings
from core.clock import now_iso
from core.quota import Admission, Quota, admission_steps
from lambdas.common.config import config_from_environ
from lambdas.common.stores import Store
from lambdas.common.stores.base import Clients
from local.aws.provision import Provisioner
from local.aws.server import EmbeddedAWS
from local.simulator.server import SimulatorServer
from tests.support.stack import Aws, HeldCalls, MakeApi, lines_document, make_user, wait_for, wait_for_status

DOC = {"documents": [{"name": "a.txt", "content": "row 1\nrow 2\n"}], "rules": ["be tidy"]}


def _store(settings: Settings, endpoint: str) -> Store:
    """The Lambdas' store, configured from the environment the embedded AWS gives them; its own
    clients (boto3 resources are not thread-safe, and `store_for` shares them)."""
    config = config_from_environ(Provisioner(settings, endpoint).function_environment())
    kwargs = {
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "t",
        "aws_secret_access_key": "t",
    }
    return Store.of(Clients(config, boto3.resource("dynamodb", **kwargs), None, boto3.client("dynamodb", **kwargs)))


@pytest.mark.slow(7)
def test_sixty_four_concurrent_submitters_never_get_more_than_capacity_plus_refill(
    api: Any, settings: Settings, embedded_aws: EmbeddedAWS
) -> None:
    quota = Quota(capacity_tokens=10_000, refill_tokens_per_minute=6_000, max_running=10_000)
    user, _ = make_user(api, quota=quota.as_dict(), on_limit="reject")
    cost, attempts = 500, 4  # 256 requests of 500 tokens: far more than capacity plus any refill meanwhile

    def submitter(_: int) -> tuple[int, int]:
        store = _store(settings, embedded_aws.endpoint_url)  # boto3 resources are not thread-safe
        table = store.clients.table(settings.table("validations"))
        granted = refused = 0
        for _ in range(attempts):
            vid = uuid.uuid4().hex
            key = f"{now_iso()}#{vid}"
            table.put_item(
                Item={
                    "id": vid,
                    "owner": user,
                    "status": "QUEUED",
                    "run": 1,
                    "queue_key": key,
                    "run_cost": cost,
                    "created_at": key,
                }
            )
            admission = Admission(
                settings.table("validations"), settings.table("buckets"), vid, user, key, 1, cost, 0, quota, fifo=False
            )
            outcome = store.drive(admission_steps(admission, time.time(), now_iso()))
            granted += outcome.admitted
            refused += not outcome.admitted
        return granted, refused

    with ThreadPoolExecutor(64) as pool:
        counts = list(pool.map(submitter, range(64)))

    items = boto3.client(
        "dynamodb",
        endpoint_url=embedded_aws.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="t",
        aws_secret_access_key="t",
    )
    grants: list[tuple[Decimal, int]] = []
    paginator = items.get_paginator("scan")
    for page in paginator.paginate(
        TableName=settings.table("validations"),
        FilterExpression="attribute_exists(admitted_at) AND #o = :u",
        ExpressionAttributeNames={"#o": "owner"},
        ExpressionAttributeValues={":u": {"S": user}},
    ):
        grants.extend((Decimal(i["admitted_at"]["N"]), int(i["reserved"]["N"])) for i in page["Items"])
    grants.sort()
    rate = Decimal(quota.refill_tokens_per_minute) / 60

    assert sum(g for g, _ in counts) == len(grants)
    assert sum(r for _, r in counts) > 0  # the bucket was contended
    assert len(grants) * cost >= quota.capacity_tokens  # and exhausted: the bound is what held grants back
    for i, (start, _) in enumerate(grants):  # every window [t_i, t_j] of recorded grants
        total = 0
        for end, tokens in grants[i:]:
            total += tokens
            assert total <= quota.capacity_tokens + rate * (end - start) + Decimal("0.001"), (start, end, total)


def test_over_the_limit_reject_answers_429_with_retry_after_and_ratelimit_fields(
    api: Any, simulator: SimulatorServer
) -> None:
    # One small validation costs ~850 tokens (prompt + 512 completion allowance): capacity 1,000 holds one.
    quota = {"capacity_tokens": 1_000, "refill_tokens_per_minute": 6_000, "max_running": 10}
    user, auth = make_user(api, quota=quota, on_limit="reject")
    first = api.post("/validations", json=DOC, headers=auth)
    assert first.status_code == 202 and first.json()["status"] == "RUNNING"

    refused = api.post("/validations", json=DOC, headers=auth)

    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    body = refused.json()
    assert body["limit"] == "capacity_tokens" and body["cost"] > 0
    assert "Token quota exceeded" in body["detail"]
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 15
    assert refused.headers["ratelimit-policy"] == '"tokens";q=1000;w=10'
    assert refused.headers["ratelimit"].startswith('"tokens";r=')
    assert len(api.get("/validations", headers=auth).json()["items"]) == 1  # the refused one left nothing

    time.sleep(retry_after)
    again = api.post("/validations", json=DOC, headers=auth)
    assert again.status_code == 202, again.text


def test_max_running_refusal_names_the_concurrency_limit(api: Any, hold_calls: Callable[[int], HeldCalls]) -> None:
    hold_calls(0)  # the first one stays running: its call waits at the simulator
    user, auth = make_user(
        api,
        quota={"capacity_tokens": 100_000, "refill_tokens_per_minute": 100_000, "max_running": 1},
        on_limit="reject",
    )
    assert api.post("/validations", json=DOC, headers=auth).status_code == 202

    refused = api.post("/validations", json=DOC, headers=auth)

    assert refused.status_code == 429
    assert refused.json()["limit"] == "max_running"
    assert "at most 1" in refused.json()["detail"]
    assert "retry-after" in refused.headers


def test_a_validation_larger_than_the_whole_capacity_is_422(api: Any) -> None:
    user, auth = make_user(api, quota={"capacity_tokens": 100, "refill_tokens_per_minute": 100, "max_running": 1})
    answer = api.post("/validations", json=DOC, headers=auth)
    assert answer.status_code == 422
    assert answer.json()["limit"] == "capacity_tokens"
    assert answer.json()["cost"] > 100


@pytest.mark.slow(12)
def test_queued_validations_start_later_in_submission_order_and_a_cancelled_one_consumes_nothing(
    make_api: MakeApi, simulator: SimulatorServer
) -> None:
    api = make_api(queue_min_wait_seconds=1)
    # Capacity for one validation (~680 tokens) at a time; ~3.6 s of refill before the next.
    user, auth = make_user(
        api, quota={"capacity_tokens": 1_000, "refill_tokens_per_minute": 6_000, "max_running": 10}, on_limit="queue"
    )
    ids, answers = [], []
    for _ in range(4):
        answer = api.post("/validations", json=DOC, headers=auth)
        assert answer.status_code == 202
        answers.append(answer.json())
        ids.append(answer.json()["id"])
    assert answers[0]["status"] == "RUNNING", answers
    assert [a["status"] for a in answers[1:]] == ["QUEUED"] * 3, answers
    assert [a["queue"]["position"] for a in answers[1:]] == [1, 2, 3], answers
    assert all(a["queue"]["estimated_start"] for a in answers[1:])

    cancelled = api.delete(f"/validations/{ids[2]}", headers=auth)
    assert cancelled.status_code == 202
    assert wait_for_status(api, ids[2], statuses=("CANCELLED",))["status"] == "CANCELLED"

    finished = [wait_for_status(api, vid, timeout=120) for vid in (ids[0], ids[1], ids[3])]
    assert [v["status"] for v in finished] == ["SUCCEEDED"] * 3
    started = [v["started_at"] for v in finished]
    assert started == sorted(started)  # submission order
    cancelled_record = api.get(f"/validations/{ids[2]}").json()
    assert cancelled_record["started_at"] is None
    assert cancelled_record["usage"] == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "model_calls": 0,
        "reused_parts": 0,
        "attempts": 0,
        "relocated": 0,
        "ungrounded": 0,
        "reasked": 0,
        "charged_tokens": None,
        "cached_prompt_tokens": 0,
        "cost_usd": 0.0,  # nothing asked: nothing owed
        "model": "simulator",
        "served_model": None,
    }


def test_refunds_happen_exactly_once_after_finish_cancel_and_retry(
    make_api: MakeApi, aws: Aws, settings: Settings, simulator: SimulatorServer, hold_calls: Callable[[int], HeldCalls]
) -> None:
    api = make_api(part_max_tokens=100, sfn_retry_max_attempts=0, cancel_settle_seconds=0)
    user, auth = make_user(
        api, quota={"capacity_tokens": 1_000_000, "refill_tokens_per_minute": 60, "max_running": 10}, on_limit="reject"
    )
    db = aws.client("dynamodb")

    def record(vid: str) -> dict[str, Any]:
        item: dict[str, Any] = db.get_item(
            TableName=settings.table("validations"), Key={"id": {"S": vid}}, ConsistentRead=True
        )["Item"]
        return item

    def bucket_tat() -> Decimal:
        return Decimal(
            db.get_item(TableName=settings.table("buckets"), Key={"user_id": {"S": user}}, ConsistentRead=True)["Item"][
                "tat"
            ]["N"]
        )

    # Finished: refunded = reserved - used, once.
    simulator.reconfigure(error_rate=0.5, seed=11)
    vid = api.post(
        "/validations",
        json={"documents": [{"name": "a.txt", "content": lines_document(40)}], "rules": ["t"]},
        headers=auth,
    ).json()["id"]
    first = wait_for_status(api, vid, timeout=120)
    item = record(vid)
    used = first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    assert item["settled_run"] == {"N": "1"}
    assert int(item["refunded"]["N"]) == int(item["reserved"]["N"]) - used
    tat_after_finish = bucket_tat()

    # Settling again (a duplicated finalize, a DELETE) changes nothing.
    finalize = [
        f
        for f in aws.client("lambda").list_functions()["Functions"]
        if f["FunctionName"] == f"{settings.name_prefix}-finalize"
    ][0]
    aws.client("lambda").invoke(
        FunctionName=finalize["FunctionArn"], Payload=f'{{"validation_id": "{vid}", "run": 1}}'.encode()
    )
    assert bucket_tat() == tat_after_finish
    assert record(vid)["refunded"] == item["refunded"]

    # Retry: run 2 reserves for the failed parts only and is settled once more.
    assert first["status"] == "FAILED"
    simulator.reconfigure(error_rate=0.0)
    assert api.post(f"/validations/{vid}/retry", headers=auth).status_code == 202
    second = wait_for_status(api, vid, timeout=120)
    item2 = record(vid)
    used2 = second["usage"]["prompt_tokens"] + second["usage"]["completion_tokens"] - used
    assert second["status"] == "SUCCEEDED"
    assert item2["settled_run"] == {"N": "2"}
    assert int(item2["refunded"]["N"]) == int(item["refunded"]["N"]) + int(item2["reserved"]["N"]) - used2

    # Cancelled while running: settled when CANCELLED, and a repeated DELETE refunds nothing more.
    held = hold_calls(1)  # one part answers; the others wait at the simulator until the DELETE
    running = api.post(
        "/validations",
        json={"documents": [{"name": "b.txt", "content": lines_document(60)}], "rules": ["t"]},
        headers=auth,
    ).json()["id"]
    wait_for(
        lambda: api.get(f"/validations/{running}", headers=auth).json()["progress"]["succeeded"] >= 1,
        timeout=60,
        what="progress",
    )
    assert api.delete(f"/validations/{running}", headers=auth).status_code == 202
    held.release()
    wait_for_status(api, running, statuses=("CANCELLED",))
    api.get(f"/validations/{running}", headers=auth)
    wait_for(lambda: "settled_run" in record(running), what="settlement")
    settled = record(running)
    tat = bucket_tat()
    assert api.delete(f"/validations/{running}", headers=auth).json()["status"] == "CANCELLED"
    assert record(running)["refunded"] == settled["refunded"]
    assert bucket_tat() == tat

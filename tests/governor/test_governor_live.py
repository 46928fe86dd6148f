"""The TPM governor through the whole stack: API, Step Functions, Lambdas, simulator.

Counts come from the simulator (calls in flight, tokens admitted, 429s) and from the
governor's own table; nothing here asserts a duration except as a generous deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from typing import Any

from local.aws.provision import Provisioner
from core import lambda_env
from lambdas.validate_chunk.handler import lambda_handler
from tests.conftest import lines_document, make_user, set_parallelism, submit, wait_for, wait_for_status

NO_SECRET = {"id": "no-secret", "text": "No line may contain the word secret."}


def _ssm_put(aws: Any, settings: Any, name: str, value: Any) -> None:
    aws.client("ssm").put_parameter(Name=f"{settings.ssm_prefix}/{name}", Value=str(value), Type="String", Overwrite=True)


def _events(aws: Any, settings: Any, validation_id: str) -> list[dict[str, Any]]:
    table = aws.client("dynamodb")
    items = table.query(
        TableName=settings.table("events"),
        KeyConditionExpression="validation_id = :v",
        ExpressionAttributeValues={":v": {"S": validation_id}},
    )["Items"]
    return [{"type": i["type"]["S"], **json.loads(i["data"]["S"])} for i in items]


def _budget_item(aws: Any, settings: Any) -> dict[str, Any]:
    return aws.client("dynamodb").get_item(TableName=settings.table("governor"), Key={"pk": {"S": "budget"}, "sk": {"S": "tokens"}})["Item"]


def _spent(budget: dict[str, Any]) -> int:
    """granted − returned on the budget item: the tokens validators sent (or may still send)."""
    return int(budget["granted"]["N"]) - int(budget.get("returned", {"N": "0"})["N"])


def _windows(admitted: list[tuple[float, int]], window: float) -> float:
    """The most tokens admitted in any window that starts at an admission."""
    return max((sum(c for t, c in admitted if start <= t < start + window) for start, _ in admitted), default=0)


def test_lowering_max_parallelism_reaches_a_running_validation_within_ten_seconds(make_api, aws, settings, simulator):
    api = make_api(chunk_max_tokens=100)
    set_parallelism(aws, settings, 8)
    simulator.reconfigure(latency_seconds=0.5)
    created = submit(api, {f"part-{i}.txt": lines_document(300) for i in range(3)}, [NO_SECRET])
    vid = created["id"]
    wait_for(lambda: simulator.stats.peak_in_flight >= 6, timeout=90, what="eight calls in flight")
    assert api.get(f"/validations/{vid}").json()["parallelism"]["planned"] == 8

    changed_at = time.monotonic()
    assert api.patch("/admin/parallelism", json={"max_parallelism": 2}).status_code == 200
    time.sleep(max(0.0, changed_at + 10 - time.monotonic()))
    simulator.simulator.reset_peak()
    before = api.get(f"/validations/{vid}").json()["progress"]["succeeded"]
    time.sleep(3)
    after = api.get(f"/validations/{vid}").json()

    assert simulator.stats.peak_in_flight <= 2
    assert after["status"] == "RUNNING" and after["progress"]["succeeded"] > before  # still calling, two at a time
    assert after["parallelism"]["effective"] == 2
    shown = [e["parallelism"] for e in _events(aws, settings, vid) if e["type"] == "progress" and "parallelism" in e]
    assert shown[0] == 8 and shown[-1] == 2
    assert api.delete(f"/validations/{vid}").status_code in (200, 202)
    wait_for_status(api, vid, statuses=("CANCELLED",))


def test_two_users_share_one_budget_and_every_window_stays_within_the_limit(make_api, aws, settings, simulator):
    window, limit = 6.0, 30_000
    api = make_api(chunk_max_tokens=300, governor_window_seconds=window)
    simulator.reconfigure(tpm=limit, rpm=100_000, window_seconds=window, latency_seconds=0.05)
    _ssm_put(aws, settings, "target-tpm", limit)
    set_parallelism(aws, settings, 6)
    users = [make_user(api)[1] for _ in range(2)]
    ids = [submit(api, {"data.txt": lines_document(900)}, [NO_SECRET], headers=h)["id"] for h in users]

    overlapped = wait_for(
        lambda: all(api.get(f"/validations/{v}").json()["progress"]["succeeded"] > 0 for v in ids)
        and all(api.get(f"/validations/{v}").json()["status"] == "RUNNING" for v in ids),
        timeout=60,
        what="both users' validations running at once",
    )
    done = [wait_for_status(api, v, timeout=180) for v in ids]

    assert overlapped
    assert [d["status"] for d in done] == ["SUCCEEDED", "SUCCEEDED"]
    admitted = list(simulator.stats.admitted)
    total = sum(c for _, c in admitted)
    assert total > 2 * limit  # long enough to span windows
    assert _windows(admitted, window) <= limit
    assert simulator.stats.rate_limited == 0
    budget = _budget_item(aws, settings)
    assert _spent(budget) == total  # every token granted was sent, or given back


def test_upstream_429s_and_a_lower_upstream_limit_slow_the_governor_down(make_api, aws, settings, simulator):
    api = make_api(chunk_max_tokens=200)
    simulator.reconfigure(tpm=400_000, rate_limit_rate=0.15, seed=7)  # seeded: the same draws every run
    created = submit(api, {"a.txt": lines_document(300)}, [NO_SECRET])
    done = wait_for_status(api, created["id"], timeout=180)
    view = api.get("/admin/parallelism").json()

    assert done["status"] == "SUCCEEDED"  # the 429s were retried
    assert simulator.stats.rate_limited > 0
    assert view["target_tpm"] == 2_000_000
    assert view["effective"]["upstream_limit_tokens"] == 400_000  # x-ratelimit-limit-tokens
    assert view["effective"]["factor"] < 1.0
    assert view["effective"]["tokens_per_window"] < 400_000 * 0.9
    # Usage counts refused requests as spent (OpenAI counts them); the simulator charges only
    # those its limit admitted, so the two differ by at most the refused calls' estimates.
    admitted = sum(c for _, c in simulator.stats.admitted)
    assert admitted <= view["usage"]["tokens_last_window"] <= admitted + simulator.stats.rate_limited * 2_000
    assert view["usage"]["calls_in_flight"] == 0


def test_lambdas_read_ssm_through_a_cache_not_per_chunk(make_api, aws, settings, simulator):
    from lambdas.common import live_config

    api = make_api(chunk_max_tokens=100)
    set_parallelism(aws, settings, 4)
    calls: list[float] = []
    client = live_config._ssm(settings.aws_endpoint_url, settings.aws_region)
    handler = lambda **_: calls.append(time.monotonic())  # noqa: E731
    client.meta.events.register("before-call.ssm.GetParameters", handler)
    try:
        started = time.monotonic()
        created = submit(api, {"a.txt": lines_document(330)}, [NO_SECRET])
        done = wait_for_status(api, created["id"], timeout=180)
        elapsed = time.monotonic() - started
    finally:
        client.meta.events.unregister("before-call.ssm.GetParameters", handler)

    chunks = done["progress"]["total"]
    assert done["status"] == "SUCCEEDED" and chunks >= 40
    assert 1 <= len(calls) <= (elapsed / settings.config_cache_seconds + 1) * 4  # per cache period, not per chunk
    assert len(calls) < chunks / 2


# --- a validator killed mid-call --------------------------------------------------------------

_VICTIM = """
import json, sys
from lambdas.validate_chunk.handler import lambda_handler

class Context:
    def get_remaining_time_in_millis(self):
        return 600_000

lambda_handler(json.loads(sys.argv[1]), Context())
"""


def test_a_killed_validators_slot_and_unused_tokens_come_back_within_one_lease(make_api, aws, settings, simulator):
    lease_seconds = 4.0
    api = make_api(chunk_max_tokens=100, lease_seconds=lease_seconds)
    set_parallelism(aws, settings, 1)
    sfn = aws.client("stepfunctions")
    machine = aws.machine_arn(settings.state_machine_name)
    # Executions of this test only hold: the validators below are run by hand.
    sfn.update_state_machine(stateMachineArn=machine, definition=json.dumps({"StartAt": "Hold", "States": {"Hold": {"Type": "Wait", "Seconds": 120, "End": True}}}))
    created = submit(api, {"a.txt": lines_document(60)}, [NO_SECRET])
    vid, total = created["id"], created["progress"]["total"]
    chunks = aws.client("dynamodb").query(
        TableName=settings.table("chunks"), KeyConditionExpression="validation_id = :v", ExpressionAttributeValues={":v": {"S": vid}}
    )["Items"]
    batch = {"validation_id": vid, "run": 1, "chunks": {"first": min(c["chunk_id"]["S"] for c in chunks), "last": max(c["chunk_id"]["S"] for c in chunks)}}
    environment = {**os.environ, **Provisioner(settings.model_copy(update={"lease_seconds": lease_seconds}), settings.aws_endpoint_url).function_environment()}
    environment["PYTHONPATH"] = os.getcwd()

    simulator.reconfigure(latency_seconds=6)  # the victim is killed during its first call (the orphaned call ends later)
    victim = subprocess.Popen([sys.executable, "-c", _VICTIM, json.dumps(batch)], env=environment, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: simulator.stats.in_flight == 1, timeout=60, what="the victim's call in flight")
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
    finally:
        if victim.poll() is None:
            victim.kill()
    killed_at = time.time()
    dead = aws.client("dynamodb").get_item(TableName=settings.table("governor"), Key={"pk": {"S": f"lease#{vid}"}, "sk": {"S": "00"}})["Item"]
    expires_at = float(Decimal(dead["expires_at"]["N"]))
    leased, committed = int(dead["leased"]["N"]), int(dead["committed"]["N"])
    assert leased > committed > 0  # it held unused tokens, and one call's worth in flight

    simulator.reconfigure(latency_seconds=0.01)
    calls_before = simulator.stats.requests
    token = lambda_env.use({k: v for k, v in environment.items() if k.isupper()})
    try:
        summary = lambda_handler(batch, _Context())  # the retry Step Functions would make
    finally:
        lambda_env.reset(token)

    assert summary["validated"] == total
    assert simulator.stats.requests - calls_before == total  # the killed chunk is done again, nothing twice
    first_new_call = sorted(simulator.stats.started)[-total]
    first_new_call_wall = time.time() - (time.monotonic() - first_new_call)
    # The slot stayed the dead holder's until its lease expired, then came back.
    assert expires_at <= killed_at + lease_seconds
    assert expires_at - 0.05 <= first_new_call_wall <= expires_at + lease_seconds
    # Tokens: everything granted was sent or given back; the killed call counts as sent, at
    # the estimate it committed (its real charge was never reported back).
    budget = _budget_item(aws, settings)
    victim_charge = min(simulator.stats.admitted)[1]
    assert _spent(budget) == sum(c for _, c in simulator.stats.admitted) - victim_charge + committed
    lease_items = aws.client("dynamodb").query(
        TableName=settings.table("governor"), KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": f"lease#{vid}"}}
    )["Items"]
    assert lease_items == []
    assert api.delete(f"/validations/{vid}").status_code in (200, 202)


class _Context:
    def get_remaining_time_in_millis(self) -> int:
        return 600_000

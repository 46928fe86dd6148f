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

import pytest

from app.settings import Settings
from core import lambda_env
from lambdas.validate_part.handler import lambda_handler
from local.aws.provision import Provisioner
from local.simulator.server import SimulatorServer
from tests.governor.fleet import spent
from tests.support.stack import (
    Aws,
    MakeApi,
    lines_document,
    make_user,
    set_parallelism,
    submit,
    wait_for,
    wait_for_status,
)

NO_SECRET = {"id": "no-secret", "text": "No line may contain the word secret."}


def _ssm_put(aws: Aws, settings: Settings, name: str, value: Any) -> None:
    aws.client("ssm").put_parameter(
        Name=f"{settings.ssm_prefix}/{name}", Value=str(value), Type="String", Overwrite=True
    )


def _events(aws: Aws, settings: Settings, validation_id: str) -> list[dict[str, Any]]:
    table = aws.client("dynamodb")
    items = table.query(
        TableName=settings.table("events"),
        KeyConditionExpression="validation_id = :v",
        ExpressionAttributeValues={":v": {"S": validation_id}},
    )["Items"]
    return [{"type": i["type"]["S"], **json.loads(i["data"]["S"])} for i in items]


@pytest.mark.slow(13)
def test_lowering_max_parallelism_reaches_a_running_validation(
    make_api: MakeApi, aws: Aws, settings: Settings, simulator: SimulatorServer
) -> None:
    api = make_api(part_max_tokens=100)
    set_parallelism(aws, settings, 8)
    # Long calls while it ramps up, so six overlap even when a loaded machine is slow to start
    # validators (each grant costs a few governor requests); short ones once the limit is lowered.
    simulator.reconfigure(latency_seconds=2.0)
    created = submit(api, {f"part-{i}.txt": lines_document(300) for i in range(3)}, [NO_SECRET])
    vid = created["id"]

    def succeeded() -> int:
        return int(api.get(f"/validations/{vid}").json()["progress"]["succeeded"])

    wait_for(lambda: simulator.stats.peak_in_flight >= 6, timeout=90, what="six or more calls in flight")
    assert api.get(f"/validations/{vid}").json()["parallelism"]["planned"] == 8
    simulator.reconfigure(latency_seconds=0.5)

    assert api.patch("/admin/parallelism", json={"max_parallelism": 2}).status_code == 200
    # Validators read it within a cache period and show it on the validation; the calls
    # they started before end, and from then on two at a time.
    wait_for(
        lambda: api.get(f"/validations/{vid}").json()["parallelism"]["effective"] == 2,
        timeout=60,
        what="parallelism 2 shown",
    )
    wait_for(lambda: simulator.stats.in_flight <= 2, timeout=60, what="the calls started before the change to end")
    settled = succeeded()
    wait_for(lambda: succeeded() >= settled + 2, timeout=60, what="two parts done at the new limit")
    simulator.simulator.reset_peak()
    before = succeeded()
    wait_for(lambda: succeeded() >= before + 6, timeout=60, what="six more parts")
    after = api.get(f"/validations/{vid}").json()

    assert simulator.stats.peak_in_flight <= 2
    assert after["status"] == "RUNNING"  # still calling, two at a time
    assert after["parallelism"]["effective"] == 2
    shown = [e["parallelism"] for e in _events(aws, settings, vid) if e["type"] == "progress" and "parallelism" in e]
    assert shown[0] == 8 and shown[-1] == 2
    assert api.delete(f"/validations/{vid}").status_code in (200, 202)
    wait_for_status(api, vid, statuses=("CANCELLED",))


@pytest.mark.slow(30)
def test_two_users_share_one_budget_and_the_upstream_limit_never_refuses_a_call(
    make_api: MakeApi, aws: Aws, settings: Settings, simulator: SimulatorServer
) -> None:
    # Twelve calls in flight at 50 ms each would ask for ~50 times the limit: the shared budget holds them back.
    window, limit = 6.0, 30_000
    api = make_api(part_max_tokens=300, governor_window_seconds=window)
    simulator.reconfigure(tpm=limit, rpm=100_000, window_seconds=window, latency_seconds=0.05)
    _ssm_put(aws, settings, "target-tpm", limit)
    set_parallelism(aws, settings, 6)
    users = [make_user(api)[1] for _ in range(2)]
    ids = [submit(api, {"data.txt": lines_document(900)}, [NO_SECRET], headers=h)["id"] for h in users]

    overlapped = wait_for(
        lambda: (
            all(api.get(f"/validations/{v}").json()["progress"]["succeeded"] > 0 for v in ids)
            and all(api.get(f"/validations/{v}").json()["status"] == "RUNNING" for v in ids)
        ),
        timeout=60,
        what="both users' validations running at once",
    )
    done = [wait_for_status(api, v, timeout=180) for v in ids]

    assert overlapped
    assert [d["status"] for d in done] == ["SUCCEEDED", "SUCCEEDED"]
    admitted = list(simulator.stats.admitted)
    total = sum(c for _, c in admitted)
    assert total > 2 * limit  # long enough to span windows
    # The judge is the upstream's own limiter (OpenAI's token buckets, at exactly this limit): it
    # refused nothing. (Arrival times are not the budget's schedule: on a loaded machine calls
    # can bunch by a few per cent in some 6 s window, which a bucket of a whole window absorbs.)
    assert simulator.stats.rate_limited == 0
    sent = spent(aws.client("dynamodb"), settings.table("governor"))
    # Every token granted was sent, or given back. An attempt that failed without an answer (a
    # connection error on a loaded machine) keeps its grant: the governor cannot know whether the
    # request reached the upstream, which counts what arrives, so it stays charged — at most one
    # call's tokens per such attempt, never more.
    unanswered = sum(d["usage"]["attempts"] - d["usage"]["model_calls"] for d in done)
    largest_call = max(c for _, c in admitted)
    assert total <= sent <= total + unanswered * 2 * largest_call, (unanswered, largest_call)
    if unanswered == 0:
        assert sent == total


@pytest.mark.slow(12)
def test_upstream_429s_and_a_lower_upstream_limit_slow_the_governor_down(
    make_api: MakeApi, aws: Aws, settings: Settings, simulator: SimulatorServer
) -> None:
    api = make_api(part_max_tokens=200)
    simulator.reconfigure(tpm=400_000, rate_limit_rate=0.15, seed=7)  # seeded: the same draws every run
    created = submit(api, {"a.txt": lines_document(300)}, [NO_SECRET])
    done = wait_for_status(api, created["id"], timeout=180)
    view = api.get("/admin/parallelism").json()

    assert done["status"] == "SUCCEEDED"  # the 429s were retried
    assert simulator.stats.rate_limited > 0
    assert view["effective"]["upstream_limit_tokens"] == 400_000  # x-ratelimit-limit-tokens
    assert view["effective"]["factor"] < 1.0
    assert view["effective"]["tokens_per_window"] < 400_000 * 0.9
    # Usage counts refused requests as spent (OpenAI counts them); the simulator charges only
    # those its limit admitted, so the two differ by at most the refused calls' estimates.
    admitted = sum(c for _, c in simulator.stats.admitted)
    assert admitted <= view["usage"]["tokens_last_window"] <= admitted + simulator.stats.rate_limited * 2_000
    assert view["usage"]["calls_in_flight"] == 0


@pytest.mark.slow(12)
def test_lambdas_read_the_settings_from_the_governors_table_and_ssm_at_most_once(
    make_api: MakeApi, aws: Aws, settings: Settings, simulator: SimulatorServer
) -> None:
    from lambdas.common import live_config

    # Every Lambda re-reads the settings each half second: from the budget item's copy, not from SSM.
    api = make_api(part_max_tokens=100, config_cache_seconds=0.5)
    set_parallelism(aws, settings, 4)
    simulator.reconfigure(latency_seconds=0.1)
    reads: list[list[str]] = []
    client = live_config._ssm(settings.aws_endpoint_url, settings.aws_region)

    def count(params: dict[str, Any], **_: Any) -> None:
        if all(name.startswith(f"{settings.ssm_prefix}/") for name in params["Names"]):  # this test's, not a leftover's
            reads.append(params["Names"])

    client.meta.events.register("before-parameter-build.ssm.GetParameters", count)
    try:
        created = submit(api, {"a.txt": lines_document(330)}, [NO_SECRET])
        done = wait_for_status(api, created["id"], timeout=180)
    finally:
        client.meta.events.unregister("before-parameter-build.ssm.GetParameters", count)

    parts = done["progress"]["total"]
    assert done["status"] == "SUCCEEDED" and parts >= 40
    # Once: the first Lambda copies the parameters onto the budget item; every other read,
    # of every Lambda, is of that copy. Not per Lambda, not per cache period.
    assert len(reads) == 1
    assert api.get("/admin/parallelism").json()["effective"]["in_sync"] is True


# --- a validator killed mid-call --------------------------------------------------------------

_VICTIM = """
import json, sys
from lambdas.validate_part.handler import lambda_handler

class Context:
    def get_remaining_time_in_millis(self):
        return 600_000

lambda_handler(json.loads(sys.argv[1]), Context())
"""


@pytest.mark.slow(8)
def test_a_killed_validators_slot_and_unused_tokens_come_back_after_its_lease(
    make_api: MakeApi, aws: Aws, settings: Settings, simulator: SimulatorServer
) -> None:
    lease_seconds = 4.0
    api = make_api(part_max_tokens=100, lease_seconds=lease_seconds)
    set_parallelism(aws, settings, 1)
    sfn = aws.client("stepfunctions")
    machine = aws.machine_arn(settings.state_machine_name)
    # Executions of this test only hold: the validators below are run by hand.
    sfn.update_state_machine(
        stateMachineArn=machine,
        definition=json.dumps({"StartAt": "Hold", "States": {"Hold": {"Type": "Wait", "Seconds": 120, "End": True}}}),
    )
    created = submit(api, {"a.txt": lines_document(60)}, [NO_SECRET])
    vid, total = created["id"], created["progress"]["total"]
    parts = aws.client("dynamodb").query(
        TableName=settings.table("parts"),
        KeyConditionExpression="validation_id = :v AND begins_with(part_id, :file)",
        ExpressionAttributeValues={":v": {"S": vid}, ":file": {"S": "00000-"}},  # its parts (not its ~detail)
    )["Items"]
    batch = {
        "validation_id": vid,
        "run": 1,
        "parts": {"first": min(c["part_id"]["S"] for c in parts), "last": max(c["part_id"]["S"] for c in parts)},
    }
    environment = {
        **os.environ,
        **Provisioner(
            settings.model_copy(update={"lease_seconds": lease_seconds}), aws.endpoint_url
        ).function_environment(),
    }
    environment["PYTHONPATH"] = os.getcwd()

    simulator.reconfigure(
        latency_seconds=6
    )  # the victim is killed during its first call (the orphaned call ends later)
    victim = subprocess.Popen(
        [sys.executable, "-c", _VICTIM, json.dumps(batch)], env=environment, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: simulator.stats.in_flight == 1, timeout=60, what="the victim's call in flight")
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
    finally:
        if victim.poll() is None:
            victim.kill()
    killed_at = time.time()
    dead = aws.client("dynamodb").get_item(
        TableName=settings.table("governor"), Key={"pk": {"S": f"lease#{vid}"}, "sk": {"S": "00"}}
    )["Item"]
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

    assert summary["validated"] == total  # the slot came back: every part was done
    assert simulator.stats.requests - calls_before == total  # the killed part is done again, nothing twice
    first_new_call = sorted(simulator.stats.started)[-total]
    first_new_call_wall = time.time() - (time.monotonic() - first_new_call)
    # The slot stayed the dead holder's until its lease expired (taken before the kill).
    assert expires_at <= killed_at + lease_seconds
    assert first_new_call_wall >= expires_at - 0.05  # clocks read apart: 50 ms
    # Tokens: everything granted was sent or given back; the killed call counts as sent, at
    # the estimate it committed (its real charge was never reported back).
    sent = spent(aws.client("dynamodb"), settings.table("governor"))
    victim_charge = min(simulator.stats.admitted)[1]
    assert sent == sum(c for _, c in simulator.stats.admitted) - victim_charge + committed
    lease_items = aws.client("dynamodb").query(
        TableName=settings.table("governor"),
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": f"lease#{vid}"}},
    )["Items"]
    assert lease_items == []
    assert api.delete(f"/validations/{vid}").status_code in (200, 202)


class _Context:
    def get_remaining_time_in_millis(self) -> int:
        return 600_000

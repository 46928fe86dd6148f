"""Webhooks end to end: the API, the embedded AWS (both state machines, the Lambdas in-process)
and a receiver on loopback. Counts, not clocks: a test waits until every notify execution has
ended, then counts what the receiver got."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.settings import Settings
from core import webhooks
from tests.support.stack import Aws, HeldCalls, MakeApi, make_user, submit, wait_for, wait_for_status
from tests.webhooks.receiver import Receiver, receiver
from tests.webhooks.verify import verify

NO_SECRET = {"id": "no-secret", "text": 'The file must not contain "secret".'}
# Short Retry waits for the notify state machine (templated into its ASL, as the validation one's are).
QUICK_RETRIES = {
    "webhook_retry_interval_seconds": 1,
    "webhook_retry_max_attempts": 3,
    "webhook_retry_max_delay_seconds": 1,
}


def notify_executions(aws: Aws, settings: Settings, count: int) -> list[dict[str, Any]]:
    """The notify state machine's executions, once there are `count` and none runs any more."""
    machine = aws.machine_arn(settings.notify_state_machine_name)

    def ended() -> list[dict[str, Any]] | None:
        executions: list[dict[str, Any]] = aws.client("stepfunctions").list_executions(stateMachineArn=machine)[
            "executions"
        ]
        done = len(executions) == count and all(e["status"] != "RUNNING" for e in executions)
        return executions if done else None

    found: list[dict[str, Any]] = wait_for(ended, timeout=60, interval=0.1, what=f"{count} notify executions to end")
    return found


def _arn(aws: Aws, settings: Settings, validation: dict[str, Any]) -> str:
    """The execution of a validation's first run (named after the validation)."""
    machine = aws.machine_arn(settings.state_machine_name)
    return f"{machine.replace(':stateMachine:', ':execution:', 1)}:{validation['id']}"


def events_by_type(hook: Receiver, secret: str) -> dict[str, list[dict[str, Any]]]:
    """What the receiver got, each request verified as a receiver would (tests/webhooks/verify.py)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for request in hook.requests:
        assert verify(secret, request.headers, request.body), request.headers
        event = json.loads(request.body)
        found.setdefault(event["type"], []).append({**event, "webhook-id": request.headers["webhook-id"]})
    return found


@pytest.mark.slow(10)
def test_every_writer_of_an_end_delivers_exactly_one_signed_event(
    make_api: MakeApi, aws: Aws, settings: Settings, hold_calls: Any
) -> None:
    """Finalize (succeeded), the API's cancel (its execution stopped: no Finalize runs) and the
    reconciler (an execution stopped from outside) each start one notification."""
    # The stop settles once the held call answers; the reconciler runs when the test says (no timer).
    api = make_api(cancel_settle_seconds=0, reconcile_interval_seconds=0, **QUICK_RETRIES)
    user, headers = make_user(api)
    held: HeldCalls = hold_calls(1)  # the first validation's call answers; the others wait
    with receiver() as hook:
        registered = api.put("/me/webhook", json={"url": hook.url}, headers=headers)
        assert registered.status_code == 201, registered.text
        secret = registered.json()["secret"]
        shown = api.get("/me/webhook", headers=headers).json()
        assert shown["url"] == hook.url and "secret" not in shown

        done = submit(api, {"clean.csv": "id,note\n1,fine\n"}, [NO_SECRET], headers=headers)
        assert wait_for_status(api, done["id"])["status"] == "SUCCEEDED"
        stopped = submit(api, {"later.csv": "id,note\n1,fine\n"}, [NO_SECRET], headers=headers)
        wait_for(lambda: held.waiting == 1, what="the second validation's call in flight")
        assert api.delete(f"/validations/{stopped['id']}", headers=headers).status_code == 202
        lost = submit(api, {"lost.csv": "id,note\n1,fine\n"}, [NO_SECRET], headers=headers)
        wait_for(lambda: held.waiting == 2, what="the third validation's call in flight")
        sfn = aws.client("stepfunctions")
        sfn.stop_execution(executionArn=_arn(aws, settings, lost), error="Operator", cause="stopped outside the API")
        held.release()
        cancelled = wait_for_status(api, stopped["id"], ("CANCELLED",))
        wait_for(
            lambda: sfn.describe_execution(executionArn=_arn(aws, settings, lost))["status"] != "RUNNING",
            what="the stopped execution to end",
        )
        report = api.post("/admin/reconcile").json()  # its record still says RUNNING: the reconciler ends it

        executions = notify_executions(aws, settings, 3)
        events = events_by_type(hook, secret)

    assert report["notified"] == [lost["id"]] and report["ended"][0]["to"] == "FAILED"
    assert sorted(e["status"] for e in executions) == ["SUCCEEDED"] * 3
    assert hook.count() == 3
    (succeeded,) = events["validation.succeeded"]
    (stopped_event,) = events["validation.cancelled"]
    assert succeeded["data"]["id"] == done["id"] and succeeded["data"]["status"] == "SUCCEEDED"
    assert succeeded["data"]["progress"] == {"total": 1, "succeeded": 1, "failed": 0, "pending": 0}
    assert succeeded["data"]["usage"]["model_calls"] == 1
    assert succeeded["webhook-id"] == f"msg_{done['id']}_r1_succeeded"
    assert stopped_event["data"]["id"] == stopped["id"] and stopped_event["data"]["status"] == "CANCELLED"
    assert stopped_event["timestamp"] == cancelled["finished_at"]
    (failed,) = events["validation.failed"]
    assert failed["data"]["id"] == lost["id"] and failed["data"]["error"]["type"] == "execution_lost"
    deliveries = api.get("/me/webhook/deliveries", headers=headers).json()["items"]
    assert sorted((d["event_type"], d["attempt"], d["status_code"]) for d in deliveries) == [
        ("validation.cancelled", 1, 200),
        ("validation.failed", 1, 200),
        ("validation.succeeded", 1, 200),
    ]


@pytest.mark.slow(7)
def test_a_receiver_failing_twice_gets_three_attempts_of_one_event_then_a_resend_then_private_targets_are_refused(
    make_api: MakeApi, aws: Aws, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = make_api(**QUICK_RETRIES)
    user, headers = make_user(api)
    with receiver([500, 503]) as hook:
        secret = api.put("/me/webhook", json={"url": hook.url}, headers=headers).json()["secret"]
        done = submit(api, {"leaky.md": "# notes\nthe secret\n"}, [NO_SECRET], headers=headers)
        assert wait_for_status(api, done["id"])["status"] == "SUCCEEDED"
        (execution,) = notify_executions(aws, settings, 1)
        # Finalize run again (as its Retry would after dying past the status write): it finds the run
        # ended and starts the notification again under the same name, which Step Functions refuses.
        again = aws.client("lambda").invoke(
            FunctionName=f"{settings.name_prefix}-finalize",
            Payload=json.dumps({"validation_id": done["id"], "run": 1}).encode(),
        )
        assert json.loads(again["Payload"].read())["written"] is False and "FunctionError" not in again
        assert notify_executions(aws, settings, 1) == [execution]
        events = events_by_type(hook, secret)

    assert execution["status"] == "SUCCEEDED"
    assert hook.count() == 3
    attempts = events["validation.succeeded"]
    assert len({a["webhook-id"] for a in attempts}) == 1  # one event: the same id on every attempt
    assert len({r.headers["webhook-timestamp"] for r in hook.requests}) >= 2  # each attempt signed anew
    first = api.get("/me/webhook/deliveries", params={"limit": 2}, headers=headers).json()
    rest = api.get("/me/webhook/deliveries", params={"limit": 2, "cursor": first["next_cursor"]}, headers=headers)
    listed = first["items"] + rest.json()["items"]
    assert [(d["attempt"], d["status_code"], d["error"]) for d in listed] == [
        (3, 200, None),
        (2, 503, "HTTP 503"),
        (1, 500, "HTTP 500"),
    ]
    assert {d["event_id"] for d in listed} == {attempts[0]["webhook-id"]}
    assert rest.json()["next_cursor"] is None

    # Sent again by hand (a receiver down longer than the retries): the same event, the same id,
    # one more signed request; a second resend within the period is refused, as are a stranger's.
    monkeypatch.setattr(webhooks, "RESEND_EVERY_SECONDS", 10**9)  # one period for this test
    with receiver() as again_hook:
        new_secret = api.put("/me/webhook", json={"url": again_hook.url}, headers=headers).json()["secret"]
        resent = api.post(f"/validations/{done['id']}/notification", headers=headers)
        assert resent.status_code == 202, resent.text
        assert resent.json() == {"message_id": attempts[0]["webhook-id"], "event_type": "validation.succeeded"}
        notify_executions(aws, settings, 2)
        (request,) = again_hook.requests  # signed with the secret of now (a PUT replaced it)
        assert request.headers["webhook-id"] == attempts[0]["webhook-id"]
        assert verify(new_secret, request.headers, request.body)
        twice = api.post(f"/validations/{done['id']}/notification", headers=headers)
        assert twice.status_code == 409 and twice.json()["field"] == "message_id", twice.text
        _, stranger = make_user(api)
        assert api.post(f"/validations/{done['id']}/notification", headers=stranger).status_code == 404
    trail = api.get("/admin/audit", params={"limit": 100}).json()["items"]
    assert [e["target"] for e in trail if e["action"] == "validation.resend_notification"] == [done["id"]]

    # Where private targets are not allowed (aws mode's default), a loopback URL is refused at
    # registration, naming the field; the webhook registered before stays as it was.
    api.app.state.settings = api.app.state.settings.model_copy(update={"webhook_allow_private": False})
    refused = api.put("/me/webhook", json={"url": "http://localhost:9/x"}, headers=headers)
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["field"] == "url" and "loopback" in refused.json()["detail"]
    assert api.get("/me/webhook", headers=headers).json()["url"] == again_hook.url
    assert api.delete("/me/webhook", headers=headers).status_code == 204
    assert api.get("/me/webhook", headers=headers).status_code == 404


def test_budget_threshold_is_sent_once_per_user_and_period(make_api: MakeApi, aws: Aws, settings: Settings) -> None:
    """Three validations, each estimated at E and reserved within a budget of 3.3 E, cost more than
    their estimates (the prior expects no completion tokens): the settlement that takes the
    month's spend past 80% sends `budget.threshold`; the one after it sends nothing more."""
    api = make_api(completion_ratio_prior=(0.0, 0.0), **QUICK_RETRIES)
    quota = {"capacity_tokens": 1_000_000, "refill_tokens_per_minute": 1_000_000, "max_running": 4}
    user, headers = make_user(api, quota={**quota, "max_spend_usd": 1000})
    docs = [{f"f{n}.txt": f"line one of {n}\nline two\nsecret {n}\n"} for n in range(3)]

    def body(doc: dict[str, str]) -> dict[str, Any]:
        return {"documents": [{"name": k, "content": v} for k, v in doc.items()], "rules": [NO_SECRET]}

    estimate = api.post("/validations", params={"dry_run": "true"}, json=body(docs[0]), headers=headers).json()
    each = estimate["would"]["budget"]["estimate_usd"]
    budget = round(3.3 * each, 6)
    patched = api.patch(f"/admin/users/{user}", json={"quota": {**quota, "max_spend_usd": budget}})
    assert patched.status_code == 200, patched.text
    with receiver() as hook:
        secret = api.put("/me/webhook", json={"url": hook.url}, headers=headers).json()["secret"]
        created = [api.post("/validations", json=body(doc), headers=headers) for doc in docs]
        assert [c.status_code for c in created] == [202] * 3, created[-1].text
        ended = [wait_for_status(api, c.json()["id"]) for c in created]
        notify_executions(aws, settings, 4)  # three ends and one threshold
        events = events_by_type(hook, secret)

    costs = [v["usage"]["cost_usd"] for v in ended]
    assert all(cost > each for cost in costs)  # completions the estimate did not expect
    assert sum(costs[:1]) < 0.8 * budget < sum(costs)
    (alert,) = events["budget.threshold"]
    assert alert["data"]["user_id"] == user and alert["data"]["max_spend_usd"] == budget
    assert alert["data"]["spent_usd"] >= 0.8 * budget and alert["data"]["period"].startswith("month#")
    assert len(events["validation.succeeded"]) == 3
    usage = api.get("/me/usage", headers=headers).json()
    assert usage["budget"]["threshold_alerted"] is True

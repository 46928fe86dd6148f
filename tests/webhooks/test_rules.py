"""core/webhooks: signatures (checked against the spec's reference vector and an independent
verifier), the event, the retry schedule, and which targets may be called."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from app.settings import PROJECT_ROOT, Settings
from core import webhooks
from local.aws.provision import load_resources
from tests.support.stack import settings_of
from tests.webhooks.verify import verify

# The reference vector of the Standard Webhooks test suites (svix-webhooks' golden vector).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signing_matches_the_standard_webhooks_reference_vector() -> None:
    assert webhooks.sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_an_independent_verifier_accepts_our_headers_and_refuses_tampering() -> None:
    secret, now = webhooks.new_secret(), int(time.time())
    body = webhooks.body_of({"type": "validation.succeeded", "data": {"id": "v1"}})
    headers = webhooks.headers(secret, "msg_v1_r1_succeeded", now, body)

    assert verify(secret, headers, body)
    assert not verify(secret, headers, body + b" ")  # another body
    assert not verify(webhooks.new_secret(), headers, body)  # another secret
    assert not verify(secret, {**headers, "webhook-id": "msg_other"}, body)  # the id is signed
    assert not verify(secret, {**headers, "webhook-timestamp": str(now + 1)}, body)  # so is the time
    stale = webhooks.headers(secret, "msg_v1_r1_succeeded", now - 600, body)
    assert not verify(secret, stale, body)  # outside the 5-minute tolerance


def test_secrets_are_whsec_and_32_random_bytes() -> None:
    first, second = webhooks.new_secret(), webhooks.new_secret()
    assert first.startswith("whsec_") and first != second
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32
    assert webhooks.secret_key(first) == base64.b64decode(first[6:])
    with pytest.raises(ValueError):
        webhooks.secret_key("sk_not_a_webhook_secret")


RECORD = {
    "id": "0123456789abcdef0123456789abcdef",
    "owner": "alice",
    "status": "CANCELLED",
    "run": 2,
    "finished_at": "2026-01-02T03:04:05.678Z",
    "error": None,
    "total_parts": 5,
    "succeeded": 3,
    "failed": 1,
    "prompt_tokens": 100,
    "completion_tokens": 20,
    "model_calls": 4,
    "attempts": 5,
}


def test_a_terminal_run_makes_one_event_with_a_stable_id_and_others_none() -> None:
    payload = webhooks.notification(RECORD, run=2)

    assert payload is not None
    assert payload["message_id"] == "msg_0123456789abcdef0123456789abcdef_r2_cancelled"
    assert payload["event"] == {
        "type": "validation.cancelled",
        "timestamp": "2026-01-02T03:04:05.678Z",
        "data": {
            "id": RECORD["id"],
            "status": "CANCELLED",
            "run": 2,
            "progress": {"total": 5, "succeeded": 3, "failed": 1, "pending": 1},
            "usage": {
                "prompt_tokens": 100,
                "completion_tokens": 20,
                "model_calls": 4,
                "reused_parts": 0,
                "attempts": 5,
                "relocated": 0,
                "ungrounded": 0,
                "reasked": 0,
                "charged_tokens": None,
            },
            "error": None,
        },
    }
    assert webhooks.notification(RECORD, run=1) is None  # the record is at another run
    assert webhooks.notification({**RECORD, "status": "CANCELLING"}) is None  # not ended
    assert webhooks.body_of(payload["event"]) == webhooks.body_of(json.loads(webhooks.body_of(payload["event"])))


def test_message_ids_fit_an_execution_name_and_carry_no_dot() -> None:
    long_id = "x" * 64
    name = webhooks.message_id(long_id, 12, "SUCCEEDED")
    assert len(name) <= 80 and "." not in name
    assert name != webhooks.message_id(long_id, 13, "SUCCEEDED")
    assert webhooks.message_id("a.b", 1, "FAILED").count(".") == 0


def test_a_resend_has_one_execution_name_per_period_that_fits_and_differs_from_the_first_delivery() -> None:
    every = webhooks.RESEND_EVERY_SECONDS
    for message in (webhooks.message_id("v1", 1, "FAILED"), webhooks.message_id("x" * 64, 12, "SUCCEEDED")):
        start = 1_800_000_000 // every * every
        same = {webhooks.resend_name(message, start + s) for s in (0, every / 2, every - 0.001)}
        (name,) = same
        assert len(name) <= 80 and "." not in name and name != message
        assert webhooks.resend_name(message, start + every) != name


def test_the_default_retry_schedule_spans_about_a_day() -> None:
    defaults = settings_of()
    delays = webhooks.retry_delays(
        defaults.webhook_retry_interval_seconds,
        defaults.webhook_retry_max_attempts,
        defaults.webhook_retry_max_delay_seconds,
    )
    hours = sum(delays) / 3600
    assert 24 <= hours <= 26, hours
    assert delays == sorted(delays)  # backoff: never a shorter wait after a longer one


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.9", "private"),
        ("172.16.5.5", "private"),
        ("169.254.169.254", "link-local"),  # the instance metadata service
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("100.64.1.1", "not a public"),  # carrier-grade NAT
        ("240.0.0.1", "reserved"),
        ("93.184.215.14", None),
        ("2606:4700::1111", None),
    ],
)
def test_addresses_that_are_not_public_are_refused(address: str, refused: str | None) -> None:
    reason = webhooks.address_refusal(address)
    assert (reason is None) if refused is None else (reason is not None and refused in reason)


def test_a_name_is_refused_when_any_of_its_addresses_is_not_public_unless_allowed() -> None:
    assert webhooks.addresses_refusal("hooks.example", ["93.184.215.14"], allow_private=False) is None
    mixed = webhooks.addresses_refusal("hooks.example", ["93.184.215.14", "10.0.0.1"], allow_private=False)
    assert mixed is not None and "10.0.0.1" in mixed
    assert webhooks.addresses_refusal("hooks.example", ["10.0.0.1"], allow_private=True) is None
    assert webhooks.addresses_refusal("nowhere.example", [], allow_private=True) is not None


@pytest.mark.parametrize(
    ("url", "allow_http", "problem"),
    [
        ("https://hooks.example/x", False, None),
        ("http://hooks.example/x", True, None),
        ("http://hooks.example/x", False, "https://"),
        ("ftp://hooks.example/x", True, "https:// or http://"),
        ("https:///nohost", False, "no host"),
        ("https://user:pw@hooks.example/", False, "credentials"),
        ("https://hooks.example:99999/", False, "cannot be parsed"),
        ("https://hooks.example/" + "a" * 2100, False, "longer than"),
    ],
)
def test_target_urls(url: str, allow_http: bool, problem: str | None) -> None:
    if problem is None:
        target = webhooks.parse_target(url, allow_http=allow_http)
        assert target.host == "hooks.example" and target.port in (80, 443)
    else:
        with pytest.raises(webhooks.TargetRefused, match=problem):
            webhooks.parse_target(url, allow_http=allow_http)


def test_private_targets_and_plain_http_are_allowed_by_default_in_local_mode_only() -> None:
    local, aws = (
        settings_of(),
        settings_of(mode="aws", state_machine_arn="arn:aws:states:r:1:stateMachine:p-validation"),
    )
    assert local.webhooks_private_allowed and local.webhooks_http_allowed
    assert not aws.webhooks_private_allowed and not aws.webhooks_http_allowed
    assert aws.notify_machine_arn == "arn:aws:states:r:1:stateMachine:validation-notify"
    assert Settings.model_fields["webhook_allow_private"].default is None


def test_the_documented_recipe_verifies_a_signed_delivery() -> None:
    """The verification snippet of the webhooks guide (docs/guide/webhooks.md) works as printed."""
    page = (PROJECT_ROOT / "docs" / "guide" / "webhooks.md").read_text()
    recipe = page.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(recipe, namespace)  # noqa: S102 - our own docs' code
    secret, body = webhooks.new_secret(), webhooks.body_of({"type": "validation.failed", "data": {}})
    headers = webhooks.headers(secret, "msg_x_r1_failed", int(time.time()), body)

    assert namespace["verify"](secret, headers, body) is True
    assert namespace["verify"](secret, headers, body[:-1]) is False


def test_only_the_notify_lambda_may_read_webhook_secrets() -> None:
    functions = load_resources()["functions"]
    readers = {name for name, f in functions.items() if "webhook_secrets" in f["uses"]["tables"]}
    assert readers == {"notify"}
    assert functions["notify"]["uses"]["tables"]["webhook_secrets"] == "r"
    starters = {name for name, f in functions.items() if f["uses"].get("notify", "none") != "none"}
    # The writers of terminal statuses on the Lambda side (admit: a disabled owner's queued run).
    assert starters == {"admit", "finalize", "reconcile"}

"""lambdas/notify/delivery: one attempt against a live receiver on loopback — signed, sent to the
address that was checked, recorded, and raising what the state machine retries or not."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from core import webhooks
from lambdas.common.config import LambdaConfig
from lambdas.common.errors import DeliveryFailed, TargetRefused, WebhookGone
from lambdas.common.webhooks import Endpoint
from lambdas.notify.delivery import deliver, http_client
from tests.servers import free_port
from tests.webhooks.receiver import receiver
from tests.webhooks.verify import verify

SECRET = webhooks.new_secret()
NOTIFICATION: dict[str, Any] = {
    "owner": "alice",
    "validation_id": "v1",
    "run": 1,
    "message_id": "msg_v1_r1_succeeded",
    "event": {"type": "validation.succeeded", "timestamp": "2026-01-01T00:00:00.000Z", "data": {"id": "v1"}},
}


class Tables:
    """The owner's endpoint and the attempts recorded (what lambdas/common/webhooks.WebhookTables
    reads from and writes to DynamoDB)."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.recorded: list[dict[str, Any]] = []

    def endpoint(self, owner: str) -> Endpoint | None:
        return Endpoint(self.url, SECRET) if self.url and owner == "alice" else None

    def record(self, owner: str, attempt: dict[str, Any]) -> None:
        self.recorded.append({**attempt, "owner": owner})


def config(**fields: Any) -> LambdaConfig:
    values = {"webhook_allow_private": True, "webhook_allow_http": True, "webhook_timeout_seconds": 5.0, **fields}
    return LambdaConfig(validations_table="v", parts_table="c", uploads_bucket="b", **values)


def attempt(tables: Tables, settings: LambdaConfig, resolver: Any = None, number: int = 1) -> dict[str, Any]:
    with http_client(settings) as client:
        if resolver is None:
            return deliver(NOTIFICATION, number, tables, client, settings)
        return deliver(NOTIFICATION, number, tables, client, settings, resolver=resolver)


def test_a_2xx_delivers_a_signed_event_to_the_checked_address_under_its_own_host_name() -> None:
    with receiver() as hook:
        port = hook.url.split(":")[2].split("/")[0]
        # A name no DNS knows: the request can reach the receiver only through the address checked.
        tables = Tables(f"http://hooks.invalid:{port}/hooks/validation")
        resolved: list[str] = []

        def resolve(host: str, port: int) -> list[str]:
            resolved.append(host)
            return ["127.0.0.1"]

        answer = attempt(tables, config(), resolver=resolve)

    assert answer == {"delivered": True, "status_code": 200, "attempt": 1}
    assert resolved == ["hooks.invalid"]
    (request,) = hook.requests
    assert request.headers["host"] == f"hooks.invalid:{port}"
    assert request.path == "/hooks/validation"
    assert verify(SECRET, request.headers, request.body)
    assert request.headers["webhook-id"] == "msg_v1_r1_succeeded"
    assert request.body == webhooks.body_of(NOTIFICATION["event"])
    (recorded,) = tables.recorded
    assert recorded["status_code"] == 200 and recorded["error"] is None and recorded["attempt"] == 1
    assert recorded["event_id"] == "msg_v1_r1_succeeded" and recorded["event_type"] == "validation.succeeded"


@pytest.mark.parametrize(("status", "raised"), [(500, DeliveryFailed), (302, DeliveryFailed), (410, WebhookGone)])
def test_anything_but_2xx_is_recorded_and_raised(status: int, raised: type[Exception]) -> None:
    with receiver([status]) as hook:
        tables = Tables(hook.url)
        with pytest.raises(raised):
            attempt(tables, config(), number=3)

    assert hook.count() == 1  # a redirect is not followed
    (recorded,) = tables.recorded
    assert recorded["status_code"] == status and recorded["error"] == f"HTTP {status}" and recorded["attempt"] == 3


def test_a_connection_error_is_recorded_without_a_status_and_retried() -> None:
    tables = Tables(f"http://127.0.0.1:{free_port()}/nobody-listens")
    with pytest.raises(DeliveryFailed):
        attempt(tables, config())
    (recorded,) = tables.recorded
    assert recorded["status_code"] is None and "ConnectError" in recorded["error"]


def test_a_private_address_is_refused_at_delivery_when_not_allowed_and_nothing_is_sent() -> None:
    with receiver() as hook:
        tables = Tables(hook.url.replace("127.0.0.1", "rebound.invalid"))
        # The name resolved to a public address at registration; now it resolves to loopback.
        with pytest.raises(TargetRefused, match="loopback"):
            attempt(tables, config(webhook_allow_private=False), resolver=lambda host, port: ["127.0.0.1"])

    assert hook.count() == 0
    assert tables.recorded[0]["error"].startswith("refused: rebound.invalid resolves to 127.0.0.1")


def test_plain_http_is_refused_where_only_https_is_allowed() -> None:
    tables = Tables("http://hooks.example/x")
    with pytest.raises(TargetRefused, match="https://"):
        attempt(tables, config(webhook_allow_http=False))
    assert len(tables.recorded) == 1


def test_an_owner_without_a_webhook_ends_the_notification_quietly() -> None:
    tables = Tables(None)
    assert attempt(tables, config()) == {"delivered": False, "reason": "no webhook"}
    assert tables.recorded == []


def test_https_keeps_the_name_for_tls_while_connecting_to_the_checked_address() -> None:
    sent: list[httpx.Request] = []

    def transport(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(204)

    settings = config(webhook_allow_private=False, webhook_allow_http=False)
    tables = Tables("https://hooks.example.com/in")
    with httpx.Client(transport=httpx.MockTransport(transport)) as client:
        deliver(NOTIFICATION, 1, tables, client, settings, resolver=lambda host, port: ["93.184.215.14"])

    (request,) = sent
    assert request.url.host == "93.184.215.14" and request.url.scheme == "https"
    assert request.headers["host"] == "hooks.example.com"
    assert request.extensions["sni_hostname"] == "hooks.example.com"  # the certificate is checked for the name

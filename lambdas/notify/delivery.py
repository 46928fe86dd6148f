"""One delivery attempt of a webhook event (the `Deliver` state of the notify state machine).

The owner's current URL and secret are read at each attempt (a `PUT /me/webhook` meanwhile
redirects the retries; a `DELETE` ends them). The URL is checked again here, not only when it
was registered: its name is resolved once, every address it resolves to must be allowed
(core/webhooks.addresses_refusal), and the request goes to the address that was checked,
with the original `Host` header and TLS server name (httpx's `sni_hostname` extension), so a
name that resolves elsewhere a moment later (DNS rebinding) cannot redirect it. Redirects are
not followed and environment proxies are ignored.

A 2xx answer ends the notification. Anything else raises `DeliveryFailed`, which the state
machine's Retry retries with backoff; `TargetRefused` (the URL may not be called) and
`WebhookGone` (410: the receiver asks us to stop) are not retried. Every attempt is recorded.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import httpx

from core import webhooks
from core.clock import now_iso
from lambdas.common.config import LambdaConfig
from lambdas.common.errors import DeliveryFailed, TargetRefused, WebhookGone
from lambdas.common.webhooks import Endpoint

log = logging.getLogger(__name__)

Resolve = Callable[[str, int], list[str]]


class Tables(Protocol):
    """What a delivery reads and writes (lambdas/common/webhooks.WebhookTables)."""

    def endpoint(self, owner: str) -> Endpoint | None: ...

    def record(self, owner: str, attempt: dict[str, Any]) -> None: ...


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (an IP literal resolves to itself); [] when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):  # UnicodeError: a label IDNA cannot encode
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def http_client(config: LambdaConfig) -> httpx.Client:
    """`webhook_timeout_seconds` bounds each phase (connect, send, first byte of the answer); the
    function's timeout (resources.json: 60 s) stays above the three together, so a slow receiver's
    attempt is still recorded."""
    return httpx.Client(
        timeout=config.webhook_timeout_seconds,
        follow_redirects=False,  # a 3xx is a failed attempt (Standard Webhooks): the owner fixes the URL
        trust_env=False,  # no HTTP(S)_PROXY: the request goes to the address that was checked
        headers={"user-agent": "validation-service-webhooks/1"},
    )


def deliver(
    notification: Mapping[str, Any],
    attempt: int,
    tables: Tables,
    client: httpx.Client,
    config: LambdaConfig,
    resolver: Resolve = resolve,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """Send the event once; the attempt's record, or raise (see the module's docstring)."""
    owner = str(notification["owner"])
    event = notification["event"]
    endpoint = tables.endpoint(owner)
    if endpoint is None:
        log.info("notification %s: %s has no webhook any more", notification["message_id"], owner)
        return {"delivered": False, "reason": "no webhook"}
    record: dict[str, Any] = {
        "attempted_at": now_iso(),
        "event_id": notification["message_id"],
        "event_type": event["type"],
        "validation_id": notification["validation_id"],
        "attempt": attempt,
        "url": endpoint.url,
        "status_code": None,
        "error": None,
        "duration_ms": 0,
    }

    def done(error: str | None = None, status_code: int | None = None, started: float | None = None) -> None:
        record.update(error=error, status_code=status_code)
        if started is not None:
            record["duration_ms"] = round((time.monotonic() - started) * 1000)
        tables.record(owner, record)

    try:
        target = webhooks.parse_target(endpoint.url, allow_http=config.webhook_allow_http)
    except webhooks.TargetRefused as exc:
        done(f"refused: {exc}")
        raise TargetRefused(str(exc)) from exc
    addresses = resolver(target.host, target.port)
    if not addresses:
        done(f"{target.host} does not resolve")
        raise DeliveryFailed(f"{target.host} does not resolve")
    refusal = webhooks.addresses_refusal(target.host, addresses, allow_private=config.webhook_allow_private)
    if refusal is not None:
        done(f"refused: {refusal}")
        raise TargetRefused(refusal)

    url = httpx.URL(endpoint.url)
    body = webhooks.body_of(event)
    timestamp = int(clock())
    request = client.build_request(
        "POST",
        url.copy_with(host=addresses[0]),
        content=body,
        headers={
            **webhooks.headers(endpoint.secret, str(notification["message_id"]), timestamp, body),
            "host": url.netloc.decode("ascii"),
        },
        extensions={"sni_hostname": target.host} if target.scheme == "https" else {},
    )
    started = time.monotonic()
    try:
        answer = client.send(request, stream=True)  # the body is never read: only the status counts
        answer.close()
    except httpx.HTTPError as exc:
        reason = f"{type(exc).__name__}: {exc}"[:500]
        done(reason, started=started)
        raise DeliveryFailed(reason) from exc
    done(None if answer.is_success else f"HTTP {answer.status_code}", answer.status_code, started)
    if answer.status_code == 410:
        raise WebhookGone(f"{endpoint.url} answered 410 Gone")
    if not answer.is_success:
        raise DeliveryFailed(f"{endpoint.url} answered HTTP {answer.status_code}")
    return {"delivered": True, "status_code": answer.status_code, "attempt": attempt}

"""Webhooks, the rules both sides apply: the event a terminal validation sends, its
Standard Webhooks signature, and which targets may be called (SSRF).

Standard Webhooks 1.0 (https://www.standardwebhooks.com, spec/standard-webhooks.md):
headers `webhook-id` (the same for every retry of one event: receivers dedupe on it),
`webhook-timestamp` (Unix seconds of the attempt) and `webhook-signature`, a space-separated
list of `v1,<base64 HMAC-SHA256>` entries over `{webhook-id}.{webhook-timestamp}.{body}`,
keyed with the base64-decoded part of the `whsec_` secret (24 to 64 random bytes).

Sans-IO: name resolution and HTTP belong to the callers (the API at registration, the
notify Lambda at delivery); this module only judges the addresses they resolved.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from core.records import ValidationStatus

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # the spec asks for 24 to 64 random bytes
MAX_URL_CHARS = 2048

EVENT_TYPES: dict[str, str] = {
    ValidationStatus.SUCCEEDED: "validation.succeeded",
    ValidationStatus.FAILED: "validation.failed",
    ValidationStatus.CANCELLED: "validation.cancelled",
}

# What an event is built from: the stored validation's attributes (a ProjectionExpression for
# the Lambdas, the typed record's fields for the API).
RECORD_FIELDS = (
    "id",
    "owner",
    "status",
    "run",
    "finished_at",
    "error",
    "total_parts",
    "succeeded",
    "failed",
    "prompt_tokens",
    "completion_tokens",
    "model_calls",
    "reused_parts",
    "attempts",
    "relocated",
    "ungrounded",
    "reasked",
    "charged_tokens",
)

# Step Functions execution names: at most 80 characters of letters, digits, `-` and `_`.
_MAX_EXECUTION_NAME = 80


# --- secrets and signatures ---------------------------------------------------------------
def new_secret() -> str:
    """`whsec_` + base64 of 32 random bytes: shown to the owner once, kept for signing."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key: the base64-decoded part after `whsec_`."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    try:
        return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error as exc:
        raise ValueError("a webhook secret is whsec_ and base64") from exc


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value (one `v1` entry)."""
    signed = message_id.encode() + b"." + str(timestamp).encode() + b"." + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }


# --- the event ---------------------------------------------------------------------------
def message_id(validation_id: str, run: int, status: str) -> str:
    """One id per (validation, run, terminal status): every retry of the event carries it, and it
    names the notify execution, so a second start of the same notification is refused by Step
    Functions (ExecutionAlreadyExists). No `.` (it delimits the signed content)."""
    name = f"msg_{validation_id}_r{run}_{status.lower()}"
    if len(name) > _MAX_EXECUTION_NAME or not all(c.isalnum() or c in "-_" for c in name):
        digest = hashlib.sha256(f"{validation_id}\0{run}\0{status}".encode()).hexdigest()[:40]
        name = f"msg_{digest}_r{run}_{status.lower()}"[:_MAX_EXECUTION_NAME]
    return name


RESEND_EVERY_SECONDS = 60  # an event may be sent again by hand at most once per such period


def resend_name(message_id: str, now: float) -> str:
    """The notify execution of a resend of `message_id` requested at `now`: one name per minute,
    so Step Functions refuses a second resend within it (ExecutionAlreadyExists)."""
    period = int(now // RESEND_EVERY_SECONDS)
    name = f"{message_id}-resend-{period}"
    if len(name) > _MAX_EXECUTION_NAME:
        name = f"resend_{hashlib.sha256(message_id.encode()).hexdigest()[:40]}-{period}"
    return name


def event_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """The event of a validation whose current run ended (`record` has RECORD_FIELDS)."""
    status = str(record["status"])
    total, succeeded, failed = (int(record.get(k) or 0) for k in ("total_parts", "succeeded", "failed"))
    data: dict[str, Any] = {
        "id": record["id"],
        "status": status,
        "run": int(record["run"]),
        "progress": {
            "total": total,
            "succeeded": succeeded,
            "failed": failed,
            "pending": max(0, total - succeeded - failed),
        },
        "usage": {
            "prompt_tokens": int(record.get("prompt_tokens") or 0),
            "completion_tokens": int(record.get("completion_tokens") or 0),
            "model_calls": int(record.get("model_calls") or 0),
            "reused_parts": int(record.get("reused_parts") or 0),
            "attempts": int(record.get("attempts") or 0),
            "relocated": int(record.get("relocated") or 0),
            "ungrounded": int(record.get("ungrounded") or 0),
            "reasked": int(record.get("reasked") or 0),
            "charged_tokens": None if record.get("charged_tokens") is None else int(record["charged_tokens"]),
        },
        "error": record.get("error"),
    }
    return {"type": EVENT_TYPES[status], "timestamp": record.get("finished_at"), "data": data}


def notification(record: Mapping[str, Any], run: int | None = None) -> dict[str, Any] | None:
    """The notify execution's input for a validation whose run `run` (default: its current run)
    ended; None while that run has no terminal status (or the validation moved to another run)."""
    if record.get("status") not in EVENT_TYPES or (run is not None and int(record["run"]) != run):
        return None
    event = event_of(record)
    return {
        "owner": record["owner"],
        "validation_id": record["id"],
        "run": int(record["run"]),
        "message_id": message_id(str(record["id"]), int(record["run"]), str(record["status"])),
        "event": event,
    }


BUDGET_THRESHOLD = "budget.threshold"


def budget_message_id(owner: str, period_key: str) -> str:
    """One id per user and budget period: the threshold's event is sent once (the notify
    execution is named after it, so a second start is refused)."""
    digest = hashlib.sha256(owner.encode()).hexdigest()[:32]
    return f"msg_budget_{digest}_{period_key.replace('#', '_')}"


def budget_notification(
    owner: str,
    validation_id: str,
    period_key: str,
    spend_period: str,
    max_spend_usd: float,
    spent_usd: float,
    threshold: float,
    resets_at: str,
    timestamp: str,
) -> dict[str, Any]:
    """The notify execution's input when a user's spend first passes `threshold` of their budget
    in a period (`validation_id`: the validation whose settlement passed it)."""
    event = {
        "type": BUDGET_THRESHOLD,
        "timestamp": timestamp,
        "data": {
            "user_id": owner,
            "period": period_key,
            "spend_period": spend_period,
            "max_spend_usd": max_spend_usd,
            "spent_usd": spent_usd,
            "threshold": threshold,
            "resets_at": resets_at,
            "validation_id": validation_id,
        },
    }
    message = budget_message_id(owner, period_key)
    return {"owner": owner, "validation_id": validation_id, "run": 0, "message_id": message, "event": event}


def body_of(event: Mapping[str, Any]) -> bytes:
    """The bytes sent and signed: compact JSON, the same on every attempt."""
    return json.dumps(event, separators=(",", ":"), sort_keys=True).encode()


# --- retries -------------------------------------------------------------------------------
def retry_delays(interval: float, attempts: int, max_delay: float, backoff: float = 2.0) -> list[float]:
    """The waits of an ASL Retry with JitterStrategy NONE: interval × backoff^n, capped at max_delay."""
    return [min(interval * backoff**n, max_delay) for n in range(attempts)]


# --- targets (SSRF) ------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # without brackets for IPv6
    port: int


class TargetRefused(ValueError):
    """The URL may not be called: the message says why (shown to the owner)."""


def parse_target(url: str, *, allow_http: bool) -> Target:
    """The URL's scheme, host and port, or TargetRefused (https only unless `allow_http`)."""
    if len(url) > MAX_URL_CHARS:
        raise TargetRefused(f"the URL is longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"the URL cannot be parsed: {exc}") from exc
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise TargetRefused("the URL must start with " + " or ".join(f"{s}://" for s in schemes))
    if not parts.hostname:
        raise TargetRefused("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("the URL may not carry credentials (user:password@); put a token in the path instead")
    if parts.fragment:
        raise TargetRefused("the URL may not have a #fragment")
    return Target(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80))


def address_refusal(address: str) -> str | None:
    """Why an IP address may not be called (loopback, private, link-local, multicast, reserved,
    unspecified, shared or otherwise not globally routable), or None."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    for kind in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):  # specific first
        if getattr(ip, f"is_{kind}"):
            return f"{ip} is a {kind.replace('_', '-')} address"
    if not ip.is_global:  # e.g. 100.64.0.0/10 (carrier-grade NAT), 192.0.0.0/24
        return f"{ip} is not a public address"
    return None


def addresses_refusal(host: str, addresses: Iterable[str], *, allow_private: bool) -> str | None:
    """Why `host`, resolved to `addresses`, may not be called, or None. Every address must be
    allowed: a name that resolves to one public and one private address is refused."""
    found = list(addresses)
    if not found:
        return f"{host} does not resolve to any address"
    if allow_private:
        return None
    for address in found:
        reason = address_refusal(address)
        if reason is not None:
            return f"{host} resolves to {reason}; webhooks go to public addresses only"
    return None

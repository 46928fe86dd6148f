"""A Standard Webhooks verifier written from the spec (spec/standard-webhooks.md), not from
core/webhooks.py: what a receiver runs. The README's recipe is this function."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping


def verify(secret: str, headers: Mapping[str, str], body: bytes, tolerance: int = 300) -> bool:
    """True when one `v1` signature matches and the timestamp is within `tolerance` seconds."""
    msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance:
        return False  # a replay, or a clock far off
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        version == "v1" and hmac.compare_digest(signature, expected)
        for version, _, signature in (entry.partition(",") for entry in headers["webhook-signature"].split())
    )

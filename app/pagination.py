"""Opaque cursors: base64url of a small JSON value."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from app.errors import BadRequest


def encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("The cursor is not valid; use `next_cursor` from a previous page.", field="cursor") from exc

"""Opaque cursors: base64url of a small JSON value, checked against the shape its endpoint issues.

A cursor comes back from the client, so it is input like any other: a decoded value that is
not exactly what the endpoint hands out (its keys, their types, the caller as owner) is a
400 naming `cursor`, before anything of it reaches DynamoDB or Step Functions.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from app.errors import BadRequest


def encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode().rstrip("=")


def invalid_cursor() -> BadRequest:
    return BadRequest("The cursor is not valid; use `next_cursor` from a previous page.", field="cursor")


def decode_cursor(cursor: str, valid: Callable[[Any], bool] | None = None) -> Any:
    """The value `encode_cursor` made; 400 when it does not decode or `valid(value)` is false."""
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise invalid_cursor() from exc
    if valid is not None and not valid(value):
        raise invalid_cursor()
    return value


def is_key(value: Any, names: set[str]) -> bool:
    """A DynamoDB key as the endpoint issued it: exactly these attributes, each a short string."""
    return (
        isinstance(value, dict)
        and set(value) == names
        and all(isinstance(v, str) and 0 < len(v) <= 256 for v in value.values())
    )

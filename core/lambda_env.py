"""The environment a Lambda handler sees.

On AWS it is `os.environ`. In the embedded AWS many functions run in one process,
each with its own environment variables, so the Lambda route sets them for the
invocation's thread with `use()`; `current()` overlays them on `os.environ`.
"""

from __future__ import annotations

import os
from contextvars import ContextVar, Token

# The default is never mutated: use() sets a new dict per invocation.
_overlay: ContextVar[dict[str, str]] = ContextVar("lambda_environment", default={})  # noqa: B039


def use(environment: dict[str, str]) -> Token[dict[str, str]]:
    return _overlay.set(dict(environment))


def reset(token: Token[dict[str, str]]) -> None:
    _overlay.reset(token)


def current() -> dict[str, str]:
    return {**os.environ, **_overlay.get()}

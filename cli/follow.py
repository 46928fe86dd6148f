"""Follow a validation's server-sent events to its `end`, resuming after a lost connection.

The server numbers events from a per-validation sequence stored in DynamoDB, so reconnecting
with `Last-Event-ID: <last id seen>` continues without a gap or a repeat (across API restarts
too). The reconnect delay is the stream's `retry:` field (the server sends 2000 ms).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import SSEError

from cli.api import Api, ApiError
from cli.outcome import CliError

DEFAULT_RETRY_SECONDS = 2.0
# Connections in a row that delivered no event before the follower gives up (exit 3).
MAX_FRUITLESS_CONNECTIONS = 10


@dataclass(frozen=True)
class Event:
    kind: str  # status, progress, result, end
    id: str | None
    data: dict[str, Any]


Handler = Callable[[Event], None]
Notice = Callable[[str], None]


def follow(
    api: Api,
    validation_id: str,
    handle: Handler,
    notice: Notice,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Feed every event to `handle` until `end`; the final status. `notice` hears about reconnects."""
    last_id: str | None = None
    delay = DEFAULT_RETRY_SECONDS
    fruitless = 0
    while True:
        received = 0
        reason = "the server closed the stream"
        try:
            with api.events(validation_id, last_id) as source:
                for message in source.iter_sse():
                    if message.retry is not None:
                        delay = message.retry / 1000
                    if message.id:
                        last_id = message.id
                    received += 1
                    event = Event(message.event, message.id or None, _data(message.data))
                    handle(event)
                    if event.kind == "end":
                        return str(event.data.get("status"))
        except httpx.TransportError as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except ApiError as exc:
            if exc.status < 500:  # refused (auth, unknown id): resuming will not help
                raise
            reason = exc.message  # a restarting API behind a load balancer answers 502/503 for a moment
        except SSEError as exc:
            raise CliError(f"{api.base_url} did not answer with an event stream: {exc}.") from exc
        fruitless = 0 if received else fruitless + 1
        if fruitless >= MAX_FRUITLESS_CONNECTIONS:
            raise CliError(f"Lost the event stream of {validation_id} ({reason}); gave up after {fruitless} tries.")
        where = f"after event {last_id}" if last_id else "from the start"
        notice(f"Event stream interrupted ({reason}); resuming {where} in {delay:g} s.")
        sleep(delay)


def _data(raw: str) -> dict[str, Any]:
    try:
        data = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return {"raw": raw}
    return data if isinstance(data, dict) else {"value": data}

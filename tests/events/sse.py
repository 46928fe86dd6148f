"""A small SSE reader for tests (framing per the WHATWG spec: fields, blank-line dispatch, comments)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Message:
    event: str
    id: str | None
    data: Any
    retry: int | None = None


def parse(lines: Iterator[str]) -> Iterator[Message | str]:
    """Messages, and the comment lines (heartbeats) as plain strings."""
    fields: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "data" in fields or "event" in fields:
                yield Message(
                    fields.get("event", "message"),
                    fields.get("id"),
                    json.loads(fields.get("data", "null")),
                    int(fields["retry"]) if "retry" in fields else None,
                )
            fields = {}
        elif line.startswith(":"):
            yield line
        else:
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value


def read(
    base: str, path: str, headers: dict[str, str], limit: int | None = None, timeout: float = 120
) -> list[Message]:
    """Read messages until `end` (or `limit` messages, then hang up)."""
    got: list[Message] = []
    with httpx.stream("GET", base + path, headers=headers, timeout=timeout) as answer:
        assert answer.status_code == 200, answer.read()
        assert answer.headers["content-type"].startswith("text/event-stream")
        for item in parse(answer.iter_lines()):
            if isinstance(item, Message):
                got.append(item)
                if item.event == "end" or (limit is not None and len(got) >= limit):
                    return got
    return got

"""The Batch API lane's rules, without I/O: request lines, splitting into batches, reading the
output and error files, the poll spacing and what a validation shows of its batches.

A part goes to the Batch API as one JSONL line whose `custom_id` is `<part id>/<nonce>`: the
part's answer maps back to it by the id alone, and the nonce lets a synchronous re-ask rebuild
the very prompt the batch answered (core/prompt.part_messages takes it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
EXPIRED_CODE = "batch_expired"  # an error-file line of a request the window left unexecuted


class BatchStatus(StrEnum):
    """OpenAI's batch statuses, and `submitting` (reserved and recorded, not created yet)."""

    SUBMITTING = "submitting"
    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


ENDED = frozenset({BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.CANCELLED})
# The order a validation's summary shows the least advanced of its open batches in.
_ADVANCE = [
    BatchStatus.SUBMITTING,
    BatchStatus.VALIDATING,
    BatchStatus.IN_PROGRESS,
    BatchStatus.FINALIZING,
    BatchStatus.CANCELLING,
]


def custom_id(part_id: str, nonce: str) -> str:
    return f"{part_id}/{nonce}"


def part_of(custom: str) -> tuple[str, str]:
    """(part id, nonce) of a custom_id; ValueError for one this service did not write."""
    part_id, slash, nonce = custom.partition("/")
    if not slash or not part_id or not nonce:
        raise ValueError(f"not a part's custom_id: {custom!r}")
    return part_id, nonce


def request_line(custom: str, body: dict[str, Any]) -> bytes:
    """One line of a batch input file (OpenAI's shape), newline included."""
    line = {"custom_id": custom, "method": "POST", "url": ENDPOINT, "body": body}
    return (json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


@dataclass(frozen=True)
class Limits:
    """What one batch may hold: OpenAI's per-batch requests and bytes, and the enqueued tokens left."""

    max_requests: int
    max_bytes: int
    max_tokens: int


@dataclass
class Filling:
    """A batch being filled in order: a request joins while the batch stays within its limits."""

    limits: Limits
    queue_empty: bool = False  # nothing of the model enqueued: a request above the whole limit goes alone
    requests: int = 0
    size: int = 0
    tokens: int = 0

    def fits(self, line_bytes: int, line_tokens: int) -> bool:
        """Whether one more request fits. A request larger than a batch's requests or bytes on its own is
        a batch of one, and so is one above the queue limit once the queue is empty (the provider says
        what it makes of them)."""
        if self.requests == 0:
            return line_tokens <= self.limits.max_tokens or self.queue_empty
        return (
            self.requests + 1 <= self.limits.max_requests
            and self.size + line_bytes <= self.limits.max_bytes
            and self.tokens + line_tokens <= self.limits.max_tokens
        )

    def add(self, line_bytes: int, line_tokens: int) -> None:
        self.requests, self.size, self.tokens = self.requests + 1, self.size + line_bytes, self.tokens + line_tokens


def next_wait(previous: int | None, first: int, cap: int) -> int:
    """The poll spacing: `first`, then doubled each poll up to `cap` (whole seconds: a Wait state's)."""
    if previous is None or previous < first:
        return max(0, first)
    return max(0, min(cap, previous * 2))


# --- the output and error files ------------------------------------------------------------


@dataclass(frozen=True)
class Answered:
    """A request's answer body (status 200), by part."""

    part_id: str
    nonce: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Unanswered:
    """A request without a usable answer: `code` is the error's (`batch_expired`, ...) or
    `status_<n>` for an answer with another status."""

    part_id: str
    code: str
    message: str


@dataclass
class Read:
    """A results file, read line by line; a line that is not a request's result is counted as malformed."""

    answered: list[Answered]
    unanswered: list[Unanswered]
    malformed: int = 0


def read_results(content: bytes) -> Read:
    """The lines of an output or error file (either shape; blank lines skipped)."""
    read = Read([], [])
    for line in _lines(content):
        try:
            item = json.loads(line)
            part_id, nonce = part_of(str(item["custom_id"]))
        except (ValueError, KeyError, TypeError):
            read.malformed += 1
            continue
        response, error = item.get("response"), item.get("error")
        if isinstance(response, dict) and response.get("status_code") == 200 and isinstance(response.get("body"), dict):
            read.answered.append(Answered(part_id, nonce, response["body"]))
        elif isinstance(error, dict):
            read.unanswered.append(Unanswered(part_id, str(error.get("code")), str(error.get("message", ""))[:500]))
        elif isinstance(response, dict):
            body = response.get("body") if isinstance(response.get("body"), dict) else {}
            message = str((body.get("error") or {}).get("message", "")) if isinstance(body, dict) else ""
            read.unanswered.append(Unanswered(part_id, f"status_{response.get('status_code')}", message[:500]))
        else:
            read.malformed += 1
    return read


def _lines(content: bytes) -> Iterator[str]:
    for raw in content.decode("utf-8", errors="replace").split("\n"):
        if raw.strip():
            yield raw


# --- what a validation shows ---------------------------------------------------------------


def summary(batches: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The validation's `batch`: the least advanced status of its open batches (else of the last one
    to end), the request counts added up over them all, and how many are open and how many there were."""
    counts = {"total": 0, "completed": 0, "failed": 0}
    for b in batches:
        for key in counts:
            counts[key] += int((b.get("request_counts") or {}).get(key, 0))
    # A record ended by us (`ended`: collected, or given up while the provider was still cancelling) is
    # not open, whatever status the provider last showed.
    open_ = [BatchStatus(b["status"]) for b in batches if not b.get("ended") and BatchStatus(b["status"]) not in ENDED]
    if open_:
        status = min(open_, key=_ADVANCE.index)
    elif batches:
        status = BatchStatus(batches[-1]["status"])
    else:
        status = BatchStatus.SUBMITTING
    return {
        "status": status.value,
        "request_counts": counts,
        "batches": len(batches),
        "open": len(open_),
    }

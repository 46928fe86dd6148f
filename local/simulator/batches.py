"""OpenAI's Batch API: a JSONL file of chat completion requests answered within a window.

**Creating.** `POST /v1/batches` takes `input_file_id` (a file uploaded with purpose
"batch", files.py), `endpoint` "/v1/chat/completions", `completion_window` "24h" and optional
`metadata` (at most 16 pairs, keys up to 64 and values up to 512 characters); anything else is
OpenAI's 400, an unknown input file OpenAI's 404. The batch is answered `validating`; its file
is read then, and a file that fails OpenAI's checks (batch_input.py; `batch_max_requests`,
50,000, and `batch_max_bytes`, 200 MB, bound it) makes the batch end `failed` with
`errors.data` (`{code, line, message, param}`).

**The timeline** is a function of the time since creation and the batch's own
`batch_completion_seconds` (D): `validating` for the first 10% of D; then, unless the file
failed the checks or the enqueued-token limit refuses the batch, `in_progress` until 90% of D,
request i of n (in file order) answered at 10% + 80%·(i+1)/n of D; `finalizing` until D;
`completed` at D, when the output and error files are written. A batch moves only when the
Files or Batches API is called (any route, before it answers), never in the background; every
batch moves then, all the steps due taken in time order (ties in creation order), so the same
calls at the same clock times give the same answers, counts and prompt cache. The clock is the
simulator's (`Simulator(clock=...)`); the Unix timestamps (`created_at`, `in_progress_at`, ...)
are the creation's wall time plus the timeline's offsets.

**Each request is answered by the chat completions code** (`Simulator.answer_batched`): the
same checks (an unknown `service_tier` is OpenAI's 400), verdicts, mistakes, scripted faults
(taken from `faults` as the request is answered), prompt cache and `usage` as a synchronous call
with the same body, so its `body` is that call's answer but for `id` and `created`. The
response's `service_tier` is "default" for a request without one, as in OpenAI's batch output.
It never meets the RPM/TPM limits, the latency or the injected 429s and 500s of synchronous calls.
An output line is `{"id": "batch_req_…", "custom_id", "response": {"status_code": 200,
"request_id", "body"}, "error": null}`; an answer with another status goes to the error file in
the same shape, `error` null (as OpenAI writes a request's 4xx and 5xx). A request not executed
is written to the error file as `{"id", "custom_id", "response": null, "error": {"code",
"message"}}`, code `batch_expired` or `batch_cancelled`. Lines are in input order.
`request_counts` is `{0, 0, 0}` while validating, then `total` n, `completed` the 200s and
`failed` the other answers (not the requests never executed). `output_file_id` /
`error_file_id` stay null when that file would be empty. `usage` adds up the answered requests'.

**Failure modes**, each deterministic:

- `batch_failure_rate` (0.0): the share of requests answered 500 (`{"error": {"message":
  "injected server error", "type": "server_error", ...}}`) without running the answer code (no
  verdict, no fault taken, no cache). A request is picked when the first 8 bytes (big endian) of
  the SHA-256 of `json.dumps([k, custom_id])` (UTF-8), over 2**64, fall below the rate, k the
  number of batches the simulator created before this one: the same batch fails the same
  requests, a resubmitted one draws anew. `batch_failed_custom_ids` ([]): these custom_ids are
  answered 500 in every batch;
- `batch_faults` ([]), a queue like `faults`: each created batch takes the first entry.
  `expire` (or `expire/<N>`) answers only the first half of the requests, rounded down (or the
  first N), stays `in_progress` and ends `expired` at D (`expired_at`), the answered requests in
  the output file, the rest in the error file as `batch_expired`. `malformed_output` writes the
  output file's first line cut to the first half of its bytes (not JSON);
- `batch_enqueued_token_limit` (None: no limit), per model: when a batch leaves `validating`,
  the prompt tokens of its requests (limits.prompt_tokens) plus those of the batches of the same
  model `in_progress`, `finalizing` or `cancelling` must not exceed it, or the batch ends
  `failed` with one error `token_limit_exceeded` (OpenAI's message; line and param null).

**Cancelling** (`POST /v1/batches/{id}/cancel`) a batch not ended makes it `cancelling` at once
(`cancelling_at`); it ends `cancelled` 10% of D later, keeping the output of the requests
answered before the cancel, the rest in the error file as `batch_cancelled` (no file when it
never left `validating`). Cancelling a `cancelling` or `cancelled` batch answers it as it is; an
ended one is a 409. `GET /v1/batches` lists the batches newest first, `limit` 1-100 (20),
`after` the last id of the previous page (an unknown one is a 404).

A batch keeps the settings it was created with; reconfiguring changes the batches created after.
"""

from __future__ import annotations

import enum
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from local.simulator.batch_input import BatchError, BatchInput, BatchRequest, read_input
from local.simulator.errors import INJECTED_SERVER_ERROR, OpenAIError, invalid_value, missing, not_found
from local.simulator.files import BATCH, Count, FileStore

ENDPOINTS = ("/v1/chat/completions",)
COMPLETION_WINDOWS = ("24h",)
WINDOW_SECONDS = 86_400  # expires_at: 24 hours after creation
VALIDATING_SHARE = 0.1  # of batch_completion_seconds: validating, then...
FINALIZING_SHARE = 0.1  # ...finalizing (and cancelling) take this much; the requests the rest
MAX_REQUESTS = 50_000  # OpenAI's limits per batch
MAX_BYTES = 200 * 1024 * 1024
METADATA_PAIRS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512
LIST_LIMIT, LIST_LIMIT_MAX = 20, 100
EXPIRE, MALFORMED_OUTPUT = "expire", "malformed_output"
ORGANIZATION = "org-simulator"

# A request body in, (status code, answer body) out: the chat completions code (app.py).
Answer = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


class Status(enum.StrEnum):
    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


ENDED = frozenset({Status.FAILED, Status.COMPLETED, Status.EXPIRED, Status.CANCELLED})
ENQUEUED = frozenset({Status.IN_PROGRESS, Status.FINALIZING, Status.CANCELLING})


# --- settings and scripted faults ---------------------------------------------------------------


@dataclass(frozen=True)
class BatchSettings:
    """What a batch is created with (SimulatorConfig's `batch_*` fields)."""

    completion_seconds: float = 5.0
    max_requests: int = MAX_REQUESTS
    max_bytes: int = MAX_BYTES
    enqueued_token_limit: int | None = None
    failure_rate: float = 0.0
    failed_custom_ids: frozenset[str] = frozenset()

    def check(self) -> None:
        """ValueError when a setting is out of range."""
        if self.completion_seconds < 0:
            raise ValueError(f"batch_completion_seconds must be 0 or more, not {self.completion_seconds}")
        if self.max_requests < 1 or self.max_bytes < 1:
            raise ValueError("batch_max_requests and batch_max_bytes must be 1 or more")
        if self.enqueued_token_limit is not None and self.enqueued_token_limit < 0:
            raise ValueError(f"batch_enqueued_token_limit must be 0 or more, not {self.enqueued_token_limit}")
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError(f"batch_failure_rate must be between 0.0 and 1.0, not {self.failure_rate}")


@dataclass(frozen=True)
class BatchFault:
    """A scripted batch fault: `expire` (answering `answered` requests, None: half) or `malformed_output`."""

    kind: str
    answered: int | None = None


def parse_batch_fault(entry: str) -> BatchFault:
    """The fault of a `batch_faults` entry; ValueError for an unknown one."""
    name, slash, answered = entry.partition("/")
    if name == EXPIRE and not slash:
        return BatchFault(EXPIRE)
    if name == EXPIRE and answered.isdigit():
        return BatchFault(EXPIRE, int(answered))
    if entry == MALFORMED_OUTPUT:
        return BatchFault(MALFORMED_OUTPUT)
    raise ValueError(f"unknown simulator batch fault {entry!r}: use expire, expire/<N> or malformed_output")


class BatchFaultQueue:
    """The scripted batch faults still to inject, one per created batch."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._entries: list[BatchFault] = []
        self.replace(entries)

    def replace(self, entries: Iterable[str]) -> None:
        parsed = [parse_batch_fault(entry) for entry in entries]  # all checked before any replaces the queue
        with self._lock:
            self._entries = parsed

    def take(self) -> BatchFault | None:
        with self._lock:
            return self._entries.pop(0) if self._entries else None


# --- one batch ----------------------------------------------------------------------------------


@dataclass
class Answered:
    """A request's line in the output or error file."""

    line: dict[str, Any]
    ok: bool  # status 200: the output file


@dataclass
class Batch:
    """A batch and where its timeline has got to (the module's docstring)."""

    id: str
    ordinal: int  # batches the simulator created before this one
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    created: float  # the simulator's clock
    created_wall: float  # Unix seconds
    settings: BatchSettings
    fault: BatchFault | None
    input: BatchInput
    status: Status = Status.VALIDATING
    moved: dict[Status, float] = field(default_factory=dict)  # clock time each status began
    errors: list[BatchError] | None = None
    answered: list[Answered] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    usage: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("input", "cached", "output"), 0))

    def at(self, share: float) -> float:
        """The clock time `share` of the way through the batch's completion time."""
        return self.created + share * self.settings.completion_seconds

    @property
    def to_answer(self) -> int:
        """How many requests the batch answers: all, or those an `expire` fault leaves."""
        total = len(self.input.requests)
        if self.fault is None or self.fault.kind != EXPIRE:
            return total
        return min(total, total // 2 if self.fault.answered is None else self.fault.answered)

    def next_due(self) -> float | None:
        """The clock time of the batch's next step; None once it has ended."""
        if self.status == Status.VALIDATING:
            return self.at(VALIDATING_SHARE)
        if self.status == Status.IN_PROGRESS:
            done, total = len(self.answered), len(self.input.requests)
            if done < self.to_answer:
                return self.at(VALIDATING_SHARE + (1 - VALIDATING_SHARE - FINALIZING_SHARE) * (done + 1) / total)
            return self.at(1.0) if self.to_answer < total else self.at(1 - FINALIZING_SHARE)
        if self.status == Status.FINALIZING:
            return self.at(1.0)
        if self.status == Status.CANCELLING:
            return self.moved[Status.CANCELLING] + FINALIZING_SHARE * self.settings.completion_seconds
        return None

    def unix(self, status: Status) -> int | None:
        """The Unix time a status began, None if it has not."""
        moved = self.moved.get(status)
        return None if moved is None else self.wall(moved)

    def wall(self, when: float) -> int:
        """The Unix time of a clock time: the creation's wall time plus the offset."""
        return int(self.created_wall + (when - self.created))

    def request_counts(self) -> dict[str, int]:
        if Status.IN_PROGRESS not in self.moved:
            return {"total": 0, "completed": 0, "failed": 0}
        completed = sum(1 for a in self.answered if a.ok)
        return {"total": len(self.input.requests), "completed": completed, "failed": len(self.answered) - completed}

    def to_object(self) -> dict[str, Any]:
        """OpenAI's Batch object."""
        input_tokens, output_tokens = self.usage["input"], self.usage["output"]
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.input.model,
            "errors": None if self.errors is None else {"object": "list", "data": [e.to_object() for e in self.errors]},
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": str(self.status),
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created_wall),
            "in_progress_at": self.unix(Status.IN_PROGRESS),
            "expires_at": int(self.created_wall) + WINDOW_SECONDS,
            "finalizing_at": self.unix(Status.FINALIZING),
            "completed_at": self.unix(Status.COMPLETED),
            "failed_at": self.unix(Status.FAILED),
            "expired_at": self.unix(Status.EXPIRED),
            "cancelling_at": self.unix(Status.CANCELLING),
            "cancelled_at": self.unix(Status.CANCELLED),
            "request_counts": self.request_counts(),
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": self.usage["cached"]},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            },
            "metadata": None if self.metadata is None else dict(self.metadata),
        }


def failure_drawn(ordinal: int, custom_id: str, rate: float) -> bool:
    """Whether `batch_failure_rate` fails this request of the batch created `ordinal`-th (from 0)."""
    if rate <= 0.0:
        return False
    digest = hashlib.sha256(json.dumps([ordinal, custom_id]).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


# The error-file line's (code, message) of a request not executed, by how its batch ended.
NOT_EXECUTED = {
    Status.EXPIRED: ("batch_expired", "This request could not be executed before the completion window expired."),
    Status.CANCELLED: ("batch_cancelled", "This request was not executed because the batch was cancelled."),
}


def not_executed(request: BatchRequest, ended: Status) -> dict[str, Any]:
    """The error-file line of a request the batch never executed."""
    code, message = NOT_EXECUTED[ended]
    return {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": request.custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }


# --- the service --------------------------------------------------------------------------------


class Batches:
    """The simulator's batches: created, read, cancelled and listed through the API, moved along their
    timelines by `advance` (the module's docstring)."""

    def __init__(
        self,
        files: FileStore,
        answer: Answer,
        count: Count,
        settings: Callable[[], BatchSettings] = BatchSettings,
        faults: BatchFaultQueue | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """`settings`: those a batch created now keeps; `faults`: the scripted batch faults (`batch_faults`)."""
        self.faults = faults or BatchFaultQueue()
        self._files = files
        self._answer = answer
        self._count = count
        self._settings = settings
        self._clock = clock
        self._wall = wall
        self._lock = threading.RLock()
        self._batches: dict[str, Batch] = {}  # in creation order

    def create(self, request: dict[str, Any]) -> dict[str, Any]:
        """A new batch, `validating`, taking the next scripted batch fault; OpenAIError for what OpenAI
        refuses at once (the batch is not created, no fault taken)."""
        input_file_id, endpoint, window, metadata = _creation(request)
        stored = self._files.get(input_file_id)
        if stored.purpose != BATCH:
            raise OpenAIError(
                400,
                f"The input file {input_file_id} must have purpose 'batch', not '{stored.purpose}'.",
                param="input_file_id",
            )
        settings = self._settings()
        with self._lock:
            self.advance()
            batch = Batch(
                id=f"batch_{uuid.uuid4().hex}",
                ordinal=len(self._batches),
                input_file_id=input_file_id,
                endpoint=endpoint,
                completion_window=window,
                metadata=metadata,
                created=self._clock(),
                created_wall=self._wall(),
                settings=settings,
                fault=self.faults.take(),
                input=read_input(stored.content, endpoint, settings.max_requests, settings.max_bytes),
            )
            self._batches[batch.id] = batch
            self._count("batches", "created")
            return batch.to_object()

    def get(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            self.advance()
            return self._batch(batch_id).to_object()

    def cancel(self, batch_id: str) -> dict[str, Any]:
        """The batch `cancelling` (the module's docstring); 409 for a batch that has ended otherwise."""
        with self._lock:
            self.advance()
            batch = self._batch(batch_id)
            if batch.status in (Status.CANCELLING, Status.CANCELLED):
                return batch.to_object()
            if batch.status in ENDED:
                raise OpenAIError(409, f"Cannot cancel a batch with status '{batch.status}'.")
            self._move(batch, Status.CANCELLING, self._clock())
            self._count("batches", "cancel_requests")
            return batch.to_object()

    def page(self, after: str | None, limit: int | None) -> dict[str, Any]:
        """A page of batches, newest first."""
        limit = LIST_LIMIT if limit is None else limit
        if not 1 <= limit <= LIST_LIMIT_MAX:
            raise OpenAIError(
                400,
                f"Invalid 'limit': {limit}. It must be between 1 and {LIST_LIMIT_MAX}.",
                param="limit",
                code="invalid_value",
            )
        with self._lock:
            self.advance()
            newest_first = list(reversed(self._batches.values()))
            start = 0
            if after is not None:
                ids = [b.id for b in newest_first]
                if after not in ids:
                    raise not_found("Batch", after)
                start = ids.index(after) + 1
            page = newest_first[start : start + limit]
            return {
                "object": "list",
                "data": [b.to_object() for b in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": start + limit < len(newest_first),
            }

    def advance(self) -> None:
        """Take every step due by now, across batches, in time order (ties in creation order)."""
        with self._lock:
            now = self._clock()
            moving = [b for b in self._batches.values() if b.status not in ENDED]
            while True:
                due = [(t, b.ordinal, b) for b in moving if (t := b.next_due()) is not None and t <= now]
                if not due:
                    return
                when, _, batch = min(due, key=lambda d: (d[0], d[1]))
                self._step(batch, when)
                if batch.status in ENDED:
                    moving.remove(batch)

    def _batch(self, batch_id: str) -> Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise not_found("Batch", batch_id)
        return batch

    def _step(self, batch: Batch, when: float) -> None:
        if batch.status == Status.VALIDATING:
            refused = batch.input.errors or self._over_token_limit(batch)
            if refused:
                batch.errors = refused
                self._move(batch, Status.FAILED, when)
            else:
                self._move(batch, Status.IN_PROGRESS, when)
        elif batch.status == Status.IN_PROGRESS and len(batch.answered) < batch.to_answer:
            self._execute(batch, batch.input.requests[len(batch.answered)])
        elif batch.status == Status.IN_PROGRESS and batch.to_answer < len(batch.input.requests):
            self._end(batch, Status.EXPIRED, when)
        elif batch.status == Status.IN_PROGRESS:
            self._move(batch, Status.FINALIZING, when)
        elif batch.status == Status.FINALIZING:
            self._end(batch, Status.COMPLETED, when)
        elif batch.status == Status.CANCELLING:
            self._end(batch, Status.CANCELLED, when)

    def _over_token_limit(self, batch: Batch) -> list[BatchError]:
        limit = batch.settings.enqueued_token_limit
        if limit is None:
            return []
        enqueued = sum(
            b.input.prompt_tokens
            for b in self._batches.values()
            if b.status in ENQUEUED and b.input.model == batch.input.model
        )
        if enqueued + batch.input.prompt_tokens <= limit:
            return []
        message = (
            f"Enqueued token limit reached for {batch.input.model} in organization {ORGANIZATION}. "
            f"Limit: {limit:,} enqueued tokens. Please try again once some in_progress batches have been completed."
        )
        return [BatchError("token_limit_exceeded", message)]

    def _execute(self, batch: Batch, request: BatchRequest) -> None:
        injected = request.custom_id in batch.settings.failed_custom_ids or failure_drawn(
            batch.ordinal, request.custom_id, batch.settings.failure_rate
        )
        status, body = (
            (INJECTED_SERVER_ERROR.status_code, INJECTED_SERVER_ERROR.body())
            if injected
            else self._answer(request.body)
        )
        line = {
            "id": f"batch_req_{uuid.uuid4().hex}",
            "custom_id": request.custom_id,
            "response": {"status_code": status, "request_id": uuid.uuid4().hex, "body": body},
            "error": None,
        }
        ok = status == 200
        batch.answered.append(Answered(line, ok))
        if ok:
            usage = body["usage"]
            batch.usage["input"] += usage["prompt_tokens"]
            batch.usage["cached"] += usage["prompt_tokens_details"]["cached_tokens"]
            batch.usage["output"] += usage["completion_tokens"]
        self._count("batch_requests", "completed" if ok else "failed")

    def _end(self, batch: Batch, status: Status, when: float) -> None:
        """End the batch (completed, expired or cancelled), writing its output and error files."""
        self._move(batch, status, when)
        if Status.IN_PROGRESS not in batch.moved:  # cancelled while validating: nothing to write
            return
        outputs = [json.dumps(a.line) for a in batch.answered if a.ok]
        errors = [json.dumps(a.line) for a in batch.answered if not a.ok]
        for request in batch.input.requests[len(batch.answered) :]:  # none when it completed
            errors.append(json.dumps(not_executed(request, status)))
            self._count("batch_requests", str(status))
        if outputs and batch.fault is not None and batch.fault.kind == MALFORMED_OUTPUT:
            outputs[0] = outputs[0][: len(outputs[0]) // 2]  # json.dumps writes ASCII: a cut between bytes is safe
        if outputs:
            batch.output_file_id = self._write(f"{batch.id}_output.jsonl", outputs, batch.wall(when))
        if errors:
            batch.error_file_id = self._write(f"{batch.id}_error.jsonl", errors, batch.wall(when))

    def _write(self, filename: str, lines: list[str], created_at: int) -> str:
        return self._files.write(filename, "".join(line + "\n" for line in lines).encode(), created_at).id

    def _move(self, batch: Batch, status: Status, when: float) -> None:
        batch.status = status
        batch.moved[status] = when
        if status in ENDED:
            self._count("batches", str(status))


def _creation(request: dict[str, Any]) -> tuple[str, str, str, dict[str, str] | None]:
    """(input_file_id, endpoint, completion_window, metadata) of a create request; OpenAIError (400) for a bad one."""
    for name in ("input_file_id", "endpoint", "completion_window"):
        if not isinstance(request.get(name), str) or not request[name]:
            raise missing(name)
    if request["endpoint"] not in ENDPOINTS:
        raise invalid_value("endpoint", request["endpoint"], ENDPOINTS)
    if request["completion_window"] not in COMPLETION_WINDOWS:
        raise invalid_value("completion_window", request["completion_window"], COMPLETION_WINDOWS)
    metadata = request.get("metadata")
    if metadata is not None and not (
        isinstance(metadata, dict)
        and len(metadata) <= METADATA_PAIRS
        and all(
            isinstance(k, str)
            and isinstance(v, str)
            and len(k) <= METADATA_KEY_CHARS
            and len(v) <= METADATA_VALUE_CHARS
            for k, v in metadata.items()
        )
    ):
        raise OpenAIError(
            400,
            f"Invalid 'metadata': at most {METADATA_PAIRS} pairs of strings, keys up to {METADATA_KEY_CHARS} "
            f"characters and values up to {METADATA_VALUE_CHARS}.",
            param="metadata",
            code="invalid_value",
        )
    return request["input_file_id"], request["endpoint"], request["completion_window"], metadata

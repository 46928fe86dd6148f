"""A batch input file, read and checked the way OpenAI checks it while the batch is `validating`.

The file is JSONL, one request a line: `{"custom_id", "method": "POST", "url", "body"}`. A file
that fails a check fails its batch, with one `BatchError` per problem (`errors.data` of the
Batch object, `{code, line, message, param}`):

- the file larger than `max_bytes`: `file_too_large` (OpenAI's message), nothing else checked;
- per line (numbered from 1; blank lines are skipped): `invalid_json_line` (not JSON),
  `invalid_request` (not an object), `missing_required_parameter` (no string `custom_id`, no
  object `body`, no string `body.model`), `invalid_value` (`method` not "POST"),
  `url_mismatch` (`url` not the batch's endpoint), `duplicate_custom_id` (a `custom_id` an
  earlier line used), `model_mismatch` (a `body.model` other than the first request's: one
  model per batch);
- over the whole file: `empty_file` (no request), `too_many_tasks` (more than `max_requests`).

What the body holds beyond its model is not checked here: a body the chat completions code
refuses (an unknown `service_tier`, say) is a request, answered 400 when the batch executes it,
as OpenAI answers it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from local.simulator.errors import invalid_value
from local.simulator.limits import prompt_tokens


@dataclass(frozen=True)
class BatchError:
    """One reason a batch failed."""

    code: str
    message: str
    line: int | None = None
    param: str | None = None

    def to_object(self) -> dict[str, Any]:
        return {"code": self.code, "line": self.line, "message": self.message, "param": self.param}


@dataclass(frozen=True)
class BatchRequest:
    """One request of an input file that passed the checks."""

    line: int
    custom_id: str
    body: dict[str, Any]

    @property
    def prompt_tokens(self) -> int:
        """As limits.prompt_tokens counts them (0 for `messages` the chat completions code refuses)."""
        messages = self.body.get("messages") or []
        readable = isinstance(messages, list) and all(isinstance(m, dict) for m in messages)
        return prompt_tokens(messages) if readable else 0


@dataclass(frozen=True)
class BatchInput:
    """An input file as read: its requests, or the errors that fail the batch (then no request)."""

    requests: list[BatchRequest]
    errors: list[BatchError]
    model: str | None

    @cached_property
    def prompt_tokens(self) -> int:
        """What the enqueued-token limit adds up; counted only when a limit asks."""
        return sum(r.prompt_tokens for r in self.requests)


def read_input(content: bytes, endpoint: str, max_requests: int, max_bytes: int) -> BatchInput:
    """The file's requests, or the errors of the checks it fails (the module's docstring)."""
    if len(content) > max_bytes:
        message = (
            f"The batch input file is larger than the {max_bytes} maximum for the {_first_model(content)} model. "
            "Please try again with a smaller batch."
        )
        return BatchInput([], [BatchError("file_too_large", message)], None)
    requests: list[BatchRequest] = []
    errors: list[BatchError] = []
    seen: set[str] = set()
    model: str | None = None
    lines = 0
    for number, raw in enumerate(content.decode("utf-8", errors="replace").split("\n"), start=1):
        if not raw.strip():
            continue
        lines += 1
        line_errors, request = _read_line(number, raw, endpoint)
        if request is not None:
            line_errors += _against_earlier(request, seen, model)
            seen.add(request.custom_id)
            model = model or str(request.body["model"])
        errors += line_errors
        if request is not None and not line_errors:
            requests.append(request)
    if not lines:
        errors.append(BatchError("empty_file", "The input file holds no request."))
    if lines > max_requests:
        message = f"The batch holds {lines:,} requests; a batch holds at most {max_requests:,}."
        errors.append(BatchError("too_many_tasks", message))
    return BatchInput([] if errors else requests, errors, model)


def _read_line(number: int, raw: str, endpoint: str) -> tuple[list[BatchError], BatchRequest | None]:
    """(errors, request) of one line on its own; the request is None when its fields cannot be read."""
    try:
        item = json.loads(raw)
    except ValueError:
        return [BatchError("invalid_json_line", "This line is not parseable as valid JSON.", number)], None
    if not isinstance(item, dict):
        return [BatchError("invalid_request", "Each line must be a JSON object.", number)], None
    custom_id, body = item.get("custom_id"), item.get("body")
    absent = [
        name
        for name, present in (
            ("custom_id", isinstance(custom_id, str)),
            ("body", isinstance(body, dict)),
            ("body.model", not isinstance(body, dict) or isinstance(body.get("model"), str)),
        )
        if not present
    ]
    errors = [
        BatchError("missing_required_parameter", f"Missing required parameter: '{name}'.", number, name)
        for name in absent
    ]
    if item.get("method") != "POST":
        errors.append(
            BatchError(
                "invalid_value", invalid_value("method", item.get("method"), ("POST",)).message, number, "method"
            )
        )
    if item.get("url") != endpoint:
        message = f"The URL of this request does not match the batch's endpoint, {endpoint}."
        errors.append(BatchError("url_mismatch", message, number, "url"))
    if absent or not isinstance(custom_id, str) or not isinstance(body, dict):
        return errors, None
    return errors, BatchRequest(number, custom_id, body)


def _against_earlier(request: BatchRequest, seen: set[str], model: str | None) -> list[BatchError]:
    """The errors of a request against the lines before it: a custom_id used again, another model."""
    errors = []
    if request.custom_id in seen:
        message = (
            "The custom_id for this request is a duplicate of another request. "
            "The custom_id parameter must be unique for each individual request in a batch."
        )
        errors.append(BatchError("duplicate_custom_id", message, request.line, "custom_id"))
    requested = str(request.body["model"])
    if model is not None and requested != model:
        message = f"The model '{requested}' differs from '{model}', the model of the first request: a batch uses one."
        errors.append(BatchError("model_mismatch", message, request.line, "body.model"))
    return errors


def _first_model(content: bytes) -> str:
    """The first line's model, for the size error's message; "" when it cannot be read."""
    try:
        return str(json.loads(content.split(b"\n", 1)[0])["body"]["model"])
    except (ValueError, KeyError, TypeError):
        return ""

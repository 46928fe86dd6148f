"""Validate a batch of parts: one judged answer per part not yet done.

Idempotent: a part that already settled is skipped, so a retried or duplicated
invocation resumes where the last one stopped. Between parts it checks that the
validation is still this run and not being cancelled, so no part starts after a stop.
Every model call goes through the TPM governor (lambdas/common/governor.py): a call slot
below the live parallelism and the call's tokens from the budget of the validation's model,
before the call; the call asks that model (its record's `model`), and reuse keys name it.
The answer is held to the schema (core/prompt.py): an invalid one raises InvalidAnswer,
which Step Functions retries; after the retries the part ends FAILED with that reason.
Its findings are held to the part's text (core/grounding.py): moved to the line holding
their quote, or set aside as ungrounded; a failing rule left without a grounded finding is
asked once more, then undecided.
An invocation validates up to `calls_per_invocation` of its parts at once, each call on a
slot and lease of its own (lambdas/common/calls.py, core/headroom.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from core import grounding, prompt
from core.records import PartStatus
from lambdas.common import calls
from lambdas.common.config import LambdaConfig
from lambdas.common.errors import BatchIncomplete, InvalidAnswer
from lambdas.common.governor import Governor
from lambdas.common.model import Asker, Judged, ask_grounded, askers_for, prompt_estimate_without_tokenizer
from lambdas.common.stores import Store

log = logging.getLogger(__name__)


def part_view(files: list[dict[str, Any]], part: dict[str, Any], header_text: str | None) -> prompt.PartView:
    return prompt.view_of(files[part["file_index"]], part, header_text)


def validate_batch(
    store: Store,
    config: LambdaConfig,
    validation_id: str,
    run: int,
    parts: dict[str, str],
    remaining_millis: Callable[[], int],
    governor: Governor | None = None,
) -> dict[str, Any]:
    current = store.validations.get(validation_id, "rules", "files", "reuse")
    rules, files = current["rules"], current["files"]
    reuse = bool(current.get("reuse", True)) and bool(config.reuse_table)
    askers = askers_for(store, config, validation_id, run, remaining_millis, governor)
    headers: dict[int, str | None] = {}  # a file's later parts share one header row
    lock = threading.Lock()
    tally = {"validated": 0, "skipped": 0}

    def counted(name: str) -> None:
        with lock:
            tally[name] += 1

    def header_of(part: dict[str, Any]) -> str | None:
        if not part.get("header"):
            return None
        with lock:
            if part["file_index"] in headers:
                return headers[part["file_index"]]
        text = store.files.header_text(part)  # one S3 read per file and batch (two workers may both read it)
        with lock:
            return headers.setdefault(part["file_index"], text)

    def validate(asker: Asker, part: dict[str, Any]) -> None:
        if remaining_millis() < config.reserve_millis:
            raise BatchIncomplete(f"{tally['validated']} parts validated, time running out")
        view, text = part_view(files, part, header_of(part)), store.files.part_text(part)
        digest = prompt.part_digest(view, text, rules, askers.model) if reuse else None
        stored = store.answers.stored(digest) if digest else None
        if digest and stored is not None:  # judged before: the stored verdict, no call, no tokens
            if store.parts.record_reused(validation_id, part, stored["rules"], stored["model"], digest):
                counted("validated")
                store.events.after_part(validation_id, run, part)
            else:
                counted("skipped")
            return
        messages = prompt.part_messages(view, text, rules, prompt.new_nonce())
        judged = judge_part(asker, messages, prompt_tokens_estimate(part, messages, config), rules, text, part)
        if digest and not judged.grounded.undecided:  # only grounded answers are reused
            store.answers.store(digest, {"rules": judged.grounded.verdicts, "model": judged.model})
        if store.parts.record_success(
            validation_id, part, judged.grounded.verdicts, judged.usage, judged.model, judged.counters()
        ):
            counted("validated")
            store.events.after_part(validation_id, run, part)
        else:  # a duplicate invocation settled it first
            counted("skipped")

    todo = []
    for part in store.parts.in_range(validation_id, parts["first"], parts["last"]):  # records only, no text
        if part["status"] == PartStatus.PENDING:
            todo.append(part)
        else:
            tally["skipped"] += 1
    stopped = calls.handle_all(todo, validate, askers)
    return {**tally, "stopped": stopped}


def judge_part(
    asker: Asker,
    messages: list[dict[str, str]],
    estimate: int,
    rules: list[dict[str, str]],
    text: str,
    part: dict[str, Any],
) -> Judged:
    """The part's answer, its findings held to the part's own text (core/grounding.py), asked
    again once when a failing rule is left without a grounded finding."""
    first_line, last_line = int(part["first_line"]), int(part["last_line"])

    def ground(content: str) -> grounding.Grounded:
        try:
            return grounding.ground_part(prompt.parse_part_answer(content, rules), text, first_line, last_line)
        except prompt.InvalidAnswer as exc:
            raise InvalidAnswer(f"part {part['part_id']}: {exc}") from exc

    return ask_grounded(asker, messages, prompt.PART_RESPONSE_FORMAT, estimate, ground, f"part {part['part_id']}")


def prompt_tokens_estimate(part: dict[str, Any], messages: list[dict[str, str]], config: LambdaConfig) -> int:
    """The prompt's tokens as the API counted them at intake (the part's `estimate` holds prompt +
    completion allowance), so the Lambdas need no tokenizer; the call's real count replaces it."""
    if part.get("estimate"):
        return max(1, int(part["estimate"]) - config.completion_max_tokens)
    return prompt_estimate_without_tokenizer(messages)  # records written before estimates were kept

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
An uploaded file's parts are read from exactly the object the plan step read (If-Match its
ETag): one overwritten since fails with `file_changed` (FileChanged), recorded here and not
retried, while the invocation's other parts go on.
An invocation validates up to `calls_per_invocation` of its parts at once, each call on a
slot and lease of its own (lambdas/common/calls.py, core/headroom.py). An item longer than one
invocation: when its time runs short after it settled parts, the invocation answers `more` and
the state machine invokes it again (`ValidateMore`), as many rounds as the item needs, so the
Retry budget is kept for errors; an invocation that settled nothing raises BatchIncomplete.
So does one whose wait for a call slot or tokens gave up (CapacityUnavailable) after it settled
parts: a wait is bounded by the invocation's time left, so the next round waits again, whole;
one that settled nothing raises it, for the Retry's backoff.

On the batch lane (lambdas/batch) the Batch API answers first; what it left comes here: a part
whose batch answer needs a re-ask keeps that answer (`batch_answer`) and only the re-ask is asked,
at the validation's `batch_sync_tier`; a part the batch did not answer (or answered off the schema)
is asked as on any lane, and one whose answer was cut is asked with twice the completion
allowance. `settle_answered` is how the batch Lambda stores a batch answer that needs nothing
more: the same grounding, reuse and accounting as an answer asked here.
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
from lambdas.common.errors import BatchIncomplete, CapacityUnavailable, FileChanged, InvalidAnswer
from lambdas.common.governor import Governor
from lambdas.common.model import (
    Answer,
    Asker,
    Judged,
    ask_grounded,
    askers_for,
    count_grounding,
    prompt_estimate_without_tokenizer,
)
from lambdas.common.stores import Store

log = logging.getLogger(__name__)


def part_view(files: list[dict[str, Any]], part: dict[str, Any], header_text: str | None) -> prompt.PartView:
    return prompt.view_of(files[part["file_index"]], part, header_text)


def record_file_changed(
    store: Store,
    validation_id: str,
    run: int,
    part: dict[str, Any],
    file: dict[str, Any],
    rule_ids: list[str],
    exc: FileChanged,
) -> bool:
    """A part whose uploaded file changed after it was planned: FAILED `file_changed` (a retry
    would read the same bytes), its progress told; False when it had settled meanwhile."""
    after = "" if exc.gone else " after it was planned"
    reason = {"type": "file_changed", "message": f"File {file['name']!r} {exc}{after}."}
    if store.parts.record_failure(validation_id, part, reason):
        store.events.after_part(validation_id, run, part, file, rule_ids)
        return True
    return False


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
    rule_ids = [r["id"] for r in rules]
    reuse = bool(current.get("reuse", True)) and bool(config.reuse_table)
    askers = askers_for(store, config, validation_id, run, remaining_millis, governor)
    headers: dict[int, str | None] = {}  # a file's later parts share one header row
    lock = threading.Lock()
    tally = {"validated": 0, "skipped": 0, "failed": 0}

    def counted(name: str) -> None:
        with lock:
            tally[name] += 1

    def header_of(part: dict[str, Any]) -> str | None:
        if not part.get("header"):
            return None
        with lock:
            if part["file_index"] in headers:
                return headers[part["file_index"]]
        # One S3 read per file and batch (two workers may both read it).
        text = store.files.header_text(part, files[part["file_index"]].get("etag"))
        with lock:
            return headers.setdefault(part["file_index"], text)

    def validate(asker: Asker, part: dict[str, Any]) -> None:
        if remaining_millis() < config.reserve_millis:
            raise BatchIncomplete(f"{tally['validated']} parts validated, time running out")
        file = files[part["file_index"]]
        try:
            view, text = part_view(files, part, header_of(part)), store.files.part_text(part, file.get("etag"))
        except FileChanged as exc:
            counted(
                "failed" if record_file_changed(store, validation_id, run, part, file, rule_ids, exc) else "skipped"
            )
            return
        digest = prompt.part_digest(view, text, rules, askers.model) if reuse else None
        stored = store.answers.stored(digest) if digest else None
        if digest and stored is not None:  # judged before: the stored verdict, no call, no tokens
            if store.parts.record_reused(validation_id, part, stored["rules"], stored["model"], digest):
                counted("validated")
                store.events.after_part(validation_id, run, part, files[part["file_index"]], rule_ids)
            else:
                counted("skipped")
            return
        earlier = batch_answer(part, rules, text)  # the Batch API answered; a re-ask may be left
        nonce = part["batch_answer"]["nonce"] if earlier is not None else prompt.new_nonce()
        messages = prompt.part_messages(view, text, rules, nonce)
        cut = (part.get("batch_answer") or {}).get("finish_reason") == "length"  # asked anew with twice the room
        judged = judge_part(
            asker,
            messages,
            prompt_tokens_estimate(part, messages, config),
            rules,
            text,
            part,
            earlier,
            2 * config.completion_max_tokens if cut else None,
        )
        settled = record_judged(store, validation_id, run, part, file, rules, judged, digest)
        counted("validated" if settled else "skipped")

    todo = []
    for part in store.parts.in_range(validation_id, parts["first"], parts["last"]):  # records only, no text
        if part["status"] == PartStatus.PENDING:
            todo.append(part)
        else:
            tally["skipped"] += 1
    try:
        stopped = calls.handle_all(todo, validate, askers)
    except (BatchIncomplete, CapacityUnavailable) as short:
        if not (tally["validated"] or tally["failed"]):
            raise  # no time, or no capacity, for even one part: Step Functions' Retry bounds this
        # A wait for a slot or tokens is bounded by the invocation's time left: one that gave up
        # late in an invocation that settled parts is had again, whole, by the next round.
        why = "time running out" if isinstance(short, BatchIncomplete) else "no capacity within the wait left"
        log.info("%d parts settled, %s: more in the next round", tally["validated"] + tally["failed"], why)
        return {**tally, "stopped": False, "more": True}
    return {**tally, "stopped": stopped, "more": False}


def record_judged(
    store: Store,
    validation_id: str,
    run: int,
    part: dict[str, Any],
    file: dict[str, Any],
    rules: list[dict[str, str]],
    judged: Judged,
    digest: str | None,
) -> bool:
    """A judged part stored as its result (and, grounded, for reuse), its progress told; False when a
    duplicate invocation settled it first."""
    if digest and not judged.grounded.undecided:  # only grounded answers are reused
        store.answers.store(digest, {"rules": judged.grounded.verdicts, "model": judged.model})
    if store.parts.record_success(
        validation_id, part, judged.grounded.verdicts, judged.usage, judged.model, judged.counters()
    ):
        store.events.after_part(validation_id, run, part, file, [r["id"] for r in rules])
        return True
    return False


def grounder(rules: list[dict[str, str]], text: str, part: dict[str, Any]) -> Callable[[str], grounding.Grounded]:
    """An answer's findings held to the part's own text (core/grounding.py); InvalidAnswer off the schema."""
    first_line, last_line = int(part["first_line"]), int(part["last_line"])

    def ground(content: str) -> grounding.Grounded:
        try:
            return grounding.ground_part(prompt.parse_part_answer(content, rules), text, first_line, last_line)
        except prompt.InvalidAnswer as exc:
            raise InvalidAnswer(f"part {part['part_id']}: {exc}") from exc

    return ground


def judge_part(
    asker: Asker,
    messages: list[dict[str, str]],
    estimate: int,
    rules: list[dict[str, str]],
    text: str,
    part: dict[str, Any],
    first_answer: Answer | None = None,
    first_allowance: int | None = None,
) -> Judged:
    """The part's answer, its findings held to the part's own text (core/grounding.py), asked
    again once when a failing rule is left without a grounded finding. `first_answer`: the Batch
    API's (checked by `batch_answer`), so only a re-ask is asked; `first_allowance`: the first ask's
    completion tokens (the Batch API's answer was cut)."""
    ground = grounder(rules, text, part)
    what = f"part {part['part_id']}"
    return ask_grounded(
        asker, messages, prompt.PART_RESPONSE_FORMAT, estimate, ground, what, first_answer, first_allowance
    )


def batch_answer(part: dict[str, Any], rules: list[dict[str, str]], text: str) -> Answer | None:
    """The part's batch answer (`batch_answer` on its record) when it can be the first answer: on the
    schema and not cut. Otherwise None: the part is asked anew (its batch tokens were counted)."""
    kept = part.get("batch_answer")
    if not kept or kept.get("finish_reason") == "length":
        return None
    answer = Answer(str(kept["content"]), dict(kept["usage"]), str(kept["model"]), {}, "stop", "batch")
    try:
        grounder(rules, text, part)(answer.content)
    except InvalidAnswer:
        return None
    return answer


def settle_answered(
    store: Store,
    validation_id: str,
    run: int,
    part: dict[str, Any],
    view: prompt.PartView,
    text: str,
    file: dict[str, Any],
    rules: list[dict[str, str]],
    answer: Answer,
    model: str,
    reuse: bool,
) -> bool:
    """Store a part's batch answer as its result when it needs nothing more (on the schema, not cut,
    every failing rule backed by the text), exactly as `validate_batch` stores an asked one; True when
    stored. Otherwise the part is left for ValidatePart (a re-ask, or asked anew)."""
    if answer.finish_reason == "length":
        return False
    try:
        grounded = grounder(rules, text, part)(answer.content)
    except InvalidAnswer:
        return False
    if grounded.reask:
        return False
    count_grounding(grounded, answer.model)
    digest = prompt.part_digest(view, text, rules, model) if reuse else None
    judged = Judged(grounded, dict(answer.usage), answer.model, 1)
    return record_judged(store, validation_id, run, part, file, rules, judged, digest)


def prompt_tokens_estimate(part: dict[str, Any], messages: list[dict[str, str]], config: LambdaConfig) -> int:
    """The prompt's tokens as the API counted them at intake (the part's `estimate` holds prompt +
    completion allowance), so the Lambdas need no tokenizer; the call's real count replaces it."""
    if part.get("estimate"):
        return max(1, int(part["estimate"]) - config.completion_max_tokens)
    return prompt_estimate_without_tokenizer(messages)  # records written before estimates were kept

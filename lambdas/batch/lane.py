"""The Batch API lane of a validation (`tier: "batch"`): submit its parts as batches, poll them,
store what they answer, cancel them.

**Submit.** The run's PENDING parts, in part-id order, become request lines (the validator's
prompt, response format and allowance; `custom_id` = part id and nonce, core/batching.py),
uploaded as a JSONL file (`/v1/files`, purpose batch) and created as a batch (`/v1/batches`,
window 24h). A batch ends where it would pass BATCH_MAX_REQUESTS, BATCH_MAX_BYTES or the room
left in the model's batch queue (BATCH_QUEUE_LIMIT_TOKENS of enqueued prompt tokens, every
validation's batches together): its tokens are reserved by the same transaction that records
it, before it is created, so concurrent submissions never pass the limit. What does not fit
waits for the next poll. A part a stored verdict answers (reuse) is settled without a request.

**Poll.** Each open batch is read: its status and request counts are shown on the validation
(`batch`; a progress event when they change). An ended batch is collected and its tokens go
back to the queue:

- an answer that needs nothing more is the part's result, exactly as the validator stores one
  (lambdas/validate_part: `settle_answered`), its tokens counted at the `batch` tier;
- an answer with a failing rule the text does not back is kept on the part (`batch_answer`):
  ValidatePart asks only the re-ask, synchronously at the validation's `batch_sync_tier`;
- an answer off the schema or cut, a per-request error (error file), a malformed output line,
  a batch that failed: the part stays PENDING and ValidatePart asks it synchronously (and it
  fails with the reason after that path's retries);
- requests an expired batch never executed are resubmitted once (a batch of attempt 2); the
  parts a second expiry leaves fail with `BatchExpired`.

The execution waits between polls in a Wait state, with no Lambda running (the state machine
doubles the spacing up to a cap). When no batch is open and nothing is left to submit, the
ValidateParts Map runs over the parts as on any lane: settled parts are skipped.

**Cancel.** `DELETE /validations/{id}` stops the execution, then invokes this Lambda with
`{"action": "cancel"}`: each open batch is cancelled at the provider, and for up to
BATCH_CANCEL_WAIT_SECONDS the cancelled batches are read until they end, so what they
answered before the cancel is collected (and counted) before the run is settled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

import openai

from core import events, prompt
from core.batching import (
    COMPLETION_WINDOW,
    ENDED,
    ENDPOINT,
    EXPIRED_CODE,
    BatchStatus,
    Filling,
    Limits,
    Read,
    custom_id,
    read_results,
    request_line,
    summary,
)
from core.clock import epoch_of
from core.records import PartStatus
from lambdas.common import live_config, model_key
from lambdas.common.config import LambdaConfig
from lambdas.common.errors import FileChanged, ModelRejected, ModelUnavailable, RateLimited, UpstreamTimeout
from lambdas.common.model import Answer, completion_parameters, model_client
from lambdas.common.observability import count
from lambdas.common.stores import Store
from lambdas.common.stores.batches import batch_key
from lambdas.validate_part.validator import part_view, prompt_tokens_estimate, record_file_changed, settle_answered

log = logging.getLogger(__name__)

LAST_PART = "99999-~"  # above every part id (core/records.part_id)
SPOOL_BYTES = 16 * 1024 * 1024  # a batch's JSONL kept in memory up to this, then in /tmp
ADOPT_SLACK_SECONDS = 300  # a batch is looked for among those created since its record, less this
UPLOAD_MARGIN_MILLIS = 60_000  # building a batch stops this long before the reserve: time to upload and create it
TOKEN_MARGIN = 16  # per request, above the intake's count: the nonce and message framing may take a few more


@contextmanager
def provider_errors() -> Iterator[None]:
    """The Files and Batches APIs' errors under the state machine's names (retried, or not)."""
    try:
        yield
    except openai.RateLimitError as exc:
        raise RateLimited(str(exc)[:500]) from exc
    except openai.APITimeoutError as exc:
        raise UpstreamTimeout(str(exc)[:500]) from exc
    except (openai.APIConnectionError, openai.InternalServerError) as exc:
        raise ModelUnavailable(str(exc)[:500]) from exc
    except openai.APIStatusError as exc:
        raise ModelRejected(str(exc)[:500]) from exc


@dataclass
class Lane:
    """One invocation's view of a validation's batch lane."""

    store: Store
    config: LambdaConfig
    validation_id: str
    run: int
    remaining_millis: Callable[[], int]
    record: dict[str, Any] = field(default_factory=dict)
    client: Any = None
    _headers: dict[int, str | None] = field(default_factory=dict)

    @classmethod
    def of(cls, store: Store, config: LambdaConfig, validation_id: str, run: int, remaining: Callable[[], int]) -> Lane:
        record = store.validations.get(
            validation_id, "rules", "files", "reuse", "model", "batch_cursor", "run", "status"
        )
        api_key = model_key.api_key(config)
        client = model_client(config.openai_base_url, api_key, config.openai_timeout_seconds)
        return cls(store, config, validation_id, run, remaining, record, client)

    @property
    def model(self) -> str:
        return str(self.record.get("model") or self.config.openai_model)

    @property
    def reuse(self) -> bool:
        return bool(self.record.get("reuse", True)) and bool(self.config.reuse_table)

    def _time_left(self) -> bool:
        return self.remaining_millis() > self.config.reserve_millis

    def _time_to_build(self) -> bool:
        """Time to add a request to the batch being built and still upload and create it."""
        return self.remaining_millis() > self.config.reserve_millis + UPLOAD_MARGIN_MILLIS

    # --- submit -----------------------------------------------------------------------------
    def submit(self) -> bool:
        """Submit what fits; True when everything of the run is submitted (or settled)."""
        held = self.store.batches.held(self.validation_id, self.run)
        for item in held:
            wanted = set(item["parts"])
            parts = [p for p in self._pending(min(wanted), max(wanted)) if p["part_id"] in wanted]
            if not parts:  # settled meanwhile: nothing to resubmit
                self.store.clients.transact([self._moves(item["part_id"], "")])
                continue
            if not self._submit_some(parts, 2, item["part_id"], whole=True):
                return False
        while self._time_left():
            parts = [p for p in self._pending(self._cursor(), LAST_PART) if p["part_id"] > self._cursor()]
            if not parts:
                return True
            if not self._submit_some(parts, 1, None, whole=False):
                return False
        return False

    def _moves(self, held: str | None, last: str) -> dict[str, Any]:
        """The transaction item a batch's parts move once taken: the held resubmission marked
        submitted, or (fresh parts) the run's cursor to `last`."""
        if held:
            return self.store.batches.submitted_item(self.validation_id, held)
        return self.store.batches.cursor_item(self.validation_id, self.run, last)

    def _moved(self, held: str | None, last: str) -> None:
        """The same move on this invocation's copy of the record."""
        if not held:
            self.record["batch_cursor"] = f"{self.run}|{last}"

    def _cursor(self) -> str:
        run, _, part = str(self.record.get("batch_cursor") or "").partition("|")
        return part if run == str(self.run) else ""

    def _pending(self, first: str, last: str) -> list[dict[str, Any]]:
        return [
            p
            for p in self.store.parts.in_range(self.validation_id, first or "0", last)
            if p["status"] == PartStatus.PENDING
        ]

    def _submit_some(self, parts: list[dict[str, Any]], attempt: int, held: str | None, *, whole: bool) -> bool:
        """One batch of the leading parts that fit; True when one was made (or nothing was left to ask).
        `held`: the held resubmission these parts are (None: fresh parts, after the run's cursor);
        `whole`: made only when all of it fits.
        The JSONL is spooled to the function's /tmp past SPOOL_BYTES: a 200 MB batch is never held in
        memory, let alone twice."""
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as lines:
            return self._submit_spooled(lines, parts, attempt, held, whole=whole)

    def _submit_spooled(
        self, lines: IO[bytes], parts: list[dict[str, Any]], attempt: int, held: str | None, *, whole: bool
    ) -> bool:
        enqueued = self.store.batches.enqueued(self.model)
        limit = live_config.batch_queue_limit(self.config, self.model)
        filling = Filling(
            Limits(self.config.batch_max_requests, self.config.batch_max_bytes, max(0, limit - enqueued)),
            queue_empty=enqueued <= 0,
        )
        requests = 0
        taken: list[dict[str, Any]] = []
        for part in parts:
            if requests and not self._time_to_build():  # what is built so far goes; the rest next poll
                break
            if part.get("batch_answer"):  # answered by an earlier run's batch: ValidatePart finishes it
                taken.append(part)
                continue
            line, tokens = self._line(part)
            if line is None:  # answered by a stored verdict: settled, no request
                taken.append(part)
                continue
            if not filling.fits(len(line), tokens):
                break
            filling.add(len(line), tokens)
            lines.write(line)
            requests += 1
            taken.append(part)
        if whole and len(taken) < len(parts):
            return False  # waits until the whole resubmission fits
        if not taken:
            return False  # the queue has no room: wait
        last = taken[-1]["part_id"]
        cursor = self._moves(held, last)
        if not requests:  # every taken part was reused
            self.store.clients.transact([cursor])
            self._moved(held, last)
            return True
        batches = self.store.batches.of_run(self.validation_id, self.run)
        seq = len(batches) + 1
        key = batch_key(self.run, seq)
        fields = {"first": taken[0]["part_id"], "last": last, "requests": requests, "attempt": attempt}
        if held:
            fields["held"] = held  # what recording the batch marks submitted (also for `_adopt`)
        if not self.store.batches.reserve(self.validation_id, self.run, seq, self.model, filling.tokens, limit, fields):
            return False  # another submission took the room meanwhile: wait
        batch = {"part_id": key, "tokens": filling.tokens, "model": self.model}
        if not self._running():  # cancelled meanwhile: the cancel may have looked for open batches already
            self.store.batches.end(self.validation_id, batch, BatchStatus.CANCELLED.value, "not created")
            return False
        try:
            with provider_errors():
                lines.seek(0)
                upload = self.client.files.create(
                    file=(f"{self.validation_id}-{self.run}-{seq}.jsonl", lines), purpose="batch"
                )
                created = self.client.batches.create(
                    input_file_id=upload.id,
                    endpoint=ENDPOINT,
                    completion_window=COMPLETION_WINDOW,
                    metadata={"validation_id": self.validation_id, "run": str(self.run), "seq": str(seq)},
                )
        except ModelRejected as exc:  # refused for good: these parts go the synchronous way
            self.store.batches.end(self.validation_id, batch, BatchStatus.FAILED.value, str(exc)[:500])
            self.store.clients.transact([cursor])
            self._moved(held, last)
            log.warning("batch %s of %s refused: %s", seq, self.validation_id, exc)
            return True
        except (UpstreamTimeout, ModelUnavailable):
            raise  # the provider may have made it: the record stays `submitting`, the next poll looks (`_adopt`)
        except Exception:
            self.store.batches.end(self.validation_id, batch, BatchStatus.FAILED.value, "not created")
            raise
        if not self.store.batches.created(self.validation_id, key, created.id, cursor):
            # A cancel ended the record while the batch was being created: cancel the batch too, so
            # that nothing runs (and bills) unseen.
            with contextlib.suppress(ModelRejected, ModelUnavailable, RateLimited, UpstreamTimeout), provider_errors():
                self.client.batches.cancel(created.id)
            log.warning("batch %s of %s was created after its record ended: cancelled", created.id, self.validation_id)
            return False
        count("BatchesSubmitted")
        self._moved(held, last)
        log.info(
            "batch %s (%s) of %s: %d requests, %d tokens",
            seq,
            created.id,
            self.validation_id,
            requests,
            filling.tokens,
        )
        return True

    def _header(self, part: dict[str, Any]) -> str | None:
        if not part.get("header"):
            return None
        index = int(part["file_index"])
        if index not in self._headers:
            self._headers[index] = self.store.files.header_text(part, self.record["files"][index].get("etag"))
        return self._headers[index]

    def _line(self, part: dict[str, Any]) -> tuple[bytes | None, int]:
        """The part's request line and its tokens; (None, 0) when a stored verdict answered it."""
        rules, files = self.record["rules"], self.record["files"]
        file = files[part["file_index"]]
        try:
            view, text = part_view(files, part, self._header(part)), self.store.files.part_text(part, file.get("etag"))
        except FileChanged as exc:  # nothing to ask: the part fails as the validator would fail it
            record_file_changed(self.store, self.validation_id, self.run, part, file, [r["id"] for r in rules], exc)
            return None, 0
        if self.reuse:
            digest = prompt.part_digest(view, text, rules, self.model)
            stored = self.store.answers.stored(digest)
            if stored is not None:
                if self.store.parts.record_reused(self.validation_id, part, stored["rules"], stored["model"], digest):
                    file = files[part["file_index"]]
                    self.store.events.after_part(self.validation_id, self.run, part, file, [r["id"] for r in rules])
                return None, 0
        nonce = prompt.new_nonce()
        messages = prompt.part_messages(view, text, rules, nonce)
        body = {
            "model": self.model,
            "messages": messages,
            "response_format": prompt.PART_RESPONSE_FORMAT,
            **completion_parameters(self.model, self.config.completion_max_tokens),
        }
        tokens = prompt_tokens_estimate(part, messages, self.config) + TOKEN_MARGIN
        return request_line(custom_id(part["part_id"], nonce), body), tokens

    # --- poll -------------------------------------------------------------------------------
    def poll(self) -> bool:
        """Read the open batches, collect the ended ones, submit what waits; True when done."""
        open_ = False
        for batch in self.store.batches.of_run(self.validation_id, self.run):
            if batch.get("ended"):
                continue
            if not batch.get("batch_id"):  # recorded, then the invocation died: created or not?
                adopted = self._adopt(batch)
                if adopted is None:
                    continue
                batch = adopted
            with provider_errors():
                found = self.client.batches.retrieve(batch["batch_id"])
            if not self._seen(batch, found):
                open_ = True
        everything = self.submit() if self._running() else True
        self.show()
        return (
            everything
            and not open_
            and not any(not b.get("ended") for b in self.store.batches.of_run(self.validation_id, self.run))
        )

    def _adopt(self, batch: dict[str, Any]) -> dict[str, Any] | None:
        """A batch recorded `submitting` by an invocation that died (or whose create call failed
        ambiguously): the provider's batch with its metadata (validation, run, sequence), recorded now
        with what its creation would have moved; else the record ended as never created (its tokens
        back in the queue, its parts submitted again). The record as it now is, or None."""
        since = epoch_of(str(batch["created_at"])) - ADOPT_SLACK_SECONDS
        wanted = {"validation_id": self.validation_id, "run": str(self.run), "seq": str(batch["seq"])}
        found = None
        with provider_errors():
            for listed in self.client.batches.list(limit=100):  # newest first, pages followed
                if listed.created_at < since:
                    break
                if (listed.metadata or {}) == wanted:
                    found = listed
                    break
        if found is None:
            self.store.batches.end(self.validation_id, batch, BatchStatus.FAILED.value, "not created")
            return None
        held, last = batch.get("held"), str(batch["last"])
        if not self.store.batches.created(self.validation_id, batch["part_id"], found.id, self._moves(held, last)):
            return None  # another poll recorded (or ended) it meanwhile
        self._moved(held, last)
        count("BatchesSubmitted")
        log.info("batch %s of %s was created but not recorded: adopted", found.id, self.validation_id)
        return {**batch, "batch_id": found.id, "status": BatchStatus.VALIDATING.value}

    def _running(self) -> bool:
        state = self.store.validations.get(self.validation_id, "status", "run")
        return state["status"] == "RUNNING" and int(state["run"]) == self.run

    def _seen(self, batch: dict[str, Any], found: Any) -> bool:
        """The provider's state of a batch on its record; an ended one collected. True when it ended."""
        counts = (
            found.request_counts.model_dump() if found.request_counts else {"total": 0, "completed": 0, "failed": 0}
        )
        counts = {k: int(counts.get(k, 0)) for k in ("total", "completed", "failed")}
        if found.status != batch["status"] or counts != batch.get("request_counts"):
            self.store.batches.seen(self.validation_id, batch["part_id"], found.status, counts)
        if BatchStatus(found.status) not in ENDED:
            return False
        if not self._collect(batch, found):  # time ran short: the next poll collects the rest
            return False
        if self.store.batches.end(self.validation_id, batch, found.status, _errors_of(found)):
            self._forget_files(found)
        return True

    def _forget_files(self, found: Any) -> None:
        """An ended batch's files deleted at the provider (best effort: they also expire there)."""
        for file_id in (found.input_file_id, found.output_file_id, found.error_file_id):
            if file_id:
                try:
                    with provider_errors():
                        self.client.files.delete(file_id)
                except (ModelRejected, ModelUnavailable, RateLimited, UpstreamTimeout) as exc:
                    log.info("file %s of batch %s not deleted: %s", file_id, found.id, exc)

    def _file(self, file_id: str | None) -> Read:
        if not file_id:
            return Read([], [])
        with provider_errors():
            content = self.client.files.content(file_id).read()
        return read_results(content)

    def _collect(self, batch: dict[str, Any], found: Any) -> bool:
        """The ended batch's answers stored (each once: conditional writes); False when the invocation's
        time ran short first (what is stored stays; the next poll goes on)."""
        output, errors = self._file(found.output_file_id), self._file(found.error_file_id)
        if found.status == BatchStatus.FAILED:
            log.warning(
                "batch %s of %s failed: %s; its parts are asked synchronously",
                found.id,
                self.validation_id,
                _errors_of(found),
            )
        parts = {p["part_id"]: p for p in self.store.parts.in_range(self.validation_id, batch["first"], batch["last"])}
        settled = kept = 0
        for answered in output.answered + errors.answered:
            part = parts.get(answered.part_id)
            if part is None or part["status"] != PartStatus.PENDING:
                continue
            if not self._time_left():
                log.info("batch %s of %s: time short, %d answers stored; the next poll goes on", found.id,
                         self.validation_id, settled)  # fmt: skip
                return False
            answer = _answer_of(answered.body)
            note = {
                "batch": found.id,
                "nonce": answered.nonce,
                "content": answer.content,
                "usage": answer.usage,
                "model": answer.model,
                "finish_reason": answer.finish_reason,
            }
            attempt = self.store.validations.attempt_item(
                self.validation_id, answered.part_id, answer.usage, "batch", answer.model
            )
            if self.store.parts.keep_batch_answer(self.validation_id, answered.part_id, note, attempt):
                count("ModelCalls")
                count("PromptTokens", answer.usage["prompt_tokens"])
                count("CompletionTokens", answer.usage["completion_tokens"])
            elif (part.get("batch_answer") or {}).get("batch") != found.id:
                continue  # settled meanwhile
            kept += 1
            file = self.record["files"][part["file_index"]]
            try:
                view = part_view(self.record["files"], part, self._header(part))
                text = self.store.files.part_text(part, file.get("etag"))
            except FileChanged as exc:  # the answer is kept (and paid); its text is gone: the part fails
                rule_ids = [r["id"] for r in self.record["rules"]]
                record_file_changed(self.store, self.validation_id, self.run, part, file, rule_ids, exc)
                continue
            if settle_answered(
                self.store,
                self.validation_id,
                self.run,
                part,
                view,
                text,
                self.record["files"][part["file_index"]],
                self.record["rules"],
                answer,
                self.model,
                self.reuse,
            ):
                settled += 1
        expired = [u.part_id for u in errors.unanswered if u.code == EXPIRED_CODE and u.part_id in parts]
        failed = [
            u for u in output.unanswered + errors.unanswered if u.code != EXPIRED_CODE and u.code != "batch_cancelled"
        ]
        malformed = output.malformed + errors.malformed
        count("BatchRequestsLeft", malformed + len(failed))
        count("BatchRequestsExpired", len(expired))
        if malformed:
            log.warning(
                "batch %s of %s: %d malformed result lines; those parts are asked synchronously",
                found.id,
                self.validation_id,
                malformed,
            )
        if failed:
            log.info(
                "batch %s of %s: %d requests failed (%s); asked synchronously",
                found.id,
                self.validation_id,
                len(failed),
                failed[0].code,
            )
        if expired and found.status == BatchStatus.EXPIRED:
            if int(batch.get("attempt", 1)) < 2:
                self.store.batches.hold(self.validation_id, self.run, int(batch["seq"]), expired)
                log.info(
                    "batch %s of %s expired with %d requests unexecuted: resubmitted once",
                    found.id,
                    self.validation_id,
                    len(expired),
                )
            else:
                reason = {
                    "type": "BatchExpired",
                    "message": "the Batch API did not execute this part's request within its 24h window, twice",
                }
                for part_id in expired:
                    self.store.parts.record_failure(self.validation_id, parts[part_id], reason)
        log.info(
            "batch %s of %s %s: %d answers, %d stored as results",
            found.id,
            self.validation_id,
            found.status,
            kept,
            settled,
        )
        return True

    def show(self) -> None:
        """The validation's batch summary; a progress event when it changed."""
        batches = self.store.batches.of_run(self.validation_id, self.run)
        if batches and self.store.batches.show(self.validation_id, summary(batches)):
            self.store.events.emit(
                self.validation_id,
                events.PROGRESS,
                lambda record: {**events.progress_of(record), "batch": record.get("batch")},
            )

    # --- cancel -----------------------------------------------------------------------------
    def cancel(self) -> dict[str, int]:
        """Cancel the run's open batches and collect what they answered (module docstring)."""
        cancelled = collected = 0
        waiting = []
        for batch in self.store.batches.of_run(self.validation_id, self.run):
            if batch.get("ended"):
                continue
            if not batch.get("batch_id"):  # created or not? (an invocation died before recording it)
                adopted = self._adopt(batch)
                if adopted is None:
                    continue
                batch = adopted
            try:
                with provider_errors():
                    self.client.batches.cancel(batch["batch_id"])
                cancelled += 1
            except ModelRejected:  # 409: it ended meanwhile
                pass
            waiting.append(batch)
        deadline = time.monotonic() + self.config.batch_cancel_wait_seconds
        while waiting:
            still = []
            for batch in waiting:
                try:
                    with provider_errors():
                        found = self.client.batches.retrieve(batch["batch_id"])
                except ModelRejected as refused:  # the provider refuses to say (a revoked key): nothing to collect
                    self.store.batches.end(self.validation_id, batch, BatchStatus.CANCELLING.value, str(refused)[:500])
                    log.warning("batch %s of %s: %s; given up", batch["batch_id"], self.validation_id, refused)
                    continue
                if self._seen(batch, found):
                    collected += 1
                else:
                    still.append(batch)
            waiting = still
            if not waiting or time.monotonic() > deadline or not self._time_left():
                break
            time.sleep(0.5)
        for batch in waiting:  # still cancelling: what they answered is not collected
            self.store.batches.end(self.validation_id, batch, BatchStatus.CANCELLING.value, "given up while cancelling")
            log.warning(
                "batch %s of %s still cancelling: its answers are not collected", batch["batch_id"], self.validation_id
            )
        self.show()
        return {"cancelled": cancelled, "collected": collected, "left": len(waiting)}


def _answer_of(body: dict[str, Any]) -> Answer:
    """A chat completion body of the output file as an Answer, served (and billed) at the batch tier."""
    usage = body.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    choices = body.get("choices") or [{}]
    message = choices[0].get("message") or {}
    return Answer(
        str(message.get("content") or ""),
        {
            "prompt_tokens": int(usage.get("prompt_tokens", 0)),
            "completion_tokens": int(usage.get("completion_tokens", 0)),
            "cached_prompt_tokens": int(details.get("cached_tokens") or 0),
        },
        str(body.get("model", "")),
        {},
        str(choices[0].get("finish_reason") or "stop"),
        "batch",
    )


def _errors_of(found: Any) -> str | None:
    errors = getattr(found, "errors", None)
    data = getattr(errors, "data", None) or []
    return json.dumps([{"code": e.code, "message": e.message} for e in data])[:500] if data else None

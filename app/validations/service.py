"""Validations: create, read, list, results, retry, cancel, history."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import anyio
import anyio.to_thread

from app.aws.errors import aws_failure
from app.errors import (
    AppError,
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    TooManyRequests,
    Unprocessable,
    UpstreamError,
)
from app.identity.principal import Principal
from app.observability.logs import bind
from app.pagination import decode_cursor, encode_cursor, is_key
from app.settings import Settings
from app.uploads.records import CompletedUpload
from app.validations import estimate as estimating
from app.validations.intake import LaneIn, RulesetVersion, Submission
from app.validations.ports import (
    Events,
    Executions,
    Functions,
    LiveLimits,
    Models,
    Notifications,
    Prices,
    Quotas,
    Rulesets,
    Spending,
    Store,
    Uploads,
    Users,
)
from app.validations.records import QueuePosition, StoredFile, Validation
from core import detail, ends, pricing, spend, webhooks
from core.bounds import file_cost_floor, size_cost_floor
from core.clock import expiry, iso_of, now_iso
from core.planning import plan_file, size_guess
from core.quota import Quota, Refusal, rate_limit_headers
from core.records import MAX_MAP_ITEMS, TERMINAL, PartStatus, ValidationStatus, batches, file_batches
from core.results import file_result
from core.spend import Budget
from core.tokens import max_token_bytes

log = logging.getLogger(__name__)
_CURSOR_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


class _OverCapacity(Exception):
    """Planning stopped: the files planned so far already cost more than the capacity."""

    def __init__(self, estimate: int) -> None:
        super().__init__(estimate)
        self.estimate = estimate


def _plan(
    submission: Submission,
    validation_id: str,
    budget: int,
    completion_tokens: int,
    capacity: int | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """Files, part records and estimated tokens (every part call and combine call: prompt + completion allowance).

    With a `capacity`, planning stops (`_OverCapacity`) after the first file that takes the
    estimate above it: a request's tokenizing is bounded by its owner's capacity."""
    rules = [{"id": r.id, "text": r.text} for r in submission.rules]
    files, parts, estimate = [], [], 0
    for index, document in enumerate(submission.documents):
        if capacity is not None and estimate > capacity:
            raise _OverCapacity(estimate)
        key = f"validations/{validation_id}/{index:05d}"
        planned = plan_file(
            validation_id, index, document.name, key, document.content, rules, budget, completion_tokens
        )
        files.append(planned.file)
        parts.extend(planned.parts)
        estimate += planned.estimate
    if capacity is not None and estimate > capacity:
        raise _OverCapacity(estimate)
    return files, parts, estimate


def _execution_input(
    validation_id: str, run: int, part_ids: list[str], combine_files: list[int], unplanned: list[int] | None = None
) -> dict[str, Any]:
    """Only ids travel through the workflow: part-id ranges for the Map, file ranges for the combine
    step; and the uploaded files the plan step reads first (it answers the ranges with theirs added)."""
    values: dict[str, Any] = {
        "validation_id": validation_id,
        "run": run,
        "batches": batches(part_ids, MAX_MAP_ITEMS),
        "combine": file_batches(combine_files),
    }
    if unplanned:
        values["plan_files"] = unplanned
    return values


def _cost_floor(submission: Submission, budget: int, completion_tokens: int, uploads: list[CompletedUpload]) -> int:
    """At most what the submission will be estimated at (core/bounds.py), from its bytes alone
    (an uploaded file's from its size)."""
    return sum(
        file_cost_floor(d.content, budget, completion_tokens, max_token_bytes()) for d in submission.documents
    ) + sum(size_cost_floor(u.size, budget, completion_tokens, max_token_bytes()) for u in uploads)


def _uploaded_files(
    submission: Submission, uploads: list[CompletedUpload], budget: int, completion_tokens: int
) -> tuple[list[dict[str, Any]], int]:
    """The uploaded files' records, after the inline ones, with the tokens and calls their sizes
    are guessed at (core/planning.size_guess) until the plan step counts them; and the guesses' sum."""
    rules = [{"id": r.id, "text": r.text} for r in submission.rules]
    files, total = [], 0
    for upload in uploads:
        tokens, calls = size_guess(upload.name, upload.size, rules, budget, completion_tokens)
        files.append(
            {
                "name": upload.name,
                "key": upload.key,
                "size": upload.size,
                "parts": 0,
                "upload_id": upload.upload_id,
                "etag": upload.etag,
                **({"sha256": upload.sha256} if upload.sha256 and not upload.sha256_checked else {}),
                "guess": tokens,
                "guess_calls": calls,  # not stored: the budget reads it
            }
        )
        total += tokens
    return files, total


def _over_capacity(estimate: int, capacity: int) -> Unprocessable:
    """`estimate` is a lower bound: the floor from bytes, or the files planned before planning stopped."""
    return Unprocessable(
        f"This validation needs at least {estimate} tokens; your quota's capacity is {capacity}. "
        "Split the batch or ask an admin for a larger quota.",
        limit="capacity_tokens",
        limit_value=capacity,
        cost=estimate,
    )


async def _quietly(step: Awaitable[Any], what: str) -> None:
    """A write whose failure loses nothing (the next event or read carries it): log, go on."""
    try:
        await step
    except Exception:  # noqa: BLE001
        log.exception("%s failed", what)


def _ruleset_record(resolved: RulesetVersion | None) -> dict[str, Any] | None:
    if resolved is None:
        return None
    return {"owner": resolved.owner, "name": resolved.name, "version": resolved.version}


class _NotStarted(Exception):
    """Creating a validation failed before its execution started; what was stored is undone."""

    def __init__(self, error: AppError) -> None:
        super().__init__(str(error))
        self.error = error


class ValidationService:
    def __init__(
        self,
        store: Store,
        executions: Executions,
        quotas: Quotas,
        users: Users,
        events: Events,
        settings: Settings,
        notifications: Notifications | None = None,
        plan_limiter: anyio.CapacityLimiter | None = None,
        rulesets: Rulesets | None = None,
        prices: Prices | None = None,
        spending: Spending | None = None,
        limits: LiveLimits | None = None,
        uploads: Uploads | None = None,
        models: Models | None = None,
        functions: Functions | None = None,
    ) -> None:
        self.functions = functions  # the batch lane's Lambda (a cancel cancels the open batches); None: none
        self.models = models  # the admin's list of models (app/models); None: the configured model only
        self.uploads = uploads  # files uploaded straight to S3 (app/uploads); None: inline files only
        self.limits = limits  # the governor's target (time estimates)
        self.spending = spending  # budgets and spend history (core/spend.py); None: no budgets
        self.prices = prices  # None: validations record no prices, and their cost is null
        self.plan_limiter = plan_limiter
        self.rulesets = rulesets  # stored rule sets a submission may name (app/rulesets)
        self.store = store
        self.users = users
        self.events = events
        self.executions = executions
        self.quotas = quotas
        self.settings = settings
        self.notifications = notifications  # the owner's webhook, for the ends this service writes

    # --- create -------------------------------------------------------------------------
    async def create(
        self, principal: Principal, submission: Submission, idempotency_key: str | None
    ) -> tuple[Validation, bool]:
        """(validation, created). With a repeated Idempotency-Key, the first validation and False."""
        validation_id = uuid.uuid4().hex
        claim_key = None
        if idempotency_key is not None:
            if not 1 <= len(idempotency_key) <= 255:
                raise BadRequest("Idempotency-Key must be 1-255 characters.", field="Idempotency-Key")
            claim_key = f"{principal.user_id}#{idempotency_key}"
            fingerprint = submission.fingerprint()
            held = await self.store.claim_idempotency_key(claim_key, fingerprint, validation_id)
            if held is not None:
                replayed = await self._claimed_elsewhere(claim_key, held, fingerprint, validation_id)
                if replayed is not None:
                    return replayed, False
        bind(validation_id=validation_id)  # every later log line of this request names it
        try:
            validation = await self._start_new(principal, submission, validation_id)
        except _NotStarted as failed:
            # Nothing was started (and what was stored is undone): the key may be used again.
            if claim_key:
                await self.store.release_idempotency_key(claim_key)
            raise failed.error from failed.error.__cause__
        # From here the execution runs: the key answers with this validation, whatever fails next.
        if claim_key:
            await self.store.complete_idempotency_key(claim_key, validation_id)
        return await self._announce(validation, principal.quota), True

    async def _claimed_elsewhere(
        self, claim_key: str, held: dict[str, Any], fingerprint: str, validation_id: str
    ) -> Validation | None:
        """The validation a held key answers with; None when this request took over a crashed
        request's claim (pending past its lease, and its validation never stored)."""
        if held.get("state") != "done" and held.get("lease_until", 0) < time.time():
            if held["request_hash"] != fingerprint:
                raise Unprocessable(
                    "This Idempotency-Key was used with a different request body.", field="Idempotency-Key"
                )
            stored = await self.store.get(held["validation_id"])
            if stored is not None:  # it got as far as storing: that request's validation it is
                await self.store.complete_idempotency_key(claim_key, stored.id)
                return stored
            if await self.store.take_over_idempotency_key(claim_key, held, fingerprint, validation_id):
                return None
            held = {**held, "state": "pending"}  # another request took it over first: it is in progress
        return await self._replay(held, fingerprint)

    async def _replay(self, held: dict[str, Any], fingerprint: str) -> Validation:
        if held["request_hash"] != fingerprint:
            raise Unprocessable("This Idempotency-Key was used with a different request body.", field="Idempotency-Key")
        if held.get("state") != "done":
            raise Conflict(
                "A request with this Idempotency-Key is still being processed; retry shortly.",
                headers={"Retry-After": "1"},
            )
        bind(validation_id=held["validation_id"])
        validation = await self.store.get(held["validation_id"])
        if validation is None:
            raise Conflict("The validation of this Idempotency-Key no longer exists.")
        return validation

    # --- estimate (a dry run) ------------------------------------------------------------
    async def estimate(self, principal: Principal, submission: Submission) -> dict[str, Any]:
        """What the submission would cost and when it would run, storing and starting nothing
        (app/validations/estimate.py says how each number is made). The same checks and errors
        as `create`; instead of a 429, says what the quota, the queue and the budget would do now."""
        if submission.uploads:
            raise Unprocessable(
                "A dry run estimates inline files; uploaded files are read and counted once the validation runs.",
                field="uploads",
            )
        submission = await self._with_ruleset(principal, submission)
        lane = self._lane(principal, submission)
        model, model_tpm = await self._model(submission, lane)
        s = self.settings
        files, parts, reservation = await self._planned(principal, submission, "estimate")
        questions = await anyio.to_thread.run_sync(
            estimating.part_questions, submission, files, parts, model, limiter=self.plan_limiter
        )
        reused = await self.store.reusable([q.digest for q in questions]) if submission.reuse else set()
        prefix = await anyio.to_thread.run_sync(estimating.shared_prefix_tokens, submission)
        combine_prefix = await anyio.to_thread.run_sync(
            functools.partial(estimating.shared_prefix_tokens, submission, combine=True)
        )
        combine = await anyio.to_thread.run_sync(
            estimating.combine_plans, submission, files, parts, s.part_max_tokens, limiter=self.plan_limiter
        )
        usage = estimating.tokens(questions, reused, combine, prefix, combine_prefix)
        ratios, source = await self._ratios(model)
        table = await self.prices.table() if self.prices is not None else {}
        charged = usage.prompt_tokens + usage.calls * s.completion_max_tokens  # what quota and governor reserve
        return {
            "dry_run": True,
            "model": model,
            "tier": lane.tier,
            "ruleset": submission.resolved.reference if submission.resolved else None,
            "files": len(files),
            "parts": len(parts),
            "reused_parts": len(questions) - usage.part_calls,
            "model_calls": {"parts": usage.part_calls, "combine": usage.combine_calls, "total": usage.calls},
            "prompt_tokens": {
                "parts": usage.part_prompt_tokens,
                "combine": usage.combine_prompt_tokens,
                "total": usage.prompt_tokens,
                "cached": usage.cached_prompt_tokens,
                "shared_prefix": prefix,
            },
            "completion_tokens": {
                "p50": round(usage.prompt_tokens * ratios[0]),
                "p90": round(usage.prompt_tokens * ratios[1]),
                "ratio": {"p50": ratios[0], "p90": ratios[1], "source": source},
            },
            "cost_usd": estimating.costs(table, model, usage, (ratios[0], ratios[1])),
            "reserved_tokens": reservation,
            "charged_tokens": charged,
            **await self._outlook(
                principal, reservation, charged, pricing.stored_prices(table, model), files, parts, ratios, model_tpm
            ),
        }

    async def _outlook(
        self,
        principal: Principal,
        reservation: int,
        charged: int,
        prices: dict[str, Any] | None,
        files: list[dict[str, Any]],
        parts: list[dict[str, Any]],
        ratios: tuple[float, float],
        model_tpm: int | None = None,
    ) -> dict[str, Any]:
        """What a real submission would meet now: the quota, the queue, the budget; and when it would run."""
        quota, now = principal.quota, time.time()
        target_tpm = model_tpm or (await self.limits.target_tpm() if self.limits is not None else None)
        run_seconds = round(charged / (target_tpm / 60), 1) if target_tpm else None
        if quota is None:
            return {
                "would": {"quota": "admit", "reason": None, "budget": None},
                "duration_seconds": {"start_in": 0.0, "run": run_seconds},
            }
        bucket = await self.quotas.bucket(principal.user_id)
        ahead = sum(await self.quotas.queue_ahead(principal.user_id, "~")) if bucket.queued else 0
        wait = quota.wait_for(ahead + reservation, bucket.tat, now)
        verdict, reason = "admit", None
        if bucket.queued >= quota.max_queued:
            verdict, reason = "refuse", "max_queued"
        elif bucket.queued or bucket.running >= quota.max_running or wait > 0:
            reason = "queue" if bucket.queued else ("max_running" if bucket.running >= quota.max_running else "tokens")
            verdict = "queue" if principal.on_limit == "queue" else "refuse"
        budget = Budget.of(quota.as_dict())
        budget_view = None
        if budget is not None and self.spending is not None:
            amount = self._budget_cost(prices, files, parts, reservation, ratios)
            held = await self.spending.period(principal.user_id, spend.period_key(budget.period, now)) or {}
            left = budget.room(Decimal(str(held.get("committed_usd", 0))))
            budget_view = {
                "verdict": "refuse" if amount is None or amount > left else "admit",
                "estimate_usd": pricing.shown(amount),
                "remaining_usd": pricing.shown(left),
                "resets_at": iso_of(spend.resets_at(budget.period, now)),
            }
        return {
            "would": {"quota": verdict, "reason": reason, "budget": budget_view},
            "duration_seconds": {"start_in": round(wait, 1), "run": run_seconds},
        }

    async def _model(self, submission: Submission, lane: LaneIn) -> tuple[str, int | None]:
        """The model the submission asks (or the default of the admin's list) and its target TPM;
        422 naming `model` when it is not listed, or `tier` when the lane is not one it may use."""
        if self.models is None:
            if submission.model not in (None, self.settings.openai_model):
                raise Unprocessable(f"The model {submission.model!r} is not offered here.", field="model")
            return self.settings.openai_model, None
        entry = await self.models.resolve(submission.model)
        if not entry.allows(lane.tier):
            raise Unprocessable(
                f"The model {entry.name!r} is not offered at the {lane.tier} tier; "
                f"its tiers: {', '.join(entry.tiers)}.",
                field="tier",
            )
        return entry.name, entry.target_tpm

    async def _batch_sync_tier(self, submission: Submission, lane: LaneIn) -> str | None:
        """A batch validation's tier for its synchronous calls: as asked, or standard when the model is not
        offered at flex; None on the other lanes."""
        if lane.tier != "batch":
            return None
        if lane.batch_sync_tier == "flex" and self.models is not None:
            return "flex" if (await self.models.resolve(submission.model)).allows("flex") else "standard"
        return lane.batch_sync_tier

    @staticmethod
    def _lane(principal: Principal, submission: Submission) -> LaneIn:
        """The tier the submission asks, or its owner's default; 422 naming `tier` when the owner's
        quota does not allow it (the model's tiers are checked with the model: `_model`)."""
        quota = principal.quota
        lane = submission.lane or LaneIn(tier=quota.default_tier if quota is not None else "standard")  # type: ignore[arg-type]  # a stored tier
        if quota is not None and lane.tier not in quota.tiers:
            raise Unprocessable(
                f"Tier {lane.tier!r} is not allowed for you; your tiers: {', '.join(quota.tiers)}.", field="tier"
            )
        return lane

    async def _with_ruleset(self, principal: Principal, submission: Submission) -> Submission:
        """The submission with its stored rule set's rules first, then its inline rules (ids unique,
        `max_rules` for them all)."""
        resolved = submission.resolved
        if resolved is None and submission.ruleset is not None:
            if self.rulesets is None:
                raise Unprocessable("Stored rule sets are not available here.", field="ruleset")
            resolved = await self.rulesets.resolve(principal, submission.ruleset)
        if resolved is None:
            return submission
        rules = [*resolved.rules, *submission.rules]
        ids = [r.id for r in rules]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise Unprocessable(
                f"Inline rule ids repeat ids of rule set {resolved.reference!r}: {', '.join(repeated)}.",
                field="rules",
            )
        if len(rules) > self.settings.max_rules:
            raise Unprocessable(
                f"{len(rules)} rules with rule set {resolved.reference!r}; the limit is {self.settings.max_rules}.",
                field="rules",
                limit="max_rules",
                limit_value=self.settings.max_rules,
            )
        if not rules:
            raise Unprocessable(f"Rule set {resolved.reference!r} has no rules.", field="ruleset")
        return replace(submission, rules=rules, resolved=resolved)

    async def _taken(self, principal: Principal, submission: Submission) -> list[CompletedUpload]:
        """The submission's uploads, each confirmed the caller's and complete (app/uploads), taken
        for this validation; 422 naming `uploads[i]` when one's name repeats another file's."""
        if not submission.uploads:
            return []
        if self.uploads is None:
            raise Unprocessable("Uploads are not available here.", field="uploads")
        uploads = await self.uploads.take(principal, list(submission.uploads))
        names = {d.name for d in submission.documents}
        for index, upload in enumerate(uploads):
            if upload.name in names:
                raise Unprocessable(
                    f"File names must be unique; repeated: {upload.name}.", field=f"uploads[{index}]", file=upload.name
                )
            names.add(upload.name)
        return uploads

    async def _planned(
        self,
        principal: Principal,
        submission: Submission,
        validation_id: str,
        uploads: Sequence[CompletedUpload] = (),
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
        """Files, part records and estimated tokens; 422 when the owner's capacity cannot hold them.

        Uploaded files follow the inline ones, unplanned: their text is read by the plan step, so
        here they count at a guess from their size (core/planning.size_guess), at most what the
        capacity leaves, and the floor from their sizes alone refuses what cannot fit."""
        quota, s = principal.quota, self.settings
        capacity = quota.capacity_tokens if quota is not None else None
        # Cheap before costly: a floor from the bytes alone refuses what cannot fit before any tokenizing
        # (counting line breaks in C; on a worker thread all the same, it reads every byte).
        floor = await anyio.to_thread.run_sync(
            _cost_floor, submission, s.part_max_tokens, s.completion_max_tokens, list(uploads)
        )
        if capacity is not None and floor > capacity:
            raise _over_capacity(floor, capacity)
        uploaded, guessed = _uploaded_files(submission, list(uploads), s.part_max_tokens, s.completion_max_tokens)
        upload_floor = sum(
            size_cost_floor(u.size, s.part_max_tokens, s.completion_max_tokens, max_token_bytes()) for u in uploads
        )
        try:
            # Off the event loop, and at most `plan_concurrency` submissions tokenized at once per process.
            files, parts, estimate = await anyio.to_thread.run_sync(
                _plan,
                submission,
                validation_id,
                s.part_max_tokens,
                s.completion_max_tokens,
                None if capacity is None else capacity - upload_floor,
                limiter=self.plan_limiter,
            )
        except _OverCapacity as over:
            raise _over_capacity(over.estimate + upload_floor, capacity or 0) from None
        total = estimate + guessed
        return [*files, *uploaded], parts, total if capacity is None else min(total, capacity)

    async def _start_new(self, principal: Principal, submission: Submission, validation_id: str) -> Validation:
        try:
            submission = await self._with_ruleset(principal, submission)
            lane = self._lane(principal, submission)
            model, _ = await self._model(submission, lane)
            sync_tier = await self._batch_sync_tier(submission, lane)
            table = await self.prices.table() if self.prices else None
        except AppError as refused:
            raise _NotStarted(refused) from None
        prices = pricing.stored_prices(table, model) if table is not None else None
        try:
            uploads = await self._taken(principal, submission)
            files, parts, estimate = await self._planned(principal, submission, validation_id, uploads)
        except AppError as refused:
            raise _NotStarted(refused) from None  # nothing stored: the key may be used again
        inline = len(submission.documents)
        unplanned = list(range(inline, len(files)))
        reservation = await self._reserve_budget(principal, prices, files, parts, estimate, lane, model)
        created = now_iso()
        validation = Validation(
            id=validation_id,
            owner=principal.user_id,
            status=ValidationStatus.QUEUED,
            queue_key=f"{created}#{validation_id}",
            run_cost=estimate,
            created_at=created,
            expires_at=expiry(self.settings.retention_days),
            total_parts=len(parts),
            total_combines=sum(f["parts"] > 1 for f in files),
            estimated_tokens=estimate,
            files=tuple(StoredFile.of(f) for f in files),
            rules=[{"id": r.id, "text": r.text} for r in submission.rules],
            reuse=submission.reuse,
            budget_key=reservation[0] if reservation else None,
            budget_reserved=reservation[1] if reservation else None,
            ruleset=_ruleset_record(submission.resolved),
            model=model,
            prices=prices,
            tier=lane.tier,
            flex_deadline_seconds=lane.flex_deadline_seconds if lane.tier == "flex" or sync_tier == "flex" else None,
            flex_fallback=lane.flex_fallback if lane.tier == "flex" else None,
            batch_sync_tier=sync_tier,
            kind=submission.kind,
            priority=submission.priority,  # orders the owner's validations in the governor (core/fairness.py)
            execution_arn=self.executions.arn_of(self._execution_name(validation_id, 1)),
            unplanned=unplanned or None,
            guessed_tokens=estimate if unplanned else None,
            inline_estimate=sum(p["estimate"] for p in parts) + sum(f["combine_estimate"] for f in files[:inline])
            if unplanned
            else None,
        )
        record = validation.to_item()
        keys = [f["key"] for f in files[:inline]]  # the uploaded files' objects stay theirs: never undone
        name = self._execution_name(validation_id, 1)
        try:
            await self.store.put_files(
                {f["key"]: d.content for f, d in zip(files[:inline], submission.documents, strict=True)}
            )
            await self.store.put_parts([{**c, "expires_at": record["expires_at"]} for c in parts])
            record = await self.store.put_detail(record)  # the files and rules, off the record (core/detail.py)
            await self.quotas.enqueue(record, principal.quota)  # counted in the owner's queue: 429 past max_queued
            await self._admit_or_refuse(principal, validation)
            arn = await self._start_execution(
                name,
                _execution_input(
                    validation_id,
                    1,
                    [c["part_id"] for c in parts],
                    [i for i, f in enumerate(files) if f["parts"] > 1],
                    unplanned,
                ),
            )
        except Exception as exc:
            # Nothing half-written: undo in reverse order (the reservation and running slot
            # first, while the record that holds them exists), then report.
            await self._undo(validation_id, keys, [*(c["part_id"] for c in parts), detail.KEY], principal, reservation)
            if isinstance(exc, AppError):
                raise _NotStarted(exc) from None
            error = aws_failure(exc) or UpstreamError(f"Could not store or start the validation: {type(exc).__name__}")
            error.__cause__ = exc
            raise _NotStarted(error) from exc
        if arn != record["execution_arn"]:  # AWS documents the format; trust what it answered
            await self.store.update(validation_id, {"execution_arn": arn})
        return validation

    async def _reserve_budget(
        self,
        principal: Principal,
        prices: dict[str, Any] | None,
        files: list[dict[str, Any]],
        parts: list[dict[str, Any]],
        estimate: int,
        lane: LaneIn | None = None,
        model: str | None = None,
    ) -> tuple[str, Decimal] | None:
        """Reserve the submission's estimated cost in its owner's budget period (core/spend.py):
        (period key, amount), None without a budget; 429 naming `budget` when it has no room."""
        budget = Budget.of(principal.quota.as_dict()) if principal.quota is not None else None
        if budget is None or self.spending is None:
            return None
        # A flex lane that falls back may be served at standard: its budget holds the standard price.
        # A batch lane's parts are answered at the batch price (re-asks and combine calls at standard
        # are what a run may cost beyond its estimate).
        tier = "flex" if lane is not None and lane.tier == "flex" and lane.flex_fallback == "fail" else "standard"
        if lane is not None and lane.tier == "batch":
            tier = "batch"
        model = model or self.settings.openai_model
        amount = self._budget_cost(prices, files, parts, estimate, (await self._ratios(model))[0], tier)
        now = time.time()
        key = spend.period_key(budget.period, now)
        if amount is None:
            raise _NotStarted(
                Unprocessable(
                    f"Your quota has a spend budget, and the model {model!r} has no "
                    f"{tier} price: an admin sets one (PATCH /admin/prices).",
                    field="model",
                )
            )
        # (The condition alone lets a first reservation through whatever its size: nothing is stored yet.)
        if amount <= budget.max_usd and await self.spending.reserve(
            principal.user_id, key, amount, budget, int(now) + spend.KEEP_SECONDS
        ):
            return key, amount
        resets = spend.resets_at(budget.period, now)
        held = await self.spending.period(principal.user_id, key) or {}
        left = budget.room(Decimal(str(held.get("committed_usd", 0))))
        raise _NotStarted(
            TooManyRequests(
                f"This validation is estimated at ${amount:.4f}; your {budget.period}ly spend budget of "
                f"${budget.max_usd} has ${left:.4f} left until it resets at {iso_of(resets)}.",
                headers={"Retry-After": str(max(1, int(resets - now) + 1))},
                limit="budget",
                limit_value=float(budget.max_usd),
                cost_usd=float(amount),
                remaining_usd=float(left),
                resets_at=iso_of(resets),
            )
        )

    def _budget_cost(
        self,
        prices: dict[str, Any] | None,
        files: list[dict[str, Any]],
        parts: list[dict[str, Any]],
        estimate: int,
        ratios: tuple[float, float],
        tier: str = "standard",
    ) -> Decimal | None:
        """What a budget reserves for a submission: its planned prompt tokens at the tier's price,
        with completion tokens at the model's p90 completion ÷ prompt ratio (estimate.py)."""
        if not prices or tier not in prices:
            return None
        calls = len(parts) + sum(int(f.get("combine_calls", 0)) + int(f.get("guess_calls", 0)) for f in files)
        prompt_tokens = max(0, estimate - calls * self.settings.completion_max_tokens)
        price = pricing.Price.of(prices[tier])
        return price.cost(prompt_tokens, 0, round(prompt_tokens * ratios[1]))

    async def _ratios(self, model: str) -> tuple[tuple[float, float], str]:
        """The model's completion ÷ prompt ratio (p50, p90) and where it came from: this deployment's
        history, else the configured prior."""
        found = await self.spending.ratios(model) if self.spending is not None else None
        return (found, "history") if found else (self.settings.completion_ratio_prior, "prior")

    async def _announce(self, validation: Validation, quota: Quota | None) -> Validation:
        """After the start: tell the viewers, answer with the stored state. A failure here loses
        nothing (the Lambdas' next event and the next read carry the state)."""
        await _quietly(self.events.append_status(validation.id), f"announcing validation {validation.id}")
        try:
            return await self._with_queue(await self.store.get(validation.id) or validation, quota)
        except Exception:  # noqa: BLE001 - the validation runs; the next read shows its state
            log.exception("validation %s started; reading it back failed", validation.id)
            return validation

    async def _start_execution(self, name: str, payload: dict[str, Any]) -> str:
        """StartExecution; when its answer is lost but the execution exists, it started."""
        try:
            return await self.executions.start(name, payload)
        except Exception:
            arn = self.executions.arn_of(name)
            if await self._exists(arn):
                return arn
            raise

    async def _exists(self, arn: str) -> bool:
        try:
            return await self.executions.status(arn) is not None
        except Exception:  # noqa: BLE001 - cannot tell: treat as not started (the reconciler settles it)
            return False

    async def _admit_or_refuse(self, principal: Principal, validation: Validation) -> None:
        """Admit now when the user's bucket and running limit allow; else stay QUEUED (policy
        `queue`) or raise 429 (policy `reject`). The admit step of the execution retries queued ones."""
        # Under `reject` there is no queue to respect: first come, first served at the bucket.
        outcome = await self.quotas.admit(validation, principal.quota, fifo=principal.on_limit == "queue")
        if outcome.admitted or outcome.gone or principal.on_limit == "queue" or principal.quota is None:
            return
        quota, refusal = principal.quota, outcome.refusal
        if refusal is None:  # an earlier validation of this user is queued
            refusal = Refusal("queue", 5.0, 0.0, 0.0)
        reason = {
            "tokens": f"Token quota exceeded: this validation needs {validation.run_cost} tokens and "
            f"{int(refusal.available_tokens)} are available (capacity {quota.capacity_tokens}, "
            f"refill {quota.refill_tokens_per_minute}/min).",
            "max_running": f"Concurrent validations limit reached: at most {quota.max_running} may run at once.",
            "queue": "Earlier validations of yours are still queued.",
        }[refusal.limit]
        limit_name = {"tokens": "capacity_tokens", "max_running": "max_running", "queue": "queue"}[refusal.limit]
        if refusal.limit == "max_running":
            refusal = Refusal("max_running", 5.0, refusal.available_tokens, refusal.tat)
        raise TooManyRequests(
            reason,
            headers=rate_limit_headers(quota, refusal),
            limit=limit_name,
            cost=validation.run_cost,
            retry_after=int(refusal.retry_after_header),
        )

    async def _with_queue(self, validation: Validation, quota: Quota | None) -> Validation:
        """For a QUEUED validation: its place in the user's queue and an estimated start."""
        if validation.status != ValidationStatus.QUEUED or not validation.queue_key:
            return validation
        ahead = await self.quotas.queue_ahead(validation.owner, validation.queue_key)
        position = len(ahead) + 1
        estimate = None
        if quota is not None:
            bucket = await self.quotas.bucket(validation.owner)
            now = time.time()
            needed = sum(ahead) + validation.run_cost
            wait = max(0.0, needed - quota.available(bucket.tat, now)) / quota.rate
            estimate = datetime.fromtimestamp(now + wait, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        return replace(validation, queue=QueuePosition(position, estimate))

    async def _undo(
        self,
        validation_id: str,
        keys: list[str],
        part_ids: list[str],
        owner: Principal,
        reservation: tuple[str, Decimal] | None = None,
    ) -> None:
        try:
            stored = await self.store.get(validation_id)
            if stored is not None and stored.reserved_run:  # admitted: reservation and running slot back
                # (its settlement gives the budget reservation back too)
                await self.quotas.settle(stored, (await self.users.limits_of(stored.owner))[0])
                await self.quotas.release_head(stored.owner)  # the slot may wake a parked one
            elif reservation is not None and self.spending is not None:
                await self.spending.release(owner.user_id, *reservation)
        except Exception:  # noqa: BLE001 - keep the record: the reconciler ends it and refunds once
            log.exception("could not refund validation %s; left for the reconciler", validation_id)
            return
        for step in (
            self.quotas.leave_queue(validation_id, owner.user_id, owner.quota),  # counted off, if it was queued
            self.store.delete(validation_id),
            self.store.delete_parts(validation_id, part_ids),
            self.store.delete_files(keys),
        ):
            try:
                await step
            except Exception:  # noqa: BLE001 - keep undoing the rest; log what is left
                log.exception("cleanup of validation %s incomplete", validation_id)

    @staticmethod
    def _execution_name(validation_id: str, run: int) -> str:
        return validation_id if run == 1 else f"{validation_id}-r{run}"

    # --- read ---------------------------------------------------------------------------
    async def get(self, principal: Principal, validation_id: str) -> Validation:
        validation = await self.store.get(validation_id)
        if validation is None or not (principal.is_admin or validation.owner == principal.user_id):
            raise NotFound(f"No validation {validation_id}.", field="id")
        if validation.status == ValidationStatus.CANCELLING:
            validation = await self._settle_cancel(validation)
        if validation.status == ValidationStatus.QUEUED:
            validation = await self._with_queue(validation, (await self.users.limits_of(validation.owner))[0])
        return validation

    async def list_page(
        self, principal: Principal, limit: int, cursor: str | None, owner: str | None = None
    ) -> tuple[list[Validation], str | None]:
        """The validations of `owner` (admins only; default: the caller's own), newest first."""
        if owner is not None and owner != principal.user_id and not principal.is_admin:
            raise Forbidden("Only admins may list another user's validations.", field="owner")
        owner = owner or principal.user_id
        # The by_owner index's LastEvaluatedKey, of this owner's list.
        start = (
            decode_cursor(
                cursor,
                lambda v: (
                    is_key(v, {"id", "owner", "created_at"})
                    and v["owner"] == owner
                    and _CURSOR_ID.fullmatch(v["id"]) is not None
                ),
            )
            if cursor
            else None
        )
        items, last = await self.store.list_for_owner(owner, limit, start)
        return items, encode_cursor(last) if last else None

    async def results(
        self, principal: Principal, validation_id: str, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        validation = await self.get(principal, validation_id)
        self._gone_if_purged(validation)
        # A file index (not a bool, which is an int to Python).
        start = decode_cursor(cursor, lambda v: type(v) is int and 0 <= v < len(validation.files)) if cursor else 0
        files = validation.files[start : start + limit]
        if not files:
            return [], None
        parts = await self.store.parts_of_files(validation_id, start, start + len(files) - 1)
        verdicts = await self.store.verdicts_of_files(validation_id, start, start + len(files) - 1)
        # core/results takes the stored shape (plain dicts), as the Lambdas have it.
        by_file: dict[int, list[dict[str, Any]]] = {}
        for part in parts:
            by_file.setdefault(part.file_index, []).append(part.result_input())
        verdict_of = {i: v.result_input() for i, v in verdicts.items()}
        rule_ids = [r["id"] for r in validation.rules]
        page = [
            file_result(f.name, by_file.get(start + i, []), rule_ids, verdict_of.get(start + i), f.error)
            for i, f in enumerate(files)
        ]
        following = start + len(files)
        return page, encode_cursor(following) if following < len(validation.files) else None

    async def result_pages(
        self, principal: Principal, validation_id: str, page_size: int = 100
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every file's result, a page at a time (the exports stream these)."""
        cursor: str | None = None
        while True:
            items, cursor = await self.results(principal, validation_id, page_size, cursor)
            if items:
                yield items
            if not cursor:
                return

    async def history(
        self, principal: Principal, validation_id: str, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        validation = await self.get(principal, validation_id)
        if not validation.execution_arn:
            return [], None
        token = decode_cursor(cursor, lambda v: isinstance(v, str) and 0 < len(v) <= 2048) if cursor else None
        return await self.executions.history(validation.execution_arn, limit, token)

    # --- change -------------------------------------------------------------------------
    async def cancel(self, principal: Principal, validation_id: str) -> Validation:
        validation = await self.get(principal, validation_id)
        status = validation.status
        if status in (ValidationStatus.SUCCEEDED, ValidationStatus.FAILED):
            raise Conflict(
                f"Validation {validation_id} already ended ({status}); nothing to cancel.", status_value=status
            )
        if status == ValidationStatus.CANCELLED:
            return validation
        # CANCELLING first: validators check it before every part, so none starts after this.
        if status in (ValidationStatus.RUNNING, ValidationStatus.QUEUED) and not await self.store.update(
            validation_id,
            {"status": ValidationStatus.CANCELLING.value},
            expect={"status": status, "run": validation.run},
        ):
            return await self.cancel(principal, validation_id)  # it moved on meanwhile: answer for its new state
        validation = replace(validation, status=ValidationStatus.CANCELLING)
        if validation.execution_arn:
            await self.executions.stop(validation.execution_arn, cause=f"cancelled by {principal.user_id}")
        if validation.tier == "batch" and status == ValidationStatus.RUNNING:
            await self._cancel_batches(validation.id)
        # A stop usually settles within a moment: wait for it briefly, so the answer (and the
        # event stream) says CANCELLED; past that, the next read settles it.
        deadline = time.monotonic() + self.settings.cancel_settle_seconds
        while True:
            validation = await self._settle_cancel(validation)
            if validation.status != ValidationStatus.CANCELLING or time.monotonic() > deadline:
                return validation
            await asyncio.sleep(0.1)

    async def _cancel_batches(self, validation_id: str) -> None:
        """The batch lane's open batches cancelled at the provider and what they answered kept, before
        the run is settled (lambdas/batch: its cancel action). A failure leaves the batches to end on
        their own (their answers uncollected); the cancel itself goes on."""
        if self.functions is None:
            return
        try:
            done = await self.functions.invoke(
                self.settings.batch_function, {"action": "cancel", "validation_id": validation_id}
            )
        except AppError as exc:
            log.warning("validation %s: cancelling its batches failed: %s", validation_id, exc.detail)
            return
        log.info("validation %s: batches cancelled %s", validation_id, done)

    async def purge(self, principal: Principal, validation_id: str) -> Validation:
        """Delete an ended validation's files, parts, results and events; keep a tombstone (status,
        counts, usage, `purged_at`). Safe to repeat: a purge cut short is finished by the next."""
        validation = await self.get(principal, validation_id)
        if validation.status not in TERMINAL:
            raise Conflict(
                f"Validation {validation_id} is {validation.status}; cancel it or wait for it to end first.",
                status_value=validation.status,
            )
        purged_at = validation.purged_at or now_iso()
        # First the mark (results and retry answer 410 from here), then the data, then the names.
        if not await self.store.update(
            validation_id, {"purged_at": purged_at}, expect={"status": validation.status, "run": validation.run}
        ):
            raise Conflict(f"Validation {validation_id} changed meanwhile; read it and try again.")
        keys = [f.key for f in validation.files]
        part_ids = await self.store.part_ids(validation_id)
        await self.store.delete_files(keys)
        await self.store.delete_parts(validation_id, part_ids)
        events = await self.events.purge(validation_id)
        await self.store.update(validation_id, {"files": [], "rules": []})
        await self.users.audit(
            principal.user_id,
            "validation.purge",
            validation_id,
            None,
            {"owner": validation.owner, "files": len(keys), "records": len(part_ids), "events": events},
        )
        return await self.store.get(validation_id) or validation

    def _gone_if_purged(self, validation: Validation) -> None:
        if validation.purged_at:
            raise Gone(f"The data of validation {validation.id} was deleted at {validation.purged_at}.", field="id")

    async def cancel_queued_of(self, actor: Principal, owner: str) -> list[str]:
        """Cancel every validation `owner` still has in the queue (a disabled user's); their ids."""
        cancelled = []
        for validation_id in await self.store.queued_of(owner):
            try:
                validation = await self.cancel(actor, validation_id)
            except (NotFound, Conflict):  # ended or gone meanwhile
                continue
            cancelled.append(validation.id)
        return cancelled

    async def _settle_cancel(self, validation: Validation) -> Validation:
        """CANCELLING → CANCELLED once Step Functions confirms the execution stopped."""
        arn = validation.execution_arn
        if arn and await self.executions.status(arn) == "RUNNING":  # None: it never started, or is gone
            return validation
        current = await self.store.get(validation.id) or validation
        if current.status == ValidationStatus.CANCELLING:
            quota = (await self.users.limits_of(current.owner))[0]
            if current.queue_key:  # cancelled while queued: out of the owner's queue, counted off once
                await self.quotas.leave_queue(current.id, current.owner, quota)
            # Settle first (unused tokens and the running slot back, once; a run cancelled while
            # queued reserved none), then the terminal status: whoever sees CANCELLED can count on
            # the refund, and a crash between the two leaves CANCELLING for the next read or the reconciler.
            await self.quotas.settle(current, quota)
            if await self.store.update(
                validation.id,
                {
                    "status": ValidationStatus.CANCELLED.value,
                    "finished_at": now_iso(),
                    ends.MARKER: ends.shard_of(validation.id),  # announced below, else by the reconciler
                },
                expect={"status": ValidationStatus.CANCELLING.value, "run": current.run},
                remove=("queue_key",),
            ):  # the one request that settled the cancel tells the viewers, and the owner's webhook
                await self._announce_end(validation.id, current.run)
            # Its slot, or its place at the head of the queue, goes to the next queued one (core/queue.py).
            await self.quotas.release_head(current.owner)
            current = await self.store.get(validation.id) or current
        return current

    async def retry(self, principal: Principal, validation_id: str) -> Validation:
        """Rerun parts without a result (failed, or never run after a cancel) as a new execution."""
        validation = await self.get(principal, validation_id)
        status = validation.status
        if status not in TERMINAL:
            raise Conflict(f"Validation {validation_id} is {status}; retry once it has ended.", status_value=status)
        self._gone_if_purged(validation)
        if not await self.store.files_exist([f.key for f in validation.files]):
            raise Gone(
                f"The files of validation {validation_id} have expired (kept {self.settings.retention_days:g} days); "
                "submit them again.",
                field="files",
                limit="retention_days",
            )
        files = validation.files
        parts = await self.store.parts_of_files(validation_id, 0, len(files) - 1)
        verdicts = await self.store.verdicts_of_files(validation_id, 0, len(files) - 1)
        todo = [p for p in parts if p.status != PartStatus.SUCCEEDED]
        combine = [
            i
            for i, f in enumerate(files)
            if f.parts > 1 and ((v := verdicts.get(i)) is None or v.status != PartStatus.SUCCEEDED)
        ]
        unplanned = validation.unplanned or []  # the plan step never finished: it runs again
        if not todo and not combine and not unplanned:
            raise Conflict(f"Nothing to retry: every part and file of {validation_id} has a result.")
        cost = (
            sum(p.estimate for p in todo)
            + sum(files[i].combine_estimate for i in combine)
            + sum(files[i].guess or 0 for i in unplanned)
        )
        if principal.user_id != validation.owner and await self.users.disabled(validation.owner):
            # Only an admin gets here (the owner's key stops working): nothing of theirs is admitted.
            raise Conflict(
                f"The owner of validation {validation_id} is disabled; enable the user to retry it.",
                field="owner",
            )
        if validation.notify_pending:  # the last run's end was not announced (its writer died): first that
            try:
                await self._notify_ended(validation_id, validation.run)
            except Exception as exc:
                raise UpstreamError(
                    f"The end of run {validation.run} could not be announced yet; retry shortly: {type(exc).__name__}"
                ) from exc
        run = validation.run + 1
        queue_key = f"{now_iso()}#{validation_id}"
        owner = principal if principal.user_id == validation.owner else await self._owner(validation)
        claimed = await self.store.update(
            validation_id,
            {
                "status": ValidationStatus.QUEUED.value,
                "run": run,
                "run_cost": cost,
                "run_queued_at": queue_key.split("#", 1)[0],
                # The execution this run will have: from here on, the reconciler can tell it never started.
                "execution_arn": self.executions.arn_of(self._execution_name(validation_id, run)),
            },
            expect={"status": status, "run": validation.run},
            remove=("error", "finished_at", ends.MARKER),
        )
        if not claimed:
            raise Conflict(f"Validation {validation_id} changed meanwhile; read it and try again.")
        rerun = replace(validation, status=ValidationStatus.QUEUED, run=run, run_cost=cost, queue_key=queue_key)
        try:
            # Counted: 429 past max_queued. False: the run was taken meanwhile (a cancel): nothing to start.
            if not await self.quotas.join_queue(rerun, queue_key, owner.quota):
                raise Conflict(f"Validation {validation_id} changed meanwhile; read it and try again.")
            await self._admit_or_refuse(owner, rerun)
        except Conflict:
            raise
        except TooManyRequests:
            await self.quotas.leave_queue(validation_id, validation.owner, owner.quota)
            await self.store.update(
                validation_id,
                {
                    "status": status,
                    "run": validation.run,
                    "execution_arn": validation.execution_arn,
                    **({"error": validation.error} if validation.error else {}),
                    **({"finished_at": validation.finished_at} if validation.finished_at else {}),
                },
                expect={"status": ValidationStatus.QUEUED.value, "run": run},
                remove=("queue_key",),
            )
            raise
        except Exception as exc:
            await self._abandon_run(validation_id, run, f"the retry could not be admitted: {type(exc).__name__}")
            raise
        name = self._execution_name(validation_id, run)
        try:
            # Parts with their files' settled counts, a transaction per batch (a crash between two
            # leaves counts that match the parts); PENDING ones (never run) need no reset.
            failed = [(p.part_id, p.file_index) for p in todo if p.status == PartStatus.FAILED]
            await self.store.reset_failed_parts(validation_id, failed)
            await asyncio.gather(*(self.store.reset_failed_verdict(validation_id, i) for i in combine))
            arn = await self._start_execution(
                name, _execution_input(validation_id, run, [p.part_id for p in todo], combine, unplanned)
            )
        except Exception as exc:
            # Not started: end this run (reservation back first), so nothing waits on an execution
            # that does not exist; what was reset reruns at the next retry.
            await self._abandon_run(validation_id, run, f"the retry could not start: {type(exc).__name__}")
            if isinstance(exc, AppError):
                raise
            error = aws_failure(exc) or UpstreamError(f"Could not start the retry: {type(exc).__name__}")
            raise error from exc
        if arn != self.executions.arn_of(name):
            await self.store.update(validation_id, {"execution_arn": arn})
        await _quietly(self.events.append_status(validation_id), f"announcing the retry of {validation_id}")
        return await self.get(principal, validation_id)

    async def _abandon_run(self, validation_id: str, run: int, reason: str) -> None:
        """End run `run` as FAILED after settling it; if this fails too, the reconciler does it."""
        try:
            current = await self.store.get(validation_id)
            if current is None or current.run != run or current.status not in ("QUEUED", "RUNNING"):
                return
            quota = (await self.users.limits_of(current.owner))[0]
            if current.queue_key:  # still queued: out of the owner's queue, counted off once
                await self.quotas.leave_queue(current.id, current.owner, quota)
            await self.quotas.settle(current, quota)
            if await self.store.update(
                validation_id,
                {
                    "status": ValidationStatus.FAILED.value,
                    "finished_at": now_iso(),
                    "error": {"type": "not_started", "detail": reason},
                    ends.MARKER: ends.shard_of(validation_id),
                },
                expect={"status": current.status, "run": run},
                remove=("queue_key",),
            ):
                await self._announce_end(validation_id, run)
            await self.quotas.release_head(current.owner)
        except Exception:  # noqa: BLE001 - the reconciler ends it (no execution) and settles once
            log.exception("could not end run %s of %s; left for the reconciler", run, validation_id)

    async def resend_notification(self, principal: Principal, validation_id: str) -> dict[str, str]:
        """Send the webhook event of an ended validation again (owner or admin); audited."""
        validation = await self.get(principal, validation_id)
        if self.notifications is None:
            raise NotFound("This deployment sends no webhooks.", field="webhook")
        record = {f: getattr(validation, f) for f in webhooks.RECORD_FIELDS}
        message_id = await self.notifications.resend(record, time.time())
        await self.users.audit(
            principal.user_id, "validation.resend_notification", validation_id, None, {"message_id": message_id}
        )
        return {"message_id": message_id, "event_type": webhooks.EVENT_TYPES[validation.status]}

    async def _announce_end(self, validation_id: str, run: int) -> None:
        """Run `run`, which this service just ended with the end's marker (its execution was
        stopped or never started: no Finalize will): the status event, the owner's webhook
        notification, then the marker off (core/ends.py). A failure leaves the marker, and the
        reconciler announces what is missing."""
        await self.events.append_status(validation_id)
        try:
            await self._notify_ended(validation_id, run)
            await self.store.clear_end_marker(validation_id, run)
        except Exception:  # noqa: BLE001 - marked: the reconciler's sweep starts it (never twice: its name)
            log.exception("the webhook notification of %s run %s is left to the reconciler", validation_id, run)

    async def _notify_ended(self, validation_id: str, run: int) -> None:
        """Start the webhook notification of run `run` (when the owner has a webhook): once, by
        its name."""
        if self.notifications is None:
            return
        stored = await self.store.get(validation_id)
        if stored is not None:
            await self.notifications.validation_ended({f: getattr(stored, f) for f in webhooks.RECORD_FIELDS}, run)

    async def _owner(self, validation: Validation) -> Principal:
        """The owner as a principal (an admin acting on someone's validation spends their quota)."""
        quota, policy = await self.users.limits_of(validation.owner)
        return Principal(user_id=validation.owner, role="user", quota=quota, on_limit=policy)

"""Response shapes of the validations API (the contract: fields may grow, not change)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from app.validations.records import Validation
from core import pricing
from core.fairness import Priority

Status = Literal["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLING", "CANCELLED"]


class Progress(BaseModel):
    total: int
    succeeded: int
    failed: int
    pending: int


class Usage(BaseModel):
    prompt_tokens: int = Field(
        description="Prompt tokens of every model attempt that was answered (cut and invalid answers too)"
    )
    completion_tokens: int = Field(description="Completion tokens of those answers")
    model_calls: int = Field(default=0, description="Answered model calls: parts, combine calls, retries")
    reused_parts: int = Field(
        default=0, description="Parts judged before (same text, rules, model, prompt): their stored verdict, no call"
    )
    attempts: int = Field(default=0, description="Every request sent, answered or not (429, timeout, error)")
    relocated: int = Field(default=0, description="Findings moved to the line where their quote is")
    ungrounded: int = Field(
        default=0, description="Findings and evidence whose quote was found nowhere in the text: not delivered"
    )
    reasked: int = Field(
        default=0, description="Questions asked a second time because a failure had no grounded finding"
    )
    charged_tokens: int | None = Field(
        default=None,
        description="What the owner's token bucket was charged (prompt + completion of every answered call); "
        "set once the run settled",
    )
    cached_prompt_tokens: int = Field(
        default=0, description="Of the prompt tokens, those the provider served from its prompt cache (cheaper)"
    )
    cost_usd: float | None = Field(
        default=None,
        description="USD of every answered call, at the tier that served it and the model's prices as they were "
        "at submission; null when the model has no price (never a guess)",
    )
    model: str | None = Field(default=None, description="The model asked")
    served_model: str | None = Field(default=None, description="The model that answered (often a dated snapshot)")


class Links(BaseModel):
    self: str
    results: str
    events: str


class ErrorInfo(BaseModel):
    type: str
    detail: str


class FileInfo(BaseModel):
    name: str
    size: int
    parts: int = Field(description="Parts the file was split into (each judged by one model call)")
    kind: str | None = Field(default=None, description="How it was split: csv, tsv, jsonl, json, markdown or text")
    lines: int | None = Field(default=None, description="Lines in the file (CRLF, CR and LF each end a line)")
    upload_id: str | None = Field(default=None, description="The upload it was read from (`POST /uploads`)")
    planned: bool = Field(
        default=True, description="false: an uploaded file the plan step has not read yet (its parts unknown)"
    )
    error: ErrorInfo | None = Field(default=None, description="Why the plan step refused it (not text, empty)")


class QueuePlace(BaseModel):
    position: int = Field(description="1 = next of your validations to start")
    estimated_start: str | None = Field(description="When your token bucket will hold enough for it and those ahead")


class ParallelismInfo(BaseModel):
    effective: int = Field(
        description="Model calls this validation may have in flight now (max-parallelism applies live)"
    )
    planned: int = Field(
        description="What the controller gave it at the start, from the SSM values and token consumption"
    )
    map_concurrency: int = Field(
        description="The Map's concurrency: raising max-parallelism reaches up to this × calls_per_invocation"
    )
    reason: str = Field(description="What bounded the plan: max_parallelism, batches or token_budget")
    calls_per_invocation: int = Field(
        default=1, description="Calls one validator invocation runs at once (above 40 calls in flight: more than 1)"
    )


class RulesetRef(BaseModel):
    owner: str
    name: str
    version: int
    reference: str = Field(description="`name@version`, as a submission or the CLI names it")


def ruleset_reference(record: Validation) -> str | None:
    """`name@version` of the stored rule set a validation used, if any."""
    return f"{record.ruleset['name']}@{int(record.ruleset['version'])}" if record.ruleset else None


class BatchCounts(BaseModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchInfo(BaseModel):
    status: str = Field(
        description="The least advanced of its open batches (validating, in_progress, finalizing, cancelling), "
        "else the last one's end (completed, failed, expired, cancelled)"
    )
    request_counts: BatchCounts = Field(description="Over all its batches, as the Batch API counts them")
    batches: int = Field(description="Batches submitted")
    open: int = Field(description="Of those, not ended")


class ValidationOut(BaseModel):
    id: str
    status: Status
    progress: Progress
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    usage: Usage
    estimated_tokens: int
    run: int = Field(description="1 for the first execution, +1 per retry")
    files: list[FileInfo]
    rules: list[dict[str, str]]
    error: ErrorInfo | None = None
    queue: QueuePlace | None = None
    parallelism: ParallelismInfo | None = Field(default=None, description="Set once the execution planned it")
    purged_at: str | None = Field(
        default=None, description="When its files, parts, results and events were deleted (the record stays)"
    )
    priority: Priority = Field(
        default="normal", description="Orders the owner's own running validations for model calls (fair share)"
    )
    ruleset: RulesetRef | None = Field(
        default=None, description="The stored rule set version whose rules come first in `rules`"
    )
    kind: Literal["validation", "test"] = Field(
        default="validation", description='"test": a rule set\'s examples judged against its rules'
    )
    tier: Literal["standard", "flex", "batch"] = Field(
        default="standard", description="The service tier asked (each call is priced at the tier that served it)"
    )
    batch: BatchInfo | None = Field(
        default=None, description="On the batch tier, once submitted: the Batch API's status of its batches"
    )
    flex_deadline_seconds: int | None = None
    flex_fallback: Literal["standard", "fail"] | None = None
    batch_sync_tier: Literal["flex", "standard"] | None = Field(
        default=None, description="batch: the tier of its synchronous calls (re-asks, leftovers, combine calls)"
    )
    links: Links

    @classmethod
    def of(cls, record: Validation) -> ValidationOut:
        vid = record.id
        total, succeeded, failed = record.total_parts, record.succeeded, record.failed
        return cls(
            id=vid,
            status=record.status,  # type: ignore[arg-type]  # stored statuses are the Status literals; pydantic checks
            progress=Progress(
                total=total, succeeded=succeeded, failed=failed, pending=max(0, total - succeeded - failed)
            ),
            created_at=record.created_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
            usage=Usage(
                prompt_tokens=record.prompt_tokens,
                completion_tokens=record.completion_tokens,
                model_calls=record.model_calls,
                reused_parts=record.reused_parts,
                attempts=record.attempts,
                relocated=record.relocated,
                ungrounded=record.ungrounded,
                reasked=record.reasked,
                charged_tokens=record.charged_tokens,
                cached_prompt_tokens=record.cached_prompt_tokens or 0,
                cost_usd=pricing.shown(record.cost_usd),
                model=record.model,
                served_model=record.served_model,
            ),
            estimated_tokens=record.estimated_tokens,
            run=record.run,
            files=[
                FileInfo(
                    name=f.name,
                    size=f.size,
                    parts=f.parts,
                    kind=f.kind,
                    lines=f.last_line,
                    upload_id=f.upload_id,
                    planned=i not in (record.unplanned or []),
                    error=ErrorInfo(**f.error) if f.error else None,
                )
                for i, f in enumerate(record.files)
            ],
            rules=record.rules,
            purged_at=record.purged_at,
            priority=record.priority,
            error=ErrorInfo(**record.error) if record.error else None,
            queue=QueuePlace(position=record.queue.position, estimated_start=record.queue.estimated_start)
            if record.queue
            else None,
            parallelism=_parallelism(record),
            ruleset=RulesetRef(
                owner=record.ruleset["owner"],
                name=record.ruleset["name"],
                version=int(record.ruleset["version"]),
                reference=ruleset_reference(record) or "",
            )
            if record.ruleset
            else None,
            kind="test" if record.kind == "test" else "validation",
            tier=record.tier if record.tier in ("flex", "batch") else "standard",  # type: ignore[arg-type]  # narrowed by the test
            batch=BatchInfo.model_validate(record.batch) if record.batch else None,
            flex_deadline_seconds=record.flex_deadline_seconds,
            flex_fallback="fail" if record.flex_fallback == "fail" else ("standard" if record.flex_fallback else None),
            batch_sync_tier="flex"
            if record.batch_sync_tier == "flex"
            else ("standard" if record.batch_sync_tier else None),
            links=Links(
                self=f"/validations/{vid}", results=f"/validations/{vid}/results", events=f"/validations/{vid}/events"
            ),
        )


def _parallelism(record: Validation) -> ParallelismInfo | None:
    plan = record.plan
    if not plan:
        return None
    return ParallelismInfo(
        effective=int(record.parallelism if record.parallelism is not None else plan["parallelism"]),
        planned=int(plan["parallelism"]),
        map_concurrency=int(plan["map_concurrency"]),
        reason=str(plan.get("reason", "")),
        calls_per_invocation=int(plan.get("calls_per_invocation", 1)),
    )


class NotificationResent(BaseModel):
    message_id: str = Field(description="The event's `webhook-id`: the same as on its first delivery")
    event_type: str = Field(description="validation.succeeded, validation.failed or validation.cancelled")


class ValidationPage(BaseModel):
    items: list[ValidationOut]
    next_cursor: str | None


class Finding(BaseModel):
    line: int | None = Field(default=None, description="First line of the finding in the file (1-based)")
    end_line: int | None = Field(default=None, description="Last line (equal to line for one line)")
    location: str = Field(description='"line N" or "lines N-M"')
    message: str
    kind: Literal["text", "absence"] = Field(
        default="text",
        description='"text": the quote was found in these lines of the stored file; "absence": the part or file '
        "lacks something (no quote; spans the whole part or file)",
    )
    quote: str = Field(default="", description="What the model quoted from the lines (escaped; empty for absence)")
    snippet: str = Field(
        default="", description="The text of the cited lines from the stored file, cut to a readable length (escaped)"
    )
    cited_line: int | None = Field(
        default=None,
        description="The line the model cited, when the quote was found elsewhere and the finding moved there",
    )


class UngroundedClaim(BaseModel):
    line: int = Field(description="The line the model cited")
    end_line: int
    quote: str = Field(description="The model's quote (escaped), found neither there nor elsewhere in the part")
    message: str
    source: Literal["finding", "evidence"]


class RuleVerdict(BaseModel):
    id: str
    passed: bool | None = Field(
        description="The rule's verdict for the file; null while the file runs (a multi-part file is decided by "
        "its combine step), and null with `undecided` once the file ended without a verdict"
    )
    findings: list[Finding]
    ungrounded: list[UngroundedClaim] = Field(
        default_factory=list, description="Claims of the model not found in the text: never counted as findings"
    )
    undecided: Literal["ungrounded", "error"] | None = Field(
        default=None,
        description='Why an ended file has no verdict for the rule: "ungrounded" (asked twice, the model never '
        'backed a failure with a quote found in the text), "error" (the file failed first)',
    )


class PartCounts(BaseModel):
    total: int
    succeeded: int
    failed: int


class FileResult(BaseModel):
    file: str
    status: Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED"]
    rules: list[RuleVerdict]
    parts: PartCounts
    error: dict[str, str] | None = None


class ResultPage(BaseModel):
    items: list[FileResult]
    next_cursor: str | None


class HistoryPage(BaseModel):
    events: list[dict[str, Any]]
    next_cursor: str | None


class CallCounts(BaseModel):
    parts: int = Field(description="Part calls (parts the reuse cache answers are left out)")
    combine: int = Field(description="Combine calls of multi-part files")
    total: int


class PromptTokens(BaseModel):
    parts: int = Field(description="Exact: each part's prompt built and counted as the validators build it")
    combine: int = Field(description="Estimated: combine prompts hold reports that do not exist yet")
    total: int
    cached: int = Field(description="Expected from the provider's prompt cache (the shared prefix, 1,024+ tokens)")
    shared_prefix: int = Field(description="Tokens every part call's prompt starts with (system prompt and rules)")


class Ratio(BaseModel):
    p50: float
    p90: float
    source: Literal["history", "prior"] = Field(
        description="This deployment's ended validations of the model, or COMPLETION_RATIO_PRIOR while it has none"
    )


class CompletionTokens(BaseModel):
    p50: int
    p90: int
    ratio: Ratio = Field(description="Completion ÷ prompt tokens")


class BudgetOutlook(BaseModel):
    verdict: Literal["admit", "refuse"]
    estimate_usd: float | None = Field(description="What the budget would reserve (p90, standard tier)")
    remaining_usd: float | None
    resets_at: str


class Outlook(BaseModel):
    quota: Literal["admit", "queue", "refuse"] = Field(description="What the token quota would do with it now")
    reason: str | None = Field(description="max_queued, queue (others wait first), max_running or tokens")
    budget: BudgetOutlook | None = Field(description="The spend budget's answer; null without a budget")


class Duration(BaseModel):
    start_in: float = Field(description="Seconds until the quota would admit it (the queue ahead, the bucket)")
    run: float | None = Field(description="Seconds of model calls at the deployment's whole target TPM, if idle")


class EstimateOut(BaseModel):
    """`POST /validations?dry_run=true`: what it would cost; nothing stored, nothing started."""

    dry_run: Literal[True] = True
    model: str
    tier: Literal["standard", "flex", "batch"] = Field(description="The tier it would be asked at")
    ruleset: str | None
    files: int
    parts: int
    reused_parts: int
    model_calls: CallCounts
    prompt_tokens: PromptTokens
    completion_tokens: CompletionTokens
    cost_usd: dict[str, dict[str, float]] | None = Field(
        description="USD per tier (standard, flex, batch) of the model's prices, at p50 and p90; null: no price"
    )
    reserved_tokens: int = Field(description="What the quota would reserve (prompts + full completion allowances)")
    charged_tokens: int = Field(description="The same, without the parts the reuse cache answers")
    would: Outlook
    duration_seconds: Duration

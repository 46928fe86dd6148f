"""A validation as the API reads and writes it in DynamoDB: typed at the store boundary.

Field names are the stored attribute names, and each record reads and writes itself
(`of(item)`, `to_item()`): a new field is one line here. The Lambdas write more (event
numbers, reported results); what the API never reads is left out, and kept as stored.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any, Self

from core import pricing, tallies
from core.fairness import Priority
from core.records import PartStatus, ValidationStatus


def _known(cls: type, item: dict[str, Any]) -> dict[str, Any]:
    """The item's values of the record's fields (None or missing: the field's default)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in item.items() if k in names and v is not None}


@dataclass(frozen=True)
class StoredFile:
    """One uploaded file of a validation (`files` on the record)."""

    name: str
    key: str
    size: int
    parts: int  # parts the file was split into
    kind: str | None = None
    last_line: int | None = None
    combine_estimate: int = 0
    # A file uploaded straight to S3 (app/uploads): its upload, and until the plan step counts it
    # (lambdas/plan_files) the tokens it was guessed at from its size; a file the plan step refused
    # holds why (`error`: {type, detail}) and no parts.
    upload_id: str | None = None
    etag: str | None = None
    sha256: str | None = None  # declared and not checked by S3 (a multipart upload): the plan step checks it
    guess: int | None = None
    error: dict[str, str] | None = None

    @classmethod
    def of(cls, values: dict[str, Any]) -> Self:
        return cls(**_known(cls, values))

    def to_item(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class Part:
    """A part's record in `parts`, or a multi-part file's verdict (`verdict#<file>`, core/records.verdict_id).

    The Lambdas write more (byte and line ranges, token counts, attempts); what the API
    does not read is left out.
    """

    part_id: str
    file_index: int
    status: PartStatus
    estimate: int = 0  # tokens a call of this part is reserved for (prompt + completion allowance)
    rules: list[dict[str, Any]] | None = None  # the per-rule answer, once SUCCEEDED
    error: dict[str, str] | None = None  # why it FAILED

    @classmethod
    def of(cls, item: dict[str, Any]) -> Part:
        return cls(
            part_id=item["part_id"],
            file_index=int(item["file_index"]),
            status=PartStatus(item["status"]),
            estimate=int(item.get("estimate", 0)),
            rules=item.get("rules"),
            error=item.get("error"),
        )

    def result_input(self) -> dict[str, Any]:
        """The stored fields core/results.file_result reads (core takes the Lambdas' plain items too)."""
        values = {"status": self.status, "rules": self.rules, "error": self.error}
        return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class QueuePosition:
    """Where a QUEUED validation stands in its owner's queue (computed on read, not stored)."""

    position: int
    estimated_start: str | None


@dataclass(frozen=True)
class Validation:
    id: str
    owner: str
    status: ValidationStatus
    created_at: str
    total_parts: int
    files: tuple[StoredFile, ...]
    rules: list[dict[str, str]]
    run: int = 1
    run_cost: int = 0
    queue_key: str | None = None
    execution_arn: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    error: dict[str, str] | None = None
    succeeded: int = 0
    failed: int = 0
    combine_failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_calls: int = 0
    reused_parts: int = 0
    attempts: int = 0
    relocated: int = 0  # findings moved to their quote's line (core/grounding.py)
    ungrounded: int = 0  # findings and evidence found nowhere in the text
    reasked: int = 0  # questions asked again for want of a grounded finding
    estimated_tokens: int = 0
    charged_tokens: int | None = None
    plan: dict[str, Any] | None = None  # the controller's plan (lambdas/control)
    parallelism: int | None = None  # the effective parallelism, once planned
    # The quota reservation of the current run (core/quota.py: admission and settlement).
    reserved: int | None = None
    reserved_run: int | None = None
    settled_run: int | None = None
    usage_at_start: int | None = None
    purged_at: str | None = None  # DELETE /validations/{id}/data: files, parts, results and events removed
    notify_pending: str | None = None  # the end of this run is not announced yet (core/ends.py)
    queue: QueuePosition | None = None
    priority: Priority = "normal"  # high, normal, low: orders the owner's own validations (core/fairness.py)
    expires_at: int | None = None  # DynamoDB TTL (epoch seconds): its parts and events expire with it
    total_combines: int = 0  # multi-part files: one verdict each
    combined: int = 0  # of those, verdicts stored
    file_settled: dict[str, int] | None = None  # per file index: parts with a result or failure
    reuse: bool = True  # stored verdicts of the same question may answer (core/prompt.question_digest)
    # Cost (core/pricing.py): the model asked and the one that answered, its prices per tier as
    # they were at submission, the cached share of the prompt tokens, and the tokens of the tiers
    # other than standard (standard is the totals less those); absent until a call adds to them.
    model: str | None = None
    served_model: str | None = None
    prices: dict[str, Any] | None = None
    cached_prompt_tokens: int | None = None
    flex_prompt_tokens: int | None = None
    flex_cached_prompt_tokens: int | None = None
    flex_completion_tokens: int | None = None
    batch_prompt_tokens: int | None = None
    batch_cached_prompt_tokens: int | None = None
    batch_completion_tokens: int | None = None
    # Spend (core/spend.py): the totals charged to the owner so far, and the budget reservation
    # (its period's key and amount) the current run holds.
    spend_charged: dict[str, Any] | None = None
    budget_key: str | None = None
    budget_reserved: Decimal | None = None
    # The lane (docs: Lanes): the service tier asked, and on flex the deadline and fallback.
    tier: str = "standard"
    # The batch lane (lambdas/batch): the provider's status of its batches and their request counts.
    batch: dict[str, Any] | None = None
    flex_deadline_seconds: int | None = None
    flex_fallback: str | None = None
    batch_sync_tier: str | None = None  # batch: the tier of its synchronous calls (flex or standard)
    ruleset: dict[str, Any] | None = None  # {owner, name, version}: the stored rule set version it used
    kind: str = "validation"  # "test": a rule set's examples judged against its rules (app/rulesets)
    # Uploaded files the plan step has not planned yet (their indexes in `files`), and what the
    # inline files were planned at: the plan step's correction adds the uploaded files' plans to it.
    unplanned: list[int] | None = None
    inline_estimate: int | None = None
    guessed_tokens: int | None = None  # the estimate at submission, with the uploaded files guessed

    @classmethod
    def of(cls, item: dict[str, Any]) -> Self:
        """From a stored record (core/dynamo.from_item's plain values)."""
        values = _known(cls, item)
        values["status"] = ValidationStatus(item["status"])
        values["files"] = tuple(StoredFile.of(f) for f in item["files"])
        values.pop("queue", None)  # computed on read, never stored
        return cls(**values)

    def to_item(self) -> dict[str, Any]:
        """The record as stored (None fields left out, and counters at 0: they are counted on the
        validation's tallies, core/tallies.py, and read as 0 when absent; `queue` is computed on
        read, never stored)."""
        item: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or f.name == "queue" or (f.name in tallies.COUNTERS and value == 0):
                continue
            if f.name == "files":
                value = [file.to_item() for file in value]
            elif f.name == "status":
                value = str(value)
            item[f.name] = value
        return item

    @property
    def used_tokens(self) -> int:
        """Every answered model attempt's tokens, over all runs."""
        return self.prompt_tokens + self.completion_tokens

    def usage_record(self) -> dict[str, Any]:
        """The fields core/quota.settlement reads, as the stored record has them."""
        values = {
            "id": self.id,
            "owner": self.owner,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "reserved": self.reserved,
            "reserved_run": self.reserved_run,
            "settled_run": self.settled_run,
            "usage_at_start": self.usage_at_start,
            **{name: getattr(self, name) for name in pricing.USAGE_FIELDS},
            "prices": self.prices,
            "model": self.model,
            "spend_charged": self.spend_charged,
            "budget_key": self.budget_key,
            "budget_reserved": self.budget_reserved,
        }
        return {k: v for k, v in values.items() if v is not None}

    @property
    def cost_usd(self) -> Decimal | None:
        """What its answered calls cost, at the tiers that served them (None: no price)."""
        return pricing.record_cost(self.usage_record())

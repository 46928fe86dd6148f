"""A validation as the API reads it from DynamoDB: typed at the store boundary.

Field names are the stored attribute names. The Lambdas write more (counters per file,
event numbers, reported results); what the API does not read is left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.fairness import Priority
from core.records import ChunkStatus


@dataclass(frozen=True)
class StoredFile:
    """One uploaded file of a validation (`files` on the record)."""

    name: str
    key: str
    size: int
    chunks: int  # parts the file was split into
    kind: str | None = None
    last_line: int | None = None
    combine_estimate: int = 0

    @classmethod
    def of(cls, values: dict[str, Any]) -> StoredFile:
        return cls(
            name=values["name"],
            key=values["key"],
            size=values["size"],
            chunks=values["chunks"],
            kind=values.get("kind"),
            last_line=values.get("last_line"),
            combine_estimate=values.get("combine_estimate", 0),
        )


@dataclass(frozen=True)
class Part:
    """A part's record in `chunks`, or a multi-part file's verdict (`verdict#<file>`, core/records.verdict_id).

    The Lambdas write more (byte and line ranges, token counts, attempts); what the API
    does not read is left out.
    """

    chunk_id: str
    file_index: int
    status: ChunkStatus
    estimate: int = 0  # tokens a call of this part is reserved for (prompt + completion allowance)
    rules: list[dict[str, Any]] | None = None  # the per-rule answer, once SUCCEEDED
    error: dict[str, str] | None = None  # why it FAILED

    @classmethod
    def of(cls, item: dict[str, Any]) -> Part:
        return cls(
            chunk_id=item["chunk_id"],
            file_index=int(item["file_index"]),
            status=ChunkStatus(item["status"]),
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
    status: str
    created_at: str
    total_chunks: int
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

    @classmethod
    def of(cls, item: dict[str, Any]) -> Validation:
        """From a stored record (core/dynamo.from_item's plain values)."""
        optional = (
            "run", "run_cost", "queue_key", "execution_arn", "started_at", "finished_at", "error", "succeeded",
            "failed", "combine_failed", "prompt_tokens", "completion_tokens", "model_calls", "reused_parts", "attempts",
            "relocated", "ungrounded", "reasked",
            "estimated_tokens", "charged_tokens", "plan", "parallelism", "reserved", "reserved_run", "settled_run",
            "usage_at_start", "purged_at", "priority", "notify_pending",
        )  # fmt: skip
        return cls(
            id=item["id"],
            owner=item["owner"],
            status=item["status"],
            created_at=item["created_at"],
            total_chunks=item["total_chunks"],
            files=tuple(StoredFile.of(f) for f in item["files"]),
            rules=item["rules"],
            **{k: item[k] for k in optional if item.get(k) is not None},
        )

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
        }
        return {k: v for k, v in values.items() if v is not None}

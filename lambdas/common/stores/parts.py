"""The parts table: each part's record and result, and each multi-part file's combine nodes
and verdict (`combine#…`, `verdict#…` keys sort after every part id). Every write is
conditional, so a retried or duplicated invocation changes nothing twice."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from core import tallies
from core.clock import expiry, now_iso
from core.dynamo import Update, plain
from core.records import PartStatus, file_range, parts_query, verdict_id
from core.steps import query_all
from lambdas.common.errors import is_condition_failure
from lambdas.common.stores.base import Clients


def _counters(checks: dict[str, int] | None) -> dict[str, int]:
    return {k: v for k, v in (checks or {}).items() if v}


@dataclass(frozen=True)
class Parts:
    clients: Clients

    @property
    def _table(self) -> Any:
        return self.clients.table(self.clients.config.parts_table)

    def in_range(self, validation_id: str, first: str, last: str) -> list[dict[str, Any]]:
        """The part records with ids first..last (records only, never text)."""
        return self.clients.drive(query_all(parts_query(self.clients.config.parts_table, validation_id, first, last)))

    def put_planned(self, parts: list[dict[str, Any]], expires_at: int) -> None:
        """A planned file's part records (lambdas/plan_files), PENDING; written again the same
        when the plan step is retried (the ids are the file's index and the part's position)."""
        with self._table.batch_writer() as batch:
            for part in parts:
                batch.put_item(Item={**part, "expires_at": expires_at})

    def of_file(self, validation_id: str, index: int) -> list[dict[str, Any]]:
        first, last = file_range(index, index)
        return self.in_range(validation_id, first, last)

    def _settle(
        self,
        validation_id: str,
        part: dict[str, Any],
        status: PartStatus,
        fields: dict[str, Any],
        counters: dict[str, int],
    ) -> bool:
        """Move a PENDING part to its final status and bump the validation's counters (its tally,
        core/tallies.py), atomically.

        False when the part had already settled (a retried or duplicated invocation).
        """
        config = self.clients.config
        settle = (
            Update()
            .set(status=status.value, **fields)
            .when("{status} = :pending", pending=PartStatus.PENDING.value)
            .item(config.parts_table, {"validation_id": validation_id, "part_id": part["part_id"]}, None)
        )
        # Per-file settled counts tell a client's per-file progress without reading the file's parts.
        settled = {int(part["file_index"]): 1}
        key, expires_at = part["part_id"], part.get("expires_at") or expiry(config.retention_days)
        count = tallies.update(
            config.parts_table, validation_id, key, counters, settled=settled, expires_at=expires_at, marshal=None
        )
        try:
            self.clients.transact([{"Update": settle}, {"Update": count}])
        except ClientError as exc:
            if is_condition_failure(exc):
                return False
            raise
        return True

    def record_success(
        self,
        validation_id: str,
        part: dict[str, Any],
        rules: list[dict[str, Any]],
        usage: dict[str, int],
        model: str,
        checks: dict[str, int] | None = None,
    ) -> bool:
        """The part's grounded verdicts; `checks` (relocated, ungrounded, reasked) join the validation's usage.
        The tokens were counted per attempt (Validations.count_attempt)."""
        fields = {"rules": rules, "usage": usage, "model": model, "finished_at": now_iso()}
        return self._settle(validation_id, part, PartStatus.SUCCEEDED, fields, {"succeeded": 1, **_counters(checks)})

    def record_reused(
        self, validation_id: str, part: dict[str, Any], rules: list[dict[str, Any]], model: str, digest: str
    ) -> bool:
        """A part answered by a stored verdict: no call, no tokens; counted in `reused_parts`."""
        fields = {"rules": rules, "model": model, "reused": digest, "finished_at": now_iso()}
        return self._settle(validation_id, part, PartStatus.SUCCEEDED, fields, {"succeeded": 1, "reused_parts": 1})

    def keep_batch_answer(
        self, validation_id: str, part_id: str, answer: dict[str, Any], counted: dict[str, Any]
    ) -> bool:
        """Keep a PENDING part's Batch API answer (lambdas/batch) for ValidatePart, once per batch, in
        one transaction with `counted` (the attempt on the validation's usage: counted exactly when
        kept): False when the part settled, or this batch's answer is kept already (a retried poll)."""
        update = (
            Update()
            .set(batch_answer=answer)
            .when(
                "{status} = :pending AND (attribute_not_exists({batch_answer}) OR {batch_answer}.{batch} <> :batch)",
                pending=PartStatus.PENDING.value,
                batch=answer["batch"],
            )
            .item(self.clients.config.parts_table, {"validation_id": validation_id, "part_id": part_id}, None)
        )
        try:
            self.clients.transact([{"Update": update}, {"Update": counted}])
        except ClientError as exc:
            if is_condition_failure(exc):
                return False
            raise
        return True

    def record_failure(self, validation_id: str, part: dict[str, Any], error: dict[str, str]) -> bool:
        fields = {"error": error, "finished_at": now_iso()}
        return self._settle(validation_id, part, PartStatus.FAILED, fields, {"failed": 1})

    # --- whole-file verdicts (the combine step) ----------------------------------------------
    def _item(self, validation_id: str, key: str) -> dict[str, Any] | None:
        item = self._table.get_item(Key={"validation_id": validation_id, "part_id": key}, ConsistentRead=True)
        return plain(item["Item"]) if "Item" in item else None

    def verdict(self, validation_id: str, index: int) -> dict[str, Any] | None:
        return self._item(validation_id, verdict_id(index))

    def combine_node(self, validation_id: str, node: str) -> dict[str, Any] | None:
        return self._item(validation_id, node)

    def put_combine_node(self, validation_id: str, node: str, index: int, report: dict[str, Any]) -> dict[str, Any]:
        """Store an intermediate report once; a duplicate invocation gets the stored one back."""
        item = {
            "validation_id": validation_id,
            "part_id": node,
            "file_index": index,
            "expires_at": expiry(self.clients.config.retention_days),
            **report,
        }
        try:
            self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(part_id)")
        except ClientError as exc:
            if is_condition_failure(exc):
                return self.combine_node(validation_id, node) or item
            raise
        return item

    def record_verdict(
        self,
        validation_id: str,
        index: int,
        run: int,
        fields: dict[str, Any],
        failed: bool,
        checks: dict[str, int] | None = None,
    ) -> bool:
        """The file's verdict (or the combine step's failure) and the validation's counters, once."""
        config = self.clients.config
        item = {
            "validation_id": validation_id,
            "part_id": verdict_id(index),
            "file_index": index,
            "run": run,
            "status": (PartStatus.FAILED if failed else PartStatus.SUCCEEDED).value,
            "finished_at": now_iso(),
            "expires_at": expiry(config.retention_days),
            **fields,
        }
        counters = {"combine_failed" if failed else "combined": 1, **_counters(checks)}
        put = {"TableName": config.parts_table, "Item": item, "ConditionExpression": "attribute_not_exists(part_id)"}
        count = tallies.update(
            config.parts_table, validation_id, verdict_id(index), counters, expires_at=item["expires_at"], marshal=None
        )
        try:
            self.clients.transact([{"Put": put}, {"Update": count}])
        except ClientError as exc:
            if is_condition_failure(exc):
                return False
            raise
        return True

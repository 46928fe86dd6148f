"""The validations table, as the Lambdas read and write it: the record, its counters (kept on
its tallies, core/tallies.py), its terminal status (with the end's marker, core/ends.py), its plan, and settlement."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from core import detail, ends, pricing, tallies
from core.clock import expiry, now_iso
from core.dynamo import Update, from_item, plain
from core.pricing import Tier
from core.quota import settle_steps
from core.records import ValidationStatus
from core.steps import query_all
from lambdas.common.errors import is_condition_failure
from lambdas.common.stores.base import Clients
from lambdas.common.stores.users import Users


@dataclass(frozen=True)
class Settled:
    """A run's settlement: whether this call made it, and what the run cost (None: no price)."""

    done: bool
    cost: Decimal | None = None
    model: str | None = None

    def __bool__(self) -> bool:
        return self.done


def attempt_counters(usage: dict[str, int] | None, tier: Tier) -> dict[str, int]:
    """What one model attempt adds to a validation's usage (Validations.count_attempt)."""
    counters = {"attempts": 1}
    if usage is not None:
        counters.update(model_calls=1)
        counters.update(
            pricing.counters(
                tier, usage["prompt_tokens"], usage.get("cached_prompt_tokens", 0), usage["completion_tokens"]
            )
        )
    return counters


@dataclass(frozen=True)
class Validations:
    clients: Clients
    users: Users

    @property
    def _table(self) -> Any:
        return self.clients.table(self.clients.config.validations_table)

    def get(self, validation_id: str, *attributes: str) -> dict[str, Any]:
        """The record (only `attributes`, when given), read consistently, with its files and rules
        from its detail (core/detail.py) when asked for; LookupError when missing."""
        kwargs: dict[str, Any] = {"Key": {"id": validation_id}, "ConsistentRead": True}
        if attributes:
            kwargs["ProjectionExpression"] = ", ".join(f"#{a}" for a in attributes)
            kwargs["ExpressionAttributeNames"] = {f"#{a}": a for a in attributes}
        item = self._table.get_item(**kwargs).get("Item")
        if item is None:
            raise LookupError(f"validation {validation_id} does not exist")
        record: dict[str, Any] = plain(item)
        if wanted := detail.wanted(attributes):
            found = self.clients.client.get_item(**detail.get(self.clients.config.parts_table, validation_id, wanted))
            record = detail.merge(record, from_item(found["Item"]) if "Item" in found else None, wanted)
        return record

    def _update(self, validation_id: str, update: Update) -> bool:
        """The update; False when its condition did not hold."""
        try:
            self._table.update_item(Key={"id": validation_id}, **update.request())
        except ClientError as exc:
            if is_condition_failure(exc):
                return False
            raise
        return True

    def counted(self, validation_id: str, *attributes: str) -> dict[str, Any]:
        """The record (only `attributes`, when given) with its counters (core/tallies.py) added."""
        record = self.get(validation_id, *attributes)
        config = self.clients.config
        return tallies.merge(record, self.clients.drive(query_all(tallies.query(config.parts_table, validation_id))))

    def count_attempt(
        self,
        validation_id: str,
        usage: dict[str, int] | None,
        tier: Tier = "standard",
        model: str | None = None,
    ) -> None:
        """Every model attempt on the validation's usage, as soon as it returns: answered ones with
        their tokens by the tier that served them (what the owner is charged at settlement, and
        priced at), refused or failed ones as attempts. The first answer names the served model.
        One write on one of the validation's tallies (any: attempts are not retried writes)."""
        config = self.clients.config
        request = tallies.update(
            config.parts_table,
            validation_id,
            secrets.token_hex(4),
            attempt_counters(usage, tier),
            served_model=model if usage is not None else None,
            expires_at=expiry(config.retention_days),
        )
        self.clients.client.update_item(**request)

    def attempt_item(
        self, validation_id: str, key: str, usage: dict[str, int], tier: Tier, model: str
    ) -> dict[str, Any]:
        """`count_attempt`'s write as a transaction's Update, on the tally of `key` (with another
        item's write: counted once)."""
        counters = attempt_counters(usage, tier)
        config = self.clients.config
        expires_at = expiry(config.retention_days)
        return tallies.update(
            config.parts_table, validation_id, key, counters, served_model=model, expires_at=expires_at, marshal=None
        )

    def finish(
        self,
        validation_id: str,
        run: int,
        status: ValidationStatus,
        error: dict[str, str] | None,
        *,
        from_queued: bool = False,
    ) -> bool:
        """Terminal status for this run, unless the validation moved on (cancelled, or rerun).
        `from_queued`: also end a run still QUEUED (MarkFailed after Admit gave up)."""
        # With the marker: until announce_end removes it, the reconciler finishes announcing (core/ends.py).
        update = Update().set(status=status.value, finished_at=now_iso(), **{ends.MARKER: ends.shard_of(validation_id)})
        if error is not None:
            update.set(error=error).remove("queue_key")  # a run ended while QUEUED leaves the queue
        else:
            update.remove("error", "queue_key")
        queued = ValidationStatus.QUEUED if from_queued else ValidationStatus.RUNNING
        update.when(
            "{status} IN (:running, :queued) AND {run} = :run",
            running=ValidationStatus.RUNNING.value,
            queued=queued.value,
            run=run,
        )
        return self._update(validation_id, update)

    def end_open(
        self,
        validation_id: str,
        run: int,
        status: ValidationStatus,
        to: ValidationStatus,
        error: dict[str, str] | None,
    ) -> bool:
        """`status` → terminal `to` for this run, unless the validation moved on meanwhile."""
        update = Update().set(status=to.value, finished_at=now_iso(), **{ends.MARKER: ends.shard_of(validation_id)})
        if error:
            update.set(error=error)
        update.remove("queue_key").when("{status} = :from AND {run} = :run", run=run, **{"from": status.value})
        return self._update(validation_id, update)

    def open(self, status: str) -> Iterator[dict[str, Any]]:
        """Every validation with this status (the `by_status` index), oldest first; the index is
        eventually consistent, so callers re-check with conditional writes."""
        kwargs: dict[str, Any] = {
            "IndexName": "by_status",
            "KeyConditionExpression": "#status = :status",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": {":status": status},
        }
        while True:
            page = self._table.query(**kwargs)
            for item in page["Items"]:
                record: dict[str, Any] = plain(item)
                yield record
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # --- announcing ends (core/ends.py) ------------------------------------------------
    def clear_end_marker(self, validation_id: str, run: int) -> bool:
        """Run `run`'s end is announced: remove its marker (False: gone already, or another run)."""
        try:
            self.clients.client.update_item(
                **ends.clear_update(self.clients.config.validations_table, validation_id, run)
            )
        except ClientError as exc:
            if is_condition_failure(exc):
                return False
            raise
        return True

    def marked_ends(self) -> Iterator[tuple[str, str]]:
        """(id, finished_at) of validations whose end may not be announced yet (the sparse
        `notify_pending` index)."""
        for shard in ends.shards():
            request = ends.pending_query(self.clients.config.validations_table, shard)
            for item in self.clients.drive(query_all(request)):
                yield str(item["id"]), str(item.get("finished_at", ""))

    # --- parallelism (core/governor.py) ------------------------------------------------
    def save_plan(self, validation_id: str, plan: dict[str, Any]) -> None:
        update = Update().set(plan=plan, parallelism=plan["parallelism"]).when("attribute_exists({id})")
        self._table.update_item(Key={"id": validation_id}, **update.request())

    def show_parallelism(self, validation_id: str, value: int) -> int:
        """Record the validation's effective parallelism when it changes (read by GET and progress)."""
        self._update(validation_id, Update().set(parallelism=value))
        return value

    # --- settlement (core/quota.py builds the requests) ----------------------------------
    def settle(self, validation_id: str) -> Settled:
        """Refund what the current run reserved and did not use, and charge its cost to the owner's
        spend; once per run (false when there was nothing to do)."""
        fields = (
            "id",
            "owner",
            "reserved",
            "reserved_run",
            "settled_run",
            "usage_at_start",
            *pricing.USAGE_FIELDS,  # the run's tokens by tier, priced at `prices`, join the owner's spend
            "prices",
            "model",
            "spend_charged",
            "budget_key",
            "budget_reserved",
        )
        record = self.counted(validation_id, *fields)
        quota = self.users.quota_of(record["owner"])
        config = self.clients.config
        steps = settle_steps(config.validations_table, config.buckets_table, record, quota, config.spend_table)
        if not self.clients.drive(steps):
            return Settled(False)
        total = pricing.record_cost(record)
        before = Decimal(str((record.get("spend_charged") or {}).get("usd", 0)))
        return Settled(True, None if total is None else total - before, record.get("model"))

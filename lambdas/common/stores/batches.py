"""The Batch API lane's records (lambdas/batch).

- Each batch of a run is an item of the parts table beside the parts (`batch#<run>#<seq>`, a
  key that sorts after every part id, as the combine nodes' do): its provider id, status,
  request counts, the part-id range it covers, its attempt (2: a resubmission after expiry) and
  the enqueued tokens it holds.
- The part ids an expired batch left unexecuted wait for their one resubmission in an item
  `again#<run>#<seq>` until it is submitted.
- Each model's enqueued tokens (the provider's batch queue limit) are one item of the governor
  table (`pk=batch-queue#<model>`): a submission reserves its tokens with one conditional
  UpdateItem, in the same transaction that records the batch; the batch's end gives them back,
  in the same transaction that marks it ended, so each happens once.
- The validation shows a summary (`batch`: status, request counts) and the last part id
  submitted fresh (`batch_cursor`, `<run>|<part id>`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from core.batching import BatchStatus
from core.clock import expiry, now_iso
from core.dynamo import Update, plain
from core.records import parts_query
from core.steps import query_all
from lambdas.common.errors import is_condition_failure
from lambdas.common.stores.base import Clients


def batch_key(run: int, seq: int) -> str:
    return f"batch#{run:03d}#{seq:04d}"


def again_key(run: int, seq: int) -> str:
    return f"again#{run:03d}#{seq:04d}"


def queue_key(model: str) -> dict[str, str]:
    return {"pk": f"batch-queue#{model}", "sk": "enqueued"}


@dataclass(frozen=True)
class Batches:
    clients: Clients

    @property
    def _parts_table(self) -> str:
        return self.clients.config.parts_table

    def _query(self, validation_id: str, prefix: str) -> list[dict[str, Any]]:
        return self.clients.drive(query_all(parts_query(self._parts_table, validation_id, prefix, prefix + "~")))

    def of_run(self, validation_id: str, run: int) -> list[dict[str, Any]]:
        """The run's batches, in the order they were made."""
        return self._query(validation_id, f"batch#{run:03d}#")

    def held(self, validation_id: str, run: int) -> list[dict[str, Any]]:
        """The run's expired requests not resubmitted yet."""
        return [i for i in self._query(validation_id, f"again#{run:03d}#") if not i.get("submitted")]

    def enqueued(self, model: str) -> int:
        """The model's tokens in batches not ended (every validation's)."""
        item = self.clients.client.get_item(
            TableName=self.clients.config.governor_table,
            Key={k: {"S": v} for k, v in queue_key(model).items()},
            ConsistentRead=True,
        ).get("Item")
        return int(item["enqueued"]["N"]) if item and "enqueued" in item else 0

    def reserve(
        self, validation_id: str, run: int, seq: int, model: str, tokens: int, limit: int, fields: dict[str, Any]
    ) -> bool:
        """Record a batch about to be created (`submitting`) and reserve its tokens in the model's queue,
        in one transaction; False when the queue has no room for them (or the batch is recorded)."""
        config = self.clients.config
        item = {
            "validation_id": validation_id,
            "part_id": batch_key(run, seq),
            "run": run,
            "seq": seq,
            "model": model,
            "tokens": tokens,
            "status": BatchStatus.SUBMITTING.value,
            "created_at": now_iso(),
            "expires_at": expiry(config.retention_days),
            **fields,
        }
        put = {
            "TableName": self._parts_table,
            "Item": item,
            "ConditionExpression": "attribute_not_exists(part_id)",
        }
        room = max(0, limit - tokens)  # a batch above the whole limit goes only into an empty queue
        add = (
            Update()
            .add(enqueued=tokens)
            .when("attribute_not_exists({enqueued}) OR {enqueued} <= :room", room=room)
            .item(config.governor_table, queue_key(model), None)
        )
        try:
            self.clients.transact([{"Put": put}, {"Update": add}])
        except ClientError as exc:
            if is_condition_failure(exc):
                return False
            raise
        return True

    def created(self, validation_id: str, key: str, batch_id: str, then: dict[str, Any]) -> bool:
        """The provider created the batch: its id on the record, and in the same transaction what it
        took (`then`: a transaction item moving the cursor or marking a resubmission submitted)."""
        update = (
            Update()
            .set(batch_id=batch_id, status=BatchStatus.VALIDATING.value)
            .when("{status} = :submitting", submitting=BatchStatus.SUBMITTING.value)
            .item(self._parts_table, {"validation_id": validation_id, "part_id": key}, None)
        )
        try:
            self.clients.transact([{"Update": update}, then])
        except ClientError as exc:
            if is_condition_failure(exc):
                return False
            raise
        return True

    def cursor_item(self, validation_id: str, run: int, part_id: str) -> dict[str, Any]:
        """The transaction item moving the run's cursor (the last part submitted fresh) to `part_id`."""
        update = Update().set(batch_cursor=f"{run}|{part_id}")
        return {"Update": update.item(self.clients.config.validations_table, {"id": validation_id}, None)}

    def submitted_item(self, validation_id: str, key: str) -> dict[str, Any]:
        """The transaction item marking a held resubmission submitted."""
        update = Update().set(submitted=True).when("attribute_not_exists({submitted})")
        return {"Update": update.item(self._parts_table, {"validation_id": validation_id, "part_id": key}, None)}

    def seen(self, validation_id: str, key: str, status: str, counts: dict[str, int]) -> None:
        """The provider's status and request counts, as last read (not once ended here)."""
        update = Update().set(status=status, request_counts=counts).when("attribute_not_exists({ended})")
        try:
            self.clients.table(self._parts_table).update_item(
                Key={"validation_id": validation_id, "part_id": key}, **update.request()
            )
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise

    def end(self, validation_id: str, batch: dict[str, Any], status: str, note: str | None = None) -> bool:
        """The batch ended (collected, or given up): marked so, and its tokens back to the model's queue,
        once (False: ended before)."""
        config = self.clients.config
        update = Update().set(status=status, ended=now_iso())
        if note:
            update.set(note=note)
        mark = update.when("attribute_not_exists({ended})").item(
            self._parts_table, {"validation_id": validation_id, "part_id": batch["part_id"]}, None
        )
        release = (
            Update().add(enqueued=-int(batch["tokens"])).item(config.governor_table, queue_key(batch["model"]), None)
        )
        try:
            self.clients.transact([{"Update": mark}, {"Update": release}])
        except ClientError as exc:
            if is_condition_failure(exc):
                return False
            raise
        return True

    def hold(self, validation_id: str, run: int, seq: int, part_ids: list[str]) -> None:
        """Keep an expired batch's unexecuted part ids for their one resubmission (once per batch)."""
        item = {
            "validation_id": validation_id,
            "part_id": again_key(run, seq),
            "parts": part_ids,
            "expires_at": expiry(self.clients.config.retention_days),
        }
        try:
            self.clients.table(self._parts_table).put_item(
                Item=item, ConditionExpression="attribute_not_exists(part_id)"
            )
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise

    def show(self, validation_id: str, summary: dict[str, Any]) -> bool:
        """The validation's `batch` summary; True when it changed (an event is due)."""
        table = self.clients.table(self.clients.config.validations_table)
        before = table.get_item(
            Key={"id": validation_id}, ProjectionExpression="#b", ExpressionAttributeNames={"#b": "batch"}
        ).get("Item", {})
        if plain(before.get("batch")) == summary:
            return False
        table.update_item(Key={"id": validation_id}, **Update().set(batch=summary).request())
        return True

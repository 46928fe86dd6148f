"""DynamoDB and S3 access for the Lambdas (boto3). Every write is safe to run twice."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from core import ends, events
from core.clock import expiry, now_iso
from core.dynamo import plain
from core.lines import decode_part
from core.queue import leave_queue_steps, park_steps, release_steps, wake_steps
from core.quota import Quota, settle_steps
from core.records import ChunkStatus, ValidationStatus, file_range, parts_query, verdict_id
from core.results import file_result
from core.steps import STEP_FUNCTIONS_OPERATIONS, Driven, Step, StepAnswer, answer_to_error, query_all
from lambdas.common.config import LambdaConfig
from lambdas.common.errors import is_condition_failure

T = TypeVar("T")


@dataclass
class Store:
    config: LambdaConfig
    dynamodb: Any
    s3: Any
    client: Any  # low-level DynamoDB client, for the typed requests built in core/quota.py
    sfn: Any = None  # Step Functions, for the queue's wake-ups (core/queue.py)

    @property
    def _validations(self) -> Any:
        return self.dynamodb.Table(self.config.validations_table)

    @property
    def _chunks(self) -> Any:
        return self.dynamodb.Table(self.config.chunks_table)

    def validation(self, validation_id: str, *attributes: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"Key": {"id": validation_id}, "ConsistentRead": True}
        if attributes:
            kwargs["ProjectionExpression"] = ", ".join(f"#{a}" for a in attributes)
            kwargs["ExpressionAttributeNames"] = {f"#{a}": a for a in attributes}
        item = self._validations.get_item(**kwargs).get("Item")
        if item is None:
            raise LookupError(f"validation {validation_id} does not exist")
        record: dict[str, Any] = plain(item)
        return record

    def chunks(self, validation_id: str, first: str, last: str) -> list[dict[str, Any]]:
        return self.drive(query_all(parts_query(self.config.chunks_table, validation_id, first, last)))

    def _text(self, key: str, start: int, end: int) -> str:
        """Bytes start..end-1 of a stored file as text (core/lines.decode_part: a leading BOM is not text)."""
        if end <= start:
            return ""
        body = self.s3.get_object(Bucket=self.config.uploads_bucket, Key=key, Range=f"bytes={start}-{end - 1}")[
            "Body"
        ].read()
        return decode_part(body, start)

    def chunk_text(self, chunk: dict[str, Any]) -> str:
        return self._text(chunk["key"], int(chunk["start_byte"]), int(chunk["end_byte"]))

    def part_header(self, chunk: dict[str, Any]) -> str | None:
        """The CSV/TSV header row given to a later part as context (core/parts.py), or None."""
        header = chunk.get("header")
        return self._text(chunk["key"], int(header["start_byte"]), int(header["end_byte"])) if header else None

    def count_attempt(self, validation_id: str, usage: dict[str, int] | None) -> None:
        """Every model attempt on the validation's usage, as soon as it returns: answered ones with
        their tokens (what the owner is charged at settlement), refused or failed ones as attempts."""
        counters = {"attempts": 1}
        if usage is not None:
            counters.update(
                model_calls=1, prompt_tokens=usage["prompt_tokens"], completion_tokens=usage["completion_tokens"]
            )
        self._validations.update_item(
            Key={"id": validation_id},
            UpdateExpression="ADD " + ", ".join(f"{k} :{k}" for k in counters),
            ExpressionAttributeValues={f":{k}": v for k, v in counters.items()},
        )

    def _settle_chunk(
        self,
        validation_id: str,
        chunk: dict[str, Any],
        status: ChunkStatus,
        fields: dict[str, Any],
        counters: dict[str, int],
    ) -> bool:
        """Move a PENDING chunk to its final status and bump the validation's counters, atomically.

        False when the chunk had already settled (a retried or duplicated invocation).
        """
        names = {"#status": "status", **{f"#{k}": k for k in fields}}
        values = {
            ":pending": ChunkStatus.PENDING.value,
            ":status": status.value,
            **{f":{k}": v for k, v in fields.items()},
        }
        sets = ", ".join(["#status = :status", *(f"#{k} = :{k}" for k in fields)])
        try:
            # The resource's client serializes Python values itself (boto3's transformation injector).
            self.dynamodb.meta.client.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.config.chunks_table,
                            "Key": {"validation_id": validation_id, "chunk_id": chunk["chunk_id"]},
                            "UpdateExpression": f"SET {sets}",
                            "ConditionExpression": "#status = :pending",
                            "ExpressionAttributeNames": names,
                            "ExpressionAttributeValues": values,
                        }
                    },
                    {
                        "Update": {
                            "TableName": self.config.validations_table,
                            "Key": {"id": validation_id},
                            # Per-file settled counts tell the event writer when a file is complete
                            # without reading the file's chunks after every chunk.
                            "UpdateExpression": "ADD "
                            + ", ".join(f"{k} :{k}" for k in counters)
                            + " SET file_settled.#file = file_settled.#file + :one",
                            "ExpressionAttributeNames": {"#file": str(chunk["file_index"])},
                            "ExpressionAttributeValues": {**{f":{k}": v for k, v in counters.items()}, ":one": 1},
                        }
                    },
                ]
            )
        except ClientError as exc:
            if is_condition_failure(exc):
                return False
            raise
        return True

    def record_success(
        self,
        validation_id: str,
        chunk: dict[str, Any],
        rules: list[dict[str, Any]],
        usage: dict[str, int],
        model: str,
        checks: dict[str, int] | None = None,
    ) -> bool:
        """The part's grounded verdicts; `checks` (relocated, ungrounded, reasked) join the validation's usage."""
        return self._settle_chunk(
            validation_id,
            chunk,
            ChunkStatus.SUCCEEDED,
            {"rules": rules, "usage": usage, "model": model, "finished_at": now_iso()},
            # the tokens were counted per attempt (count_attempt)
            {"succeeded": 1, **{k: v for k, v in (checks or {}).items() if v}},
        )

    def record_reused(
        self, validation_id: str, chunk: dict[str, Any], rules: list[dict[str, Any]], model: str, digest: str
    ) -> bool:
        """A part answered by a stored verdict: no call, no tokens; counted in `reused_parts`."""
        return self._settle_chunk(
            validation_id,
            chunk,
            ChunkStatus.SUCCEEDED,
            {"rules": rules, "model": model, "reused": digest, "finished_at": now_iso()},
            {"succeeded": 1, "reused_parts": 1},
        )

    # --- reuse: question digest → answer (core/prompt.question_digest) -------------------
    def stored_answer(self, digest: str) -> dict[str, Any] | None:
        """The parsed answer (a part's or a combine call's) stored for this digest, unless expired."""
        if not self.config.reuse_table:
            return None
        item = (
            self.dynamodb.Table(self.config.reuse_table)
            .get_item(Key={"digest": digest}, ConsistentRead=True)
            .get("Item")
        )
        if item is None or int(item.get("expires_at", 0)) < time.time():  # TTL deletes lazily
            return None
        found: dict[str, Any] = plain(item)
        return found

    def store_answer(self, digest: str, answer: dict[str, Any]) -> None:
        """Keep a parsed answer for reuse (`retention_days`); the latest answer wins."""
        if self.config.reuse_table:
            self.dynamodb.Table(self.config.reuse_table).put_item(
                Item={**answer, "digest": digest, "expires_at": expiry(self.config.retention_days)}
            )

    def record_failure(self, validation_id: str, chunk: dict[str, Any], error: dict[str, str]) -> bool:
        return self._settle_chunk(
            validation_id, chunk, ChunkStatus.FAILED, {"error": error, "finished_at": now_iso()}, {"failed": 1}
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
        values: dict[str, Any] = {
            ":status": status.value,
            ":now": now_iso(),
            ":running": ValidationStatus.RUNNING.value,
            ":queued": ValidationStatus.QUEUED.value if from_queued else ValidationStatus.RUNNING.value,
            ":run": run,
            ":marker": ends.shard_of(validation_id),
        }
        # With the marker: until announce_end removes it, the reconciler finishes announcing (core/ends.py).
        expression = f"SET #status = :status, finished_at = :now, {ends.MARKER} = :marker"
        if error is not None:
            expression += ", #error = :error REMOVE queue_key"  # a run ended while QUEUED leaves the queue
            values[":error"] = error
        else:
            expression += " REMOVE #error, queue_key"
        try:
            self._validations.update_item(
                Key={"id": validation_id},
                UpdateExpression=expression,
                ConditionExpression="#status IN (:running, :queued) AND run = :run",
                ExpressionAttributeNames={"#status": "status", "#error": "error"},
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if is_condition_failure(exc):
                return False
            raise
        return True

    def open_validations(self, status: str) -> Iterator[dict[str, Any]]:
        """Every validation with this status (the `by_status` index), oldest first; the index is
        eventually consistent, so callers re-check with conditional writes."""
        kwargs: dict[str, Any] = {
            "IndexName": "by_status",
            "KeyConditionExpression": "#status = :status",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": {":status": status},
        }
        while True:
            page = self._validations.query(**kwargs)
            for item in page["Items"]:
                record: dict[str, Any] = plain(item)
                yield record
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def end_open(
        self,
        validation_id: str,
        run: int,
        status: ValidationStatus,
        to: ValidationStatus,
        error: dict[str, str] | None,
    ) -> bool:
        """`status` → terminal `to` for this run, unless the validation moved on meanwhile."""
        sets = f"SET #status = :to, finished_at = :now, {ends.MARKER} = :marker" + (
            ", #error = :error" if error else ""
        )
        values: dict[str, Any] = {
            ":to": to.value,
            ":now": now_iso(),
            ":from": status.value,
            ":run": run,
            ":marker": ends.shard_of(validation_id),
        }
        if error:
            values[":error"] = error
        try:
            self._validations.update_item(
                Key={"id": validation_id},
                UpdateExpression=sets + " REMOVE queue_key",
                ConditionExpression="#status = :from AND run = :run",
                ExpressionAttributeNames={"#status": "status", **({"#error": "error"} if error else {})},
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if is_condition_failure(exc):
                return False
            raise
        return True

    # --- announcing ends (core/ends.py) ------------------------------------------------
    def clear_end_marker(self, validation_id: str, run: int) -> bool:
        """Run `run`'s end is announced: remove its marker (False: gone already, or another run)."""
        try:
            self.client.update_item(**ends.clear_update(self.config.validations_table, validation_id, run))
        except ClientError as exc:
            if is_condition_failure(exc):
                return False
            raise
        return True

    def marked_ends(self) -> Iterator[tuple[str, str]]:
        """(id, finished_at) of validations whose end may not be announced yet (the sparse
        `notify_pending` index)."""
        for shard in ends.shards():
            request = ends.pending_query(self.config.validations_table, shard)
            for item in self.drive(query_all(request)):
                yield str(item["id"]), str(item.get("finished_at", ""))

    def has_status_event(self, validation_id: str, status: str, run: int) -> bool:
        """Whether the validation's newest status event says `status` for run `run`."""
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "validation_id = :v",
            "ExpressionAttributeValues": {":v": validation_id},
            "ScanIndexForward": False,
            "Limit": 20,
        }
        while True:
            page = self.dynamodb.Table(self.config.events_table).query(**kwargs)
            for item in page["Items"]:
                if item["type"] == events.STATUS:
                    data = json.loads(str(item["data"]))
                    return bool(data.get("status") == status and int(data.get("run", 0)) == run)
            if "LastEvaluatedKey" not in page:
                return False
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # --- parallelism (core/governor.py) ------------------------------------------------
    def save_plan(self, validation_id: str, plan: dict[str, Any]) -> None:
        self._validations.update_item(
            Key={"id": validation_id},
            UpdateExpression="SET #plan = :plan, parallelism = :p",
            ExpressionAttributeNames={"#plan": "plan"},
            ExpressionAttributeValues={":plan": plan, ":p": plan["parallelism"]},
            ConditionExpression="attribute_exists(id)",
        )

    def show_parallelism(self, validation_id: str, value: int) -> int:
        """Record the validation's effective parallelism when it changes (read by GET and progress)."""
        self._validations.update_item(
            Key={"id": validation_id}, UpdateExpression="SET parallelism = :p", ExpressionAttributeValues={":p": value}
        )
        return value

    # --- quotas (core/quota.py builds the requests) -------------------------------------
    def quota_of(self, user_id: str) -> Quota | None:
        """The user's quota; None for principals without a user record (the bootstrap admin)."""
        return self.limits_of(user_id)[0]

    def limits_of(self, user_id: str) -> tuple[Quota | None, bool]:
        """The user's quota (None: no user record, the bootstrap admin) and whether it is disabled;
        one read. A quota stored before `max_queued` existed gets the configured default."""
        item = (
            self.dynamodb.Table(self.config.users_table)
            .get_item(Key={"user_id": user_id}, ConsistentRead=True)
            .get("Item")
        )
        if item is None:
            return None, False
        return Quota.of(plain(item["quota"]), self.config.default_max_queued), bool(item.get("disabled", False))

    def drive(self, steps: Generator[Step, StepAnswer, T]) -> T:
        """Run a core sans-IO rule (core/steps.py) against DynamoDB; return its result."""
        rule = Driven(steps)
        step = rule.start()
        while step is not None:
            operation, request = step
            client = self.sfn if operation in STEP_FUNCTIONS_OPERATIONS else self.client
            if client is None:
                raise TypeError(f"{operation} needs a Step Functions client")
            try:
                answer: StepAnswer = getattr(client, operation)(**request)
            except ClientError as exc:
                answer = answer_to_error(exc, step)
            step = rule.send(answer)
        return rule.result

    def settle(self, validation_id: str) -> bool:
        """Refund what the current run reserved and did not use; once per run (False if nothing to do)."""
        fields = (
            "id",
            "owner",
            "reserved",
            "reserved_run",
            "settled_run",
            "usage_at_start",
            "prompt_tokens",
            "completion_tokens",
        )
        v = self.validation(validation_id, *fields)
        quota = self.quota_of(v["owner"])
        return self.drive(settle_steps(self.config.validations_table, self.config.buckets_table, v, quota))

    # --- the queue (core/queue.py) ----------------------------------------------------------
    def leave_queue(self, validation_id: str, owner: str) -> bool:
        """Take a run that ends while QUEUED out of its owner's queue and count it off, once."""
        counted = self.quota_of(owner) is not None
        return self.drive(
            leave_queue_steps(self.config.validations_table, self.config.buckets_table, validation_id, owner, counted)
        )

    def release_queue_head(self, owner: str) -> str | None:
        """Wake the owner's queue head if it is parked (the id woken, or None)."""
        return self.drive(release_steps(self.config.validations_table, owner))

    def park(self, validation_id: str, run: int, token: str) -> bool:
        """Store a parked task's token on the validation while it is this QUEUED run."""
        return self.drive(park_steps(self.config.validations_table, validation_id, run, token, now_iso()))

    def wake(self, token: str) -> bool:
        """Send a parked task its token (False when it was spent already)."""
        return self.drive(wake_steps(token))

    # --- the event log behind SSE (core/events.py builds the requests) ---------------------
    def emit(self, validation_id: str, kind: str, data: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        """Append an event; `data` builds it from the validation record as of this event (returned)."""
        return self.drive(
            events.append_steps(self.config.validations_table, self.config.events_table, validation_id, kind, data)
        )

    def emit_status(self, validation_id: str) -> None:
        self.emit(validation_id, events.STATUS, events.status_of)

    def after_chunk(self, validation_id: str, run: int, chunk: dict[str, Any]) -> None:
        """Progress, and a single-part file's result once its part settled. A multi-part file's
        result comes from the combine step, which decides its verdict."""
        record = self.emit(validation_id, events.PROGRESS, events.progress_of)
        index = chunk["file_index"]
        if record["files"][index]["chunks"] == 1:
            self.report_file(validation_id, run, index, record)

    def report_file(self, validation_id: str, run: int, index: int, record: dict[str, Any] | None = None) -> None:
        """The file's `result` event, written once per file and run."""
        try:
            self.client.update_item(
                **events.claim_file_report(self.config.validations_table, validation_id, run, index)
            )
        except ClientError as exc:
            if is_condition_failure(exc):
                return  # another invocation reports this file
            raise
        record = record or self.validation(validation_id, "files", "rules")
        parts = self.file_parts(validation_id, index)
        verdict = self.verdict(validation_id, index) if len(parts) > 1 else None
        result = file_result(record["files"][index]["name"], parts, [r["id"] for r in record["rules"]], verdict)
        self.emit(validation_id, events.RESULT, lambda _: result)

    # --- whole-file verdicts (the combine step) ----------------------------------------------
    def file_parts(self, validation_id: str, index: int) -> list[dict[str, Any]]:
        first, last = file_range(index, index)
        return self.chunks(validation_id, first, last)

    def _item(self, validation_id: str, key: str) -> dict[str, Any] | None:
        item = self._chunks.get_item(Key={"validation_id": validation_id, "chunk_id": key}, ConsistentRead=True).get(
            "Item"
        )
        return plain(item) if item else None

    def verdict(self, validation_id: str, index: int) -> dict[str, Any] | None:
        return self._item(validation_id, verdict_id(index))

    def combine_node(self, validation_id: str, node: str) -> dict[str, Any] | None:
        return self._item(validation_id, node)

    def put_combine_node(self, validation_id: str, node: str, index: int, report: dict[str, Any]) -> dict[str, Any]:
        """Store an intermediate report once; a duplicate invocation gets the stored one back."""
        item = {
            "validation_id": validation_id,
            "chunk_id": node,
            "file_index": index,
            "expires_at": expiry(self.config.retention_days),
            **report,
        }
        try:
            self._chunks.put_item(Item=item, ConditionExpression="attribute_not_exists(chunk_id)")
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
        counters = {"combine_failed" if failed else "combined": 1, **{k: v for k, v in (checks or {}).items() if v}}
        item = {
            "validation_id": validation_id,
            "chunk_id": verdict_id(index),
            "file_index": index,
            "run": run,
            "status": (ChunkStatus.FAILED if failed else ChunkStatus.SUCCEEDED).value,
            "finished_at": now_iso(),
            "expires_at": expiry(self.config.retention_days),
            **fields,
        }
        try:
            self.dynamodb.meta.client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self.config.chunks_table,
                            "Item": item,
                            "ConditionExpression": "attribute_not_exists(chunk_id)",
                        }
                    },
                    {
                        "Update": {
                            "TableName": self.config.validations_table,
                            "Key": {"id": validation_id},
                            "UpdateExpression": "ADD " + ", ".join(f"#{k} :{k}" for k in counters),
                            "ExpressionAttributeNames": {f"#{k}": k for k in counters},
                            "ExpressionAttributeValues": {f":{k}": v for k, v in counters.items()},
                        }
                    },
                ]
            )
        except ClientError as exc:
            if is_condition_failure(exc):
                return False
            raise
        return True


def _client_kwargs(config: LambdaConfig) -> dict[str, Any]:
    # Many invocations share these clients in the embedded AWS (one per thread): a bigger pool.
    kwargs: dict[str, Any] = {
        "region_name": config.aws_region,
        "config": Config(retries={"mode": "standard"}, max_pool_connections=50),
    }
    if config.aws_endpoint_url:
        kwargs.update(endpoint_url=config.aws_endpoint_url, aws_access_key_id="local", aws_secret_access_key="local")
    return kwargs


@lru_cache(maxsize=32)
def store_for(config: LambdaConfig) -> Store:
    """One set of clients per configuration, reused across warm invocations."""
    kwargs = _client_kwargs(config)
    return Store(
        config,
        boto3.resource("dynamodb", **kwargs),
        boto3.client("s3", **kwargs),
        boto3.client("dynamodb", **kwargs),
        boto3.client("stepfunctions", **kwargs),
    )


@lru_cache(maxsize=32)
def client_for(config: LambdaConfig, service: str) -> Any:
    """A boto3 client of another service (Step Functions for the reconciler), as `store_for` builds its own."""
    return boto3.client(service, **_client_kwargs(config))

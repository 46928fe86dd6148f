"""DynamoDB and S3 records of validations, for the API (async, aioboto3 clients)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anyio.to_thread
from botocore.exceptions import ClientError

from app.aws.clients import AWSClients
from app.aws.errors import condition_failed, error_code
from app.aws.steps import drive
from app.limits import ByteGate
from app.settings import Settings
from app.validations.records import Part, Validation
from core import detail, ends, tallies
from core.clock import expiry
from core.dynamo import Update, from_item, to_item
from core.records import PartStatus, file_range, parts_query, verdict_id, verdict_range
from core.steps import cancellation_reasons, query_all

_WRITE_CONCURRENCY = 8
# Parts reset per transaction, with the validation's counters: TransactWriteItems takes 100 items.
_RESET_BATCH = 99
_PUT_BYTES_IN_FLIGHT = 8 * 1024 * 1024


class ValidationStore:
    def __init__(self, clients: AWSClients, settings: Settings) -> None:
        self._db = clients.dynamodb
        self._s3 = clients.s3
        self._validations = settings.table("validations")
        self._parts_table = settings.table("parts")
        self._idempotency = settings.table("idempotency")
        self._reuse = settings.table("reuse")
        self._bucket = settings.bucket
        self._idempotency_ttl = settings.idempotency_ttl_hours * 3600
        self._claim_seconds = int(settings.idempotency_claim_seconds)
        self._retention_days = settings.retention_days

    # --- the reuse cache (read by estimates; the validators write it) ----------------------
    async def reusable(self, digests: list[str]) -> set[str]:
        """Those of `digests` whose answer the reuse cache holds, unexpired (what a validator would reuse)."""
        found: set[str] = set()
        now = time.time()
        for start in range(0, len(digests), 100):  # BatchGetItem's limit
            request: dict[str, Any] = {
                self._reuse: {
                    "Keys": [to_item({"digest": d}) for d in dict.fromkeys(digests[start : start + 100])],
                    "ProjectionExpression": "digest, expires_at",
                }
            }
            while request:
                answer = await self._db.batch_get_item(RequestItems=request)
                for item in answer["Responses"].get(self._reuse, []):
                    values = from_item(item)
                    if int(values.get("expires_at", 0)) >= now:  # TTL deletes lazily
                        found.add(values["digest"])
                request = answer.get("UnprocessedKeys") or {}
        return found

    # --- validations -----------------------------------------------------------------
    async def get(self, validation_id: str) -> Validation | None:
        """The record with its counters (core/tallies.py), or None."""
        answer = await self._db.get_item(
            TableName=self._validations, Key=to_item({"id": validation_id}), ConsistentRead=True
        )
        return await self._counted(from_item(answer["Item"])) if "Item" in answer else None

    async def _counted(self, record: dict[str, Any], held: dict[str, Any] | None = None) -> Validation:
        """The record with its counters (core/tallies.py) and its files and rules (core/detail.py;
        `held`: read already)."""
        counts_read = drive(self._db, query_all(tallies.query(self._parts_table, record["id"])))
        if held is None:
            counts, found = await asyncio.gather(
                counts_read, self._db.get_item(**detail.get(self._parts_table, record["id"]))
            )
            held = from_item(found["Item"]) if "Item" in found else None
        else:
            counts = await counts_read
        return Validation.of(tallies.merge(detail.merge(record, held), counts))

    async def _details(self, validation_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The detail items of several validations (BatchGetItem, 100 keys at a time), by id."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(validation_ids), 100):
            request: dict[str, Any] = {
                self._parts_table: {
                    "Keys": [to_item(detail.key(v)) for v in validation_ids[start : start + 100]],
                    "ConsistentRead": True,
                }
            }
            while request:
                answer = await self._db.batch_get_item(RequestItems=request)
                for item in answer["Responses"].get(self._parts_table, []):
                    values = from_item(item)
                    found[values["validation_id"]] = values
                request = answer.get("UnprocessedKeys") or {}
        return found

    async def put_detail(self, record: dict[str, Any]) -> dict[str, Any]:
        """Store a new validation's files and rules on their own item (core/detail.py); the record
        without them."""
        slim, item = detail.split(record)
        await self._db.put_item(TableName=self._parts_table, Item=to_item(item))
        return slim

    async def delete(self, validation_id: str) -> None:
        await self._db.delete_item(TableName=self._validations, Key=to_item({"id": validation_id}))

    async def update(
        self,
        validation_id: str,
        sets: dict[str, Any],
        *,
        expect: dict[str, Any] | None = None,
        remove: tuple[str, ...] = (),
    ) -> bool:
        """SET the fields; only if every `expect` field has that value (False otherwise)."""
        update = Update().set(**sets).remove(*remove)
        for name, value in (expect or {}).items():
            update.when(f"{{{name}}} = :expect_{name}", **{f"expect_{name}": value})
        try:
            await self._db.update_item(**update.item(self._validations, {"id": validation_id}, to_item))
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    async def clear_end_marker(self, validation_id: str, run: int) -> bool:
        """Run `run`'s end is announced: its marker off (core/ends.py). False: gone already, or another run."""
        try:
            await self._db.update_item(**ends.clear_update(self._validations, validation_id, run))
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    async def list_for_owner(
        self, owner: str, limit: int, start_key: dict[str, Any] | None
    ) -> tuple[list[Validation], dict[str, Any] | None]:
        kwargs: dict[str, Any] = {
            "TableName": self._validations,
            "IndexName": "by_owner",
            "KeyConditionExpression": "#owner = :owner",
            "ExpressionAttributeNames": {"#owner": "owner"},
            "ExpressionAttributeValues": to_item({":owner": owner}),
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if start_key:
            kwargs["ExclusiveStartKey"] = to_item(start_key)
        page = await self._db.query(**kwargs)
        last = from_item(page["LastEvaluatedKey"]) if "LastEvaluatedKey" in page else None
        records = [from_item(i) for i in page["Items"]]
        held = await self._details([r["id"] for r in records])
        counted = await asyncio.gather(*(self._counted(r, held.get(r["id"], {})) for r in records))
        return list(counted), last

    async def queued_of(self, owner: str) -> list[str]:
        """Ids of `owner`'s validations still in the queue (the `queue_by_owner` index), oldest first."""
        kwargs: dict[str, Any] = {
            "TableName": self._validations,
            "IndexName": "queue_by_owner",
            "KeyConditionExpression": "#owner = :owner",
            "ExpressionAttributeNames": {"#owner": "owner"},
            "ExpressionAttributeValues": to_item({":owner": owner}),
        }
        ids: list[str] = []
        while True:
            page = await self._db.query(**kwargs)
            ids.extend(from_item(i)["id"] for i in page["Items"])
            if "LastEvaluatedKey" not in page:
                return ids
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # --- parts ------------------------------------------------------------------------
    async def put_parts(self, parts: list[dict[str, Any]]) -> None:
        semaphore = asyncio.Semaphore(_WRITE_CONCURRENCY)

        def marshal(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{"PutRequest": {"Item": to_item(c)}} for c in batch]

        async def write(batch: list[dict[str, Any]]) -> None:
            async with semaphore:
                # Marshalled on a worker thread, a batch at a time: a 50 MiB submission has
                # thousands of parts, and the event loop keeps serving meanwhile.
                requests = await anyio.to_thread.run_sync(marshal, batch)
                for attempt in range(8):
                    answer = await self._db.batch_write_item(RequestItems={self._parts_table: requests})
                    requests = answer.get("UnprocessedItems", {}).get(self._parts_table, [])
                    if not requests:
                        return
                    await asyncio.sleep(min(1.0, 0.05 * 2**attempt))
                raise RuntimeError(f"{len(requests)} part records left unprocessed")

        # BatchWriteItem takes at most 25 items.
        await asyncio.gather(*(write(parts[i : i + 25]) for i in range(0, len(parts), 25)))

    async def _parts(self, validation_id: str, first: str, last: str) -> list[Part]:
        records = await drive(self._db, query_all(parts_query(self._parts_table, validation_id, first, last)))
        return [Part.of(r) for r in records]

    async def parts_of_files(self, validation_id: str, first_file: int, last_file: int) -> list[Part]:
        """The parts of files first..last, in file then position order."""
        first, last = file_range(first_file, last_file)
        return await self._parts(validation_id, first, last)

    async def verdicts_of_files(self, validation_id: str, first_file: int, last_file: int) -> dict[int, Part]:
        """Multi-part files' verdicts (core/records.verdict_id), by file index."""
        first, last = verdict_range(first_file, last_file)
        return {v.file_index: v for v in await self._parts(validation_id, first, last)}

    async def reset_failed_verdict(self, validation_id: str, file_index: int) -> bool:
        """A file whose combine step failed is combined again by the next run: its verdict goes,
        and with it one `combine_failed` of the validation's count."""
        delete = {
            "TableName": self._parts_table,
            "Key": to_item({"validation_id": validation_id, "part_id": verdict_id(file_index)}),
            "ConditionExpression": "#status = :failed",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": to_item({":failed": PartStatus.FAILED.value}),
        }
        count = self._tally(validation_id, {"combine_failed": -1})
        try:
            await self._db.transact_write_items(TransactItems=[{"Delete": delete}, {"Update": count}])
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    async def reset_failed_parts(self, validation_id: str, parts: list[tuple[str, int]]) -> int:
        """FAILED parts (part id, file index) back to PENDING for a retry, each batch in one
        transaction with the validation's counts (`failed`, and per file the parts settled), so a
        crash between batches leaves counts that match the parts. How many were reset: a part that is
        not FAILED any more is left out (its batch is sent again without it)."""
        reset = 0
        for i in range(0, len(parts), _RESET_BATCH):
            batch = parts[i : i + _RESET_BATCH]
            while batch:
                per_file: dict[int, int] = {}
                for _, file_index in batch:
                    per_file[file_index] = per_file.get(file_index, 0) + 1
                items = [{"Update": self._part_reset(validation_id, part_id)} for part_id, _ in batch]
                items.append({"Update": self._unsettle(validation_id, per_file)})
                try:
                    await self._db.transact_write_items(TransactItems=items)
                except ClientError as exc:
                    reasons = cancellation_reasons(exc.response, items)
                    lost = {j for j, r in enumerate(reasons or []) if r.get("Code") == "ConditionalCheckFailed"}
                    if not lost or len(lost & set(range(len(batch)))) != len(lost):
                        raise
                    batch = [part for j, part in enumerate(batch) if j not in lost]
                    continue
                reset += len(batch)
                break
        return reset

    def _part_reset(self, validation_id: str, part_id: str) -> dict[str, Any]:
        update = Update().set(status=PartStatus.PENDING.value).remove("error", "finished_at")
        update.when("{status} = :failed", failed=PartStatus.FAILED.value)
        return update.item(self._parts_table, {"validation_id": validation_id, "part_id": part_id}, to_item)

    def _unsettle(self, validation_id: str, per_file: dict[int, int]) -> dict[str, Any]:
        """The reset parts are FAILED no more, and their files count them as unsettled again (on
        one tally: the sums are what count)."""
        counters = {"failed": -sum(per_file.values())}
        settled = {i: -n for i, n in per_file.items()}
        return self._tally(validation_id, counters, settled)

    def _tally(
        self, validation_id: str, counters: dict[str, int], settled: dict[int, int] | None = None
    ) -> dict[str, Any]:
        """A change of the validation's counts by the API (a retry's resets), on one of its tallies."""
        expires_at = expiry(self._retention_days)
        return tallies.update(
            self._parts_table, validation_id, "reset", counters, settled=settled, expires_at=expires_at, marshal=to_item
        )

    async def delete_parts(self, validation_id: str, part_ids: list[str]) -> None:
        for i in range(0, len(part_ids), 25):
            requests = [
                {"DeleteRequest": {"Key": to_item({"validation_id": validation_id, "part_id": c})}}
                for c in part_ids[i : i + 25]
            ]
            while requests:
                answer = await self._db.batch_write_item(RequestItems={self._parts_table: requests})
                requests = answer.get("UnprocessedItems", {}).get(self._parts_table, [])

    async def part_ids(self, validation_id: str) -> list[str]:
        """Every item of the validation in the parts table: parts, combine nodes, file verdicts (not
        its tallies: its counts stay with its record, core/tallies.py)."""
        kwargs: dict[str, Any] = {
            "TableName": self._parts_table,
            "KeyConditionExpression": "validation_id = :v",
            "ExpressionAttributeValues": to_item({":v": validation_id}),
            "ProjectionExpression": "part_id",
        }
        ids: list[str] = []
        while True:
            page = await self._db.query(**kwargs)
            ids.extend(p for i in page["Items"] if not tallies.is_tally(p := from_item(i)["part_id"]))
            if "LastEvaluatedKey" not in page:
                return ids
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # --- files -------------------------------------------------------------------------
    async def files_exist(self, keys: list[str]) -> bool:
        """Whether every upload is still stored (the bucket's lifecycle expires them)."""

        async def exists(key: str) -> bool:
            try:
                await self._s3.head_object(Bucket=self._bucket, Key=key)
            except ClientError as exc:
                if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
            return True

        return all(await asyncio.gather(*(exists(k) for k in keys)))

    async def put_files(self, objects: dict[str, bytes]) -> None:
        semaphore = asyncio.Semaphore(_WRITE_CONCURRENCY)
        # aiohttp copies a body while it sends it: bound the bytes in flight, not just the puts.
        in_flight = ByteGate(_PUT_BYTES_IN_FLIGHT)

        async def put(key: str, body: bytes) -> None:
            async with in_flight.hold(len(body)), semaphore:
                await self._s3.put_object(
                    Bucket=self._bucket, Key=key, Body=body, ContentType="text/plain; charset=utf-8"
                )

        await asyncio.gather(*(put(k, b) for k, b in objects.items()))

    async def delete_files(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            await self._s3.delete_objects(
                Bucket=self._bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True}
            )

    # --- idempotency -------------------------------------------------------------------
    async def claim_idempotency_key(self, key: str, request_hash: str, validation_id: str) -> dict[str, Any] | None:
        """Claim `key` for this request; None when claimed, else the record that holds it. A claim
        is `pending` (with `lease_until`) until the execution started, then `done`."""
        now = int(time.time())
        record = {
            "key": key,
            "request_hash": request_hash,
            "validation_id": validation_id,
            "state": "pending",
            "lease_until": now + self._claim_seconds,
            "expires_at": now + self._idempotency_ttl,
        }
        try:
            await self._db.put_item(
                TableName=self._idempotency,
                Item=to_item(record),
                # An expired record may linger until DynamoDB's TTL sweeper removes it.
                ConditionExpression="attribute_not_exists(#key) OR expires_at < :now",
                ExpressionAttributeNames={"#key": "key"},
                ExpressionAttributeValues=to_item({":now": now}),
            )
        except ClientError as exc:
            if not condition_failed(exc):
                raise
            answer = await self._db.get_item(
                TableName=self._idempotency, Key=to_item({"key": key}), ConsistentRead=True
            )
            return from_item(answer["Item"]) if "Item" in answer else {"state": "pending", "request_hash": request_hash}
        return None

    async def take_over_idempotency_key(
        self, key: str, held: dict[str, Any], request_hash: str, validation_id: str
    ) -> bool:
        """Take a crashed request's claim (pending, lease expired, the lease we read): once."""
        now = int(time.time())
        try:
            update = Update().set(
                validation_id=validation_id, request_hash=request_hash, lease_until=now + self._claim_seconds
            )
            update.when(
                "{state} = :pending AND {lease_until} = :seen", pending="pending", seen=held.get("lease_until", 0)
            )
            await self._db.update_item(**update.item(self._idempotency, {"key": key}, to_item))
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    async def complete_idempotency_key(self, key: str, validation_id: str) -> None:
        """The claim now answers with `validation_id` (unless another request took it over)."""
        try:
            update = Update().set(state="done").remove("lease_until")
            update.when("{validation_id} = :vid", vid=validation_id)
            await self._db.update_item(**update.item(self._idempotency, {"key": key}, to_item))
        except ClientError as exc:
            if not condition_failed(exc):
                raise

    async def release_idempotency_key(self, key: str) -> None:
        await self._db.delete_item(TableName=self._idempotency, Key=to_item({"key": key}))

"""In-memory fakes of `ValidationService`'s ports (app/validations/ports.py), for unit tests.

Each fake keeps its state in plain dicts that a test may read (and arrange) directly, mimics
the conditional semantics its real class documents, and records every call (`calls`,
`called(method)`). Any method of any fake can be told to fail:

    fakes.store.fail("put_parts", client_error("ThrottlingException"))  # its next call raises
    fakes.executions.fail("start", UpstreamError("refused"), nth=2)      # its 2nd call from now
    fakes.executions.fail("start", answer_lost(), lost=True)             # it starts, then raises
    fakes.store.before("update", lambda: ...)                            # a race: runs before the next call

What each fake does not mimic is said on its class. None of them mimics DynamoDB's types
(numbers stay ints), size or batch limits, pagination, or eventual consistency.

    fakes = Fakes.new()
    alice = fakes.users.add("alice", quota=Quota(100_000, 100_000, 2))
    validation, created = await fakes.service().create(alice, submission, "key-1")
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError, ReadTimeoutError

from app.errors import NotFound, UpstreamError
from app.identity.principal import OnLimit, Principal, Role
from app.quotas.service import Bucket, QuotaService
from app.settings import Settings
from app.validations.intake import Rule, RulesetVersion
from app.validations.records import Part, Validation
from app.validations.service import ValidationService
from core import ends, pricing, webhooks
from core.clock import now_iso
from core.pricing import PriceTable
from core.queue import QueueFull
from core.quota import Outcome, Quota, Refusal
from core.records import PartStatus, file_range, verdict_id, verdict_range
from core.spend import Budget

MACHINE_ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:validation-validation"


def client_error(code: str = "InternalServerError", operation: str = "Call", status: int = 400) -> ClientError:
    """A botocore ClientError as AWS answers it: `code`, on `operation`, with HTTP `status`."""
    return ClientError(
        {"Error": {"Code": code, "Message": "injected"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


def answer_lost() -> ReadTimeoutError:
    """What botocore raises when the request was sent and its answer never came."""
    return ReadTimeoutError(endpoint_url="https://states.us-east-1.amazonaws.com")


@dataclass
class _Fault:
    first: int  # the call numbers (1-based, over the fake's life) that fail
    last: int | None  # None: every call from `first` on
    error: BaseException
    lost: bool  # the call takes effect, then raises: its answer was lost


class Fake:
    """Records every call of its methods; fails the calls it was told to (`fail`); runs a
    test's hook before a call (`before`)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self._counts: Counter[str] = Counter()
        self._faults: dict[str, list[_Fault]] = {}
        self._hooks: dict[str, list[Callable[[], object]]] = {}

    def fail(
        self, method: str, error: BaseException | None = None, *, nth: int = 1, times: int = 1, lost: bool = False
    ) -> None:
        """Calls `nth` .. `nth + times - 1` of `method`, counted from now, raise `error` (default:
        a ClientError InternalServerError, HTTP 500); `times=0`: every call from the `nth` on.
        `lost`: the call takes effect first, then raises."""
        self._check(method)
        first = self._counts[method] + nth
        fault = _Fault(
            first,
            None if times == 0 else first + times - 1,
            error if error is not None else client_error("InternalServerError", method, 500),
            lost,
        )
        self._faults.setdefault(method, []).append(fault)

    def before(self, method: str, hook: Callable[[], object]) -> None:
        """Run `hook` once, just before the next call of `method` (a concurrent writer's move)."""
        self._check(method)
        self._hooks.setdefault(method, []).append(hook)

    def count(self, method: str) -> int:
        return self._counts[method]

    def called(self, method: str) -> list[tuple[Any, ...]]:
        """The arguments of each call of `method`, in order."""
        return [args for name, args in self.calls if name == method]

    def _check(self, method: str) -> None:
        if not callable(getattr(self, method, None)) or method.startswith("_"):
            raise AttributeError(f"{type(self).__name__} has no method {method!r}")

    @contextmanager
    def _call(self, method: str, *args: Any) -> Iterator[None]:
        self._counts[method] += 1
        n = self._counts[method]
        self.calls.append((method, args))
        for hook in self._hooks.pop(method, []):
            hook()
        fault = next(
            (f for f in self._faults.get(method, []) if f.first <= n and (f.last is None or n <= f.last)), None
        )
        if fault is not None and not fault.lost:
            raise fault.error
        yield
        if fault is not None:
            raise fault.error


class FakeStore(Fake):
    """Mimics ValidationStore: the validations, parts (parts, combine nodes, file verdicts) and
    idempotency tables, and the uploads bucket, as dicts.

    Mimicked: consistent reads, copies in and out (a test's dicts are never aliased);
    `update` applies only when every `expect` field holds that value (else False), and without
    `expect` creates a missing item as UpdateItem does; `reset_failed_parts` and
    `reset_failed_verdict` touch FAILED items only, and take them off the counts (`failed`,
    `file_settled`, `combine_failed`: the record here is the record with its tallies); `clear_end_marker`
    clears only run `run`'s marker; claims are `pending` with a lease, then `done`; an expired
    claim is claimed anew, a held one is answered; a take-over succeeds only on the lease read.
    Not mimicked: a batch write failing half-way (a failure writes nothing; with `lost=True`,
    everything), S3's lifecycle (files expire when a test deletes them).
    """

    def __init__(self, claim_seconds: int = 60, idempotency_ttl_seconds: int = 24 * 3600) -> None:
        super().__init__()
        self.validations: dict[str, dict[str, Any]] = {}
        self.parts: dict[str, dict[str, dict[str, Any]]] = {}  # validation id → part id → item
        self.files: dict[str, bytes] = {}
        self.answers: set[str] = set()  # digests the reuse cache holds (what estimates look up)
        self.claims: dict[str, dict[str, Any]] = {}
        self.claim_seconds = claim_seconds
        self.idempotency_ttl_seconds = idempotency_ttl_seconds

    # --- validations -------------------------------------------------------------------
    async def get(self, validation_id: str) -> Validation | None:
        with self._call("get", validation_id):
            item = self.validations.get(validation_id)
            return None if item is None else Validation.of(copy.deepcopy(item))

    async def delete(self, validation_id: str) -> None:
        with self._call("delete", validation_id):
            self.validations.pop(validation_id, None)

    async def update(
        self,
        validation_id: str,
        sets: dict[str, Any],
        *,
        expect: dict[str, Any] | None = None,
        remove: tuple[str, ...] = (),
    ) -> bool:
        with self._call("update", validation_id, sets, expect, remove):
            item = self.validations.get(validation_id)
            if expect and (item is None or any(k not in item or item[k] != v for k, v in expect.items())):
                return False
            if item is None:
                item = self.validations[validation_id] = {"id": validation_id}
            item.update(copy.deepcopy(sets))
            for name in remove:
                item.pop(name, None)
            return True

    async def clear_end_marker(self, validation_id: str, run: int) -> bool:
        with self._call("clear_end_marker", validation_id, run):
            item = self.validations.get(validation_id)
            if item is None or ends.MARKER not in item or item.get("run") != run:
                return False
            del item[ends.MARKER]
            return True

    async def list_for_owner(
        self, owner: str, limit: int, start_key: dict[str, Any] | None
    ) -> tuple[list[Validation], dict[str, Any] | None]:
        with self._call("list_for_owner", owner, limit, start_key):
            mine = sorted(
                (v for v in self.validations.values() if v.get("owner") == owner),
                key=lambda v: (v["created_at"], v["id"]),
                reverse=True,
            )
            if start_key:
                after = (start_key["created_at"], start_key["id"])
                mine = [v for v in mine if (v["created_at"], v["id"]) < after]
            page = mine[:limit]
            last = page[-1] if len(mine) > limit else None
            key = {"id": last["id"], "owner": owner, "created_at": last["created_at"]} if last else None
            return [Validation.of(copy.deepcopy(v)) for v in page], key

    async def queued_of(self, owner: str) -> list[str]:
        with self._call("queued_of", owner):
            queued = [v for v in self.validations.values() if v.get("owner") == owner and "queue_key" in v]
            return [v["id"] for v in sorted(queued, key=lambda v: v["queue_key"])]

    # --- parts -------------------------------------------------------------------------
    async def put_parts(self, parts: list[dict[str, Any]]) -> None:
        with self._call("put_parts", parts):
            for part in parts:
                self.parts.setdefault(part["validation_id"], {})[part["part_id"]] = copy.deepcopy(part)

    async def put_detail(self, record: dict[str, Any]) -> dict[str, Any]:
        """The files and rules stay on the record here (it stands for the record with its detail)."""
        with self._call("put_detail", record):
            return dict(record)

    def _between(self, validation_id: str, first: str, last: str) -> list[Part]:
        items = self.parts.get(validation_id, {})
        return [Part.of(copy.deepcopy(items[c])) for c in sorted(items) if first <= c <= last]

    async def parts_of_files(self, validation_id: str, first_file: int, last_file: int) -> list[Part]:
        with self._call("parts_of_files", validation_id, first_file, last_file):
            return self._between(validation_id, *file_range(first_file, last_file))

    async def verdicts_of_files(self, validation_id: str, first_file: int, last_file: int) -> dict[int, Part]:
        with self._call("verdicts_of_files", validation_id, first_file, last_file):
            verdicts = self._between(validation_id, *verdict_range(first_file, last_file))
            return {v.file_index: v for v in verdicts}

    async def reset_failed_verdict(self, validation_id: str, file_index: int) -> bool:
        with self._call("reset_failed_verdict", validation_id, file_index):
            items = self.parts.get(validation_id, {})
            verdict = items.get(verdict_id(file_index))
            if verdict is None or verdict.get("status") != PartStatus.FAILED:
                return False
            del items[verdict_id(file_index)]
            record = self.validations.get(validation_id, {})
            record["combine_failed"] = record.get("combine_failed", 0) - 1
            return True

    async def reset_failed_parts(self, validation_id: str, parts: list[tuple[str, int]]) -> int:
        with self._call("reset_failed_parts", validation_id, parts):
            items = self.parts.get(validation_id, {})
            record = self.validations.get(validation_id, {})
            settled = record.setdefault("file_settled", {})
            reset = 0
            for part_id, file_index in parts:
                part = items.get(part_id)
                if part is None or part.get("status") != PartStatus.FAILED:
                    continue  # not FAILED any more: left out
                part["status"] = PartStatus.PENDING.value
                part.pop("error", None)
                part.pop("finished_at", None)
                settled[str(file_index)] = settled.get(str(file_index), 0) - 1
                record["failed"] = record.get("failed", 0) - 1
                reset += 1
            return reset

    async def delete_parts(self, validation_id: str, part_ids: list[str]) -> None:
        with self._call("delete_parts", validation_id, part_ids):
            items = self.parts.get(validation_id, {})
            for part_id in part_ids:
                items.pop(part_id, None)
            if not items:
                self.parts.pop(validation_id, None)

    async def part_ids(self, validation_id: str) -> list[str]:
        with self._call("part_ids", validation_id):
            return sorted(self.parts.get(validation_id, {}))

    # --- files -------------------------------------------------------------------------
    async def files_exist(self, keys: list[str]) -> bool:
        with self._call("files_exist", keys):
            return all(k in self.files for k in keys)

    async def reusable(self, digests: list[str]) -> set[str]:
        with self._call("reusable", digests):
            return {d for d in digests if d in self.answers}

    async def put_files(self, objects: dict[str, bytes]) -> None:
        with self._call("put_files", objects):
            self.files.update(objects)

    async def delete_files(self, keys: list[str]) -> None:
        with self._call("delete_files", keys):
            for key in keys:
                self.files.pop(key, None)

    # --- idempotency -------------------------------------------------------------------
    async def claim_idempotency_key(self, key: str, request_hash: str, validation_id: str) -> dict[str, Any] | None:
        with self._call("claim_idempotency_key", key, request_hash, validation_id):
            now = int(time.time())
            held = self.claims.get(key)
            if held is not None and held["expires_at"] >= now:
                return copy.deepcopy(held)
            self.claims[key] = {
                "key": key,
                "request_hash": request_hash,
                "validation_id": validation_id,
                "state": "pending",
                "lease_until": now + self.claim_seconds,
                "expires_at": now + self.idempotency_ttl_seconds,
            }
            return None

    async def take_over_idempotency_key(
        self, key: str, held: dict[str, Any], request_hash: str, validation_id: str
    ) -> bool:
        with self._call("take_over_idempotency_key", key, held, request_hash, validation_id):
            claim = self.claims.get(key)
            if (
                claim is None
                or claim.get("state") != "pending"
                or claim.get("lease_until") != held.get("lease_until", 0)
            ):
                return False
            claim.update(
                validation_id=validation_id,
                request_hash=request_hash,
                lease_until=int(time.time()) + self.claim_seconds,
            )
            return True

    async def complete_idempotency_key(self, key: str, validation_id: str) -> None:
        with self._call("complete_idempotency_key", key, validation_id):
            claim = self.claims.get(key)
            if claim is not None and claim.get("validation_id") == validation_id:
                claim["state"] = "done"
                claim.pop("lease_until", None)

    async def release_idempotency_key(self, key: str) -> None:
        with self._call("release_idempotency_key", key):
            self.claims.pop(key, None)


class FakeExecutions(Fake):
    """Mimics Executions: executions by ARN (`executions[arn]`: name, input, status).

    `arn_of` is the real one's. `start` of a name that exists answers its ARN when it runs with
    the same input (StartExecution is idempotent so), else raises UpstreamError, as the real one
    does for ExecutionAlreadyExists. `stop` aborts a running execution (a missing one is no
    error, as in the real one); with `stops_take_effect` False it keeps RUNNING until the test
    calls `end`. `status` is None for a missing execution.
    Not mimicked: the state machine (nothing runs), histories (`history` answers an empty page).
    """

    def __init__(self, machine_arn: str = MACHINE_ARN) -> None:
        super().__init__()
        self.machine_arn = machine_arn
        self.executions: dict[str, dict[str, Any]] = {}
        self.stops_take_effect = True

    def arn_of(self, name: str) -> str:
        return f"{self.machine_arn.replace(':stateMachine:', ':execution:', 1)}:{name}"

    async def start(self, name: str, payload: dict[str, Any]) -> str:
        with self._call("start", name, payload):
            arn = self.arn_of(name)
            existing = self.executions.get(arn)
            if existing is not None:
                if existing["status"] == "RUNNING" and existing["input"] == payload:
                    return arn
                raise UpstreamError(f"Step Functions refused to start execution {name}: ExecutionAlreadyExists")
            self.executions[arn] = {"name": name, "input": copy.deepcopy(payload), "status": "RUNNING"}
            return arn

    async def stop(self, execution_arn: str, cause: str) -> None:
        with self._call("stop", execution_arn, cause):
            execution = self.executions.get(execution_arn)
            if execution is not None and execution["status"] == "RUNNING" and self.stops_take_effect:
                execution["status"] = "ABORTED"

    async def status(self, execution_arn: str) -> str | None:
        with self._call("status", execution_arn):
            execution = self.executions.get(execution_arn)
            return None if execution is None else str(execution["status"])

    async def history(
        self, execution_arn: str, limit: int, token: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        with self._call("history", execution_arn, limit, token):
            return [], None

    def end(self, execution_arn: str, status: str = "SUCCEEDED") -> None:
        """The execution ends on its own (a test's stand-in for the state machine)."""
        self.executions[execution_arn]["status"] = status

    @property
    def started(self) -> list[tuple[str, dict[str, Any]]]:
        """(name, input) of every execution that exists, in the order they started."""
        return [(e["name"], e["input"]) for e in self.executions.values()]


class FakeQuotas(Fake):
    """Mimics QuotaService over a FakeStore's validations: what its transactions write on the
    validation record (`enqueue` stores it; `join_queue` and `leave_queue` set and remove
    `queue_key`; an admission makes it RUNNING with its reservation; `settle` sets
    `settled_run`, once per admitted run) and on each owner's bucket (`running`, `queued`, with
    the `max_queued` 429 of the real one).

    `admit` admits (status QUEUED, same run, holding a queue_key; under `fifo` only the owner's
    oldest queued validation; below `max_running`) unless `outcomes` holds a planned Outcome,
    which the next admission answers instead (writing nothing).
    Not mimicked: tokens (the bucket's `tat` stays 0: always full; plan a token refusal in
    `outcomes`), parked executions (`release_head` wakes nobody and answers None).
    """

    def __init__(self, store: FakeStore) -> None:
        super().__init__()
        self.store = store
        self.buckets: dict[str, dict[str, int]] = {}  # owner → {"running": n, "queued": n}
        self.outcomes: list[Outcome] = []

    def counts(self, owner: str) -> dict[str, int]:
        return self.buckets.setdefault(owner, {"running": 0, "queued": 0})

    async def bucket(self, user_id: str) -> Bucket:
        with self._call("bucket", user_id):
            counts = self.counts(user_id)
            return Bucket(0.0, counts["running"], counts["queued"])

    def _head(self, owner: str) -> str | None:
        queued = [
            v
            for v in self.store.validations.values()
            if v.get("owner") == owner and v.get("status") == "QUEUED" and "queue_key" in v
        ]
        return min(queued, key=lambda v: v["queue_key"])["id"] if queued else None

    async def admit(self, validation: Validation, quota: Quota | None, fifo: bool = True) -> Outcome:
        with self._call("admit", validation, quota, fifo):
            if self.outcomes:
                return self.outcomes.pop(0)
            if validation.queue_key is None:
                raise ValueError(f"validation {validation.id} is not queued")
            if fifo and (head := self._head(validation.owner)) not in (None, validation.id):
                return Outcome(False, behind=head)
            item = self.store.validations.get(validation.id)
            if item is None or item.get("status") != "QUEUED" or item.get("run") != validation.run:
                return Outcome(False, gone=True)
            if "queue_key" not in item:
                return Outcome(False, gone=True)
            counts = self.counts(validation.owner)
            if quota is not None and counts["running"] >= quota.max_running:
                return Outcome(False, refusal=Refusal("max_running", 0.0, float(quota.capacity_tokens), 0.0))
            item.update(
                status="RUNNING",
                started_at=now_iso(),
                admitted_at=time.time(),
                reserved=validation.run_cost if quota else 0,
                reserved_run=validation.run,
                usage_at_start=validation.used_tokens,
            )
            item.pop("queue_key", None)
            item.pop("park_token", None)
            if quota is not None:
                counts["running"] += 1
                counts["queued"] -= 1
            return Outcome(True)

    async def queue_ahead(self, owner: str, queue_key: str) -> list[int]:
        with self._call("queue_ahead", owner, queue_key):
            ahead = [
                v
                for v in self.store.validations.values()
                if v.get("owner") == owner and "queue_key" in v and v["queue_key"] < queue_key
            ]
            return [int(v.get("run_cost", 0)) for v in sorted(ahead, key=lambda v: v["queue_key"])]

    async def settle(self, validation: Validation, quota: Quota | None) -> bool:
        with self._call("settle", validation, quota):
            run = validation.reserved_run
            if quota is None or run is None or (validation.settled_run or 0) >= run:
                return False
            item = self.store.validations.get(validation.id)
            counts = self.counts(validation.owner)
            if (
                item is None
                or item.get("reserved_run") != run
                or item.get("settled_run", 0) >= run
                or counts["running"] <= 0
            ):
                return False  # the transaction's conditions: settled once, a slot to give back
            used = validation.used_tokens - (validation.usage_at_start or 0)
            item["settled_run"] = run
            item["refunded"] = item.get("refunded", 0) + max(0, (validation.reserved or 0) - used)
            item["charged_tokens"] = item.get("charged_tokens", 0) + used
            counts["running"] -= 1
            return True

    def _full(self, owner: str, quota: Quota | None, cost: int) -> None:
        if quota is not None and self.counts(owner)["queued"] >= quota.max_queued:
            # The real 429, from the real builder (a pure function of its arguments).
            raise QuotaService._queue_full(quota, QueueFull(self.counts(owner)["queued"], 0.0), cost)

    async def enqueue(self, record: dict[str, Any], quota: Quota | None) -> None:
        with self._call("enqueue", record, quota):
            if record["id"] in self.store.validations:
                raise RuntimeError(f"validation {record['id']} could not be stored: it exists")
            self._full(record["owner"], quota, int(record["run_cost"]))
            self.store.validations[record["id"]] = copy.deepcopy(record)
            if quota is not None:
                self.counts(record["owner"])["queued"] += 1

    async def join_queue(self, validation: Validation, queue_key: str, quota: Quota | None) -> bool:
        with self._call("join_queue", validation, queue_key, quota):
            item = self.store.validations.get(validation.id)
            if item is None or item.get("status") != "QUEUED" or item.get("run") != validation.run:
                return False
            if "queue_key" in item:
                return False
            self._full(validation.owner, quota, validation.run_cost)
            item["queue_key"] = queue_key
            if quota is not None:
                self.counts(validation.owner)["queued"] += 1
            return True

    async def leave_queue(self, validation_id: str, owner: str, quota: Quota | None) -> bool:
        with self._call("leave_queue", validation_id, owner, quota):
            item = self.store.validations.get(validation_id)
            if item is None or "queue_key" not in item:
                return False
            item.pop("queue_key")
            item.pop("park_token", None)
            if quota is not None:
                self.counts(owner)["queued"] -= 1
            return True

    async def release_head(self, owner: str) -> str | None:
        with self._call("release_head", owner):
            return None


class FakeUsers(Fake):
    """Mimics UserService's reads of a user (quota, policy, disabled) and its audit trail
    (`audits`). An unknown user reads as the bootstrap admin does: (None, "queue"), not disabled."""

    def __init__(self) -> None:
        super().__init__()
        self.users: dict[str, dict[str, Any]] = {}
        self.audits: list[dict[str, Any]] = []

    def add(
        self,
        user_id: str,
        quota: Quota | None = None,
        on_limit: OnLimit = "queue",
        *,
        role: Role = "user",
        disabled: bool = False,
    ) -> Principal:
        """Store the user; its principal (as its API key resolves to)."""
        self.users[user_id] = {"quota": quota, "on_limit": on_limit, "disabled": disabled}
        return Principal(user_id=user_id, role=role, quota=quota, on_limit=on_limit)

    async def limits_of(self, user_id: str) -> tuple[Quota | None, OnLimit]:
        with self._call("limits_of", user_id):
            user = self.users.get(user_id)
            return (None, "queue") if user is None else (user["quota"], user["on_limit"])

    async def disabled(self, user_id: str) -> bool:
        with self._call("disabled", user_id):
            user = self.users.get(user_id)
            return user is not None and bool(user["disabled"])

    async def audit(self, actor: str, action: str, target: str, old: Any, new: Any) -> None:
        with self._call("audit", actor, action, target, old, new):
            self.audits.append({"actor": actor, "action": action, "target": target, "old": old, "new": new})


class FakeEvents(Fake):
    """Mimics EventLog: `append_status` appends the validation's current status and run, read
    from the store as the real one reads them, and answers its number (from 1); `purge` removes
    a validation's events and answers how many there were. Not mimicked: other event types."""

    def __init__(self, store: FakeStore) -> None:
        super().__init__()
        self.store = store
        self.log: dict[str, list[dict[str, Any]]] = {}

    async def append_status(self, validation_id: str) -> int:
        with self._call("append_status", validation_id):
            item = self.store.validations.get(validation_id, {})
            events = self.log.setdefault(validation_id, [])
            events.append({"type": "status", "status": item.get("status"), "run": item.get("run")})
            return len(events)

    async def purge(self, validation_id: str) -> int:
        with self._call("purge", validation_id):
            return len(self.log.pop(validation_id, []))

    def statuses(self, validation_id: str) -> list[str | None]:
        return [e["status"] for e in self.log.get(validation_id, [])]


class FakeNotifications(Fake):
    """Mimics Notifications: a run's end is notified once per message id (core/webhooks.notification:
    validation, run, status); None while run `run` has not ended. Every owner has a webhook.
    Not mimicked: delivery, `resend`'s once-a-minute and still-delivering refusals."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: dict[str, dict[str, Any]] = {}  # message id → the notify execution's input

    async def validation_ended(self, record: Mapping[str, Any], run: int) -> str | None:
        with self._call("validation_ended", dict(record), run):
            payload = webhooks.notification(record, run)
            if payload is None:
                return None
            self.sent.setdefault(str(payload["message_id"]), payload)
            return str(payload["message_id"])

    async def resend(self, record: Mapping[str, Any], now: float) -> str:
        with self._call("resend", dict(record), now):
            payload = webhooks.notification(record)
            if payload is None:
                raise ValueError(f"validation {record['id']} has not ended")
            return str(payload["message_id"])


@dataclass
class FakeRulesets:
    """Stored rule set versions by (owner, name): the caller's own first, then the `shared` owner's."""

    versions: dict[tuple[str, str], list[tuple[Rule, ...]]] = field(default_factory=dict)
    shared_owner: str = "admin"

    def add(self, owner: str, name: str, *rules: Rule) -> int:
        self.versions.setdefault((owner, name), []).append(tuple(rules))
        return len(self.versions[(owner, name)])

    async def resolve(self, principal: Principal, reference: str) -> RulesetVersion:
        name, _, wanted = reference.partition("@")
        for owner in (principal.user_id, self.shared_owner):
            versions = self.versions.get((owner, name))
            if versions:
                number = int(wanted) if wanted else len(versions)
                if not 1 <= number <= len(versions):
                    raise NotFound(f"Rule set {name!r} has no version {number}.", field="ruleset")
                return RulesetVersion(owner, name, number, versions[number - 1])
        raise NotFound(f"No rule set {name!r}.", field="ruleset")


@dataclass
class FakePrices:
    """The price table: the defaults unless a test sets another."""

    prices: PriceTable = field(default_factory=lambda: dict(pricing.DEFAULT_PRICES))

    async def table(self) -> PriceTable:
        return self.prices


@dataclass
class FakeSpending:
    """Spend periods by (user, key), with the real conditions (core/spend.py) done in memory."""

    periods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    history: dict[str, tuple[float, float]] = field(default_factory=dict)

    async def period(self, user_id: str, key: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.periods.get((user_id, key)))

    async def reserve(self, user_id: str, key: str, amount: Decimal, budget: Budget, expires_at: int) -> bool:
        item = self.periods.setdefault((user_id, key), {})
        committed = Decimal(str(item.get("committed_usd", 0)))
        if committed > budget.max_usd - amount:
            return False
        item["committed_usd"] = committed + amount
        item["reserved_usd"] = Decimal(str(item.get("reserved_usd", 0))) + amount
        return True

    async def release(self, user_id: str, key: str, amount: Decimal) -> None:
        item = self.periods.setdefault((user_id, key), {})
        for name in ("committed_usd", "reserved_usd"):
            item[name] = Decimal(str(item.get(name, 0))) - amount

    async def ratios(self, model: str) -> tuple[float, float] | None:
        return self.history.get(model)


@dataclass
class Fakes:
    """One fake of each port, wired to each other as the real ones share their tables."""

    settings: Settings
    store: FakeStore = field(default_factory=FakeStore)
    executions: FakeExecutions = field(default_factory=FakeExecutions)
    users: FakeUsers = field(default_factory=FakeUsers)
    notifications: FakeNotifications = field(default_factory=FakeNotifications)
    rulesets: FakeRulesets = field(default_factory=FakeRulesets)
    prices: FakePrices = field(default_factory=FakePrices)
    spending: FakeSpending = field(default_factory=FakeSpending)
    quotas: FakeQuotas = field(init=False)
    events: FakeEvents = field(init=False)

    def __post_init__(self) -> None:
        self.store.claim_seconds = int(self.settings.idempotency_claim_seconds)
        self.store.idempotency_ttl_seconds = self.settings.idempotency_ttl_hours * 3600
        self.quotas = FakeQuotas(self.store)
        self.events = FakeEvents(self.store)

    @classmethod
    def new(cls, **settings: Any) -> Fakes:
        """Fakes under Settings(**settings), `.env` unread; a cancel answers at once by default
        (`cancel_settle_seconds=0`: no waiting for a stop that never lands)."""
        values: dict[str, Any] = {"cancel_settle_seconds": 0.0, **settings}
        return cls(Settings(_env_file=None, **values))  # type: ignore[call-arg]  # mypy sees only the fields

    def service(self) -> ValidationService:
        return ValidationService(
            self.store,
            self.executions,
            self.quotas,
            self.users,
            self.events,
            self.settings,
            self.notifications,
            rulesets=self.rulesets,
            prices=self.prices,
            spending=self.spending,
        )

"""Every write of every crash window, failed in turn (tests/faults.py), then one reconciler pass.

For each window — submit (with its Idempotency-Key), retry, cancel, purge, and the Lambda
writers Finalize and MarkFailed — a clean run counts the writer's AWS writes (K). Then, for
each N in 1..K, a fresh owner's writer is failed at write N: in mode "error" (that write
fails, the writer's own undo runs) and in mode "crash" (nothing after
it reaches AWS; left out where the "error" run wrote nothing after the fault, since the
crash would leave the same state). After a window's faults, ONE reconciler pass; then, per owner:

- every validation is terminal, or QUEUED/RUNNING with a live execution;
- the bucket's `running` and `queued` count what holds a slot and a place in the queue;
- every end is announced: no `notify_pending` marker left, the last status event is the end
  (an event stream ends), and with a webhook its notification was started;
- the owner's queue moves: a next submission is admitted at once, or, behind a run that is
  still live, admitted and run once that run ends.

Once everything has ended: every admitted run was settled exactly once (per run, `refunded +
charged = reserved`), `running` and `queued` are back to 0, and the bucket's `tat` is what the
runs' charges add up to (GCRA replayed from each run's admission time and tokens used).

To keep the suite quick, a "stand-in" submission is one whose StartExecution is refused
(crash): it is stored and admitted like any other, but runs nothing; the closing reconciler
pass ends it (never started) and settles it. Owners are separate users, so the cases of a
window share one API and one embedded AWS without sharing a bucket.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from core import ends, tallies
from core.dynamo import from_item
from core.lambda_env import reset, use
from core.quota import Quota
from core.records import TERMINAL
from core.webhooks import message_id
from lambdas.common.config import load_config
from lambdas.common.stores import client_for, store_for
from lambdas.common.webhooks import webhook_tables_for
from lambdas.finalize.handler import lambda_handler as finalize
from local.aws.lambda_router import Function, LambdaContext
from local.aws.provision import Provisioner
from local.aws.server import EmbeddedAWS
from local.simulator.app import SimulatorConfig
from local.simulator.server import SimulatorServer
from tests.faults import MODES, Faults, Mode, Run
from tests.support.stack import (
    ADMIN,
    Aws,
    HeldCalls,
    local_settings,
    make_user,
    wait_for,
)
from tests.validations.ledger import item
from tests.webhooks.receiver import receiver

# No reuse: every run asks the model (the windows share one deployment, and its stored verdicts).
DOC = {"documents": [{"name": "a.txt", "content": "row 1\nrow 2\n"}], "rules": ["be tidy"], "reuse": False}
QUOTA = Quota(capacity_tokens=100_000, refill_tokens_per_minute=100_000, max_running=1).as_dict()
RATE = 100_000 / 60  # tokens per second
START = "sfn.StartExecution"
Fault = tuple[int | None, Mode]


@dataclass
class Case:
    """One owner, the state prepared for its writer, and what the checks need."""

    owner: str
    auth: dict[str, str]
    label: str = "clean"
    webhook: bool = False
    ids: dict[str, str] = field(default_factory=dict)  # role ("a", "b", ...) → validation id
    before: dict[str, dict[str, Any]] = field(default_factory=dict)  # a record before the faulted run
    runs: list[tuple[float, int]] = field(default_factory=list)  # (admitted_at, used) of runs since replaced
    waits_for: str | None = None  # a queued validation that must be admitted and run once the owner's run ends
    has_next: bool = False  # the owner's next validation was admitted already (or the window has no queue)
    late_calls: bool = False  # a call in flight when the run was settled is counted after the charge
    run: Run | None = None
    answer: Any = None


class Lab:
    """One deployment (the API, the embedded AWS's functions, a webhook receiver) shared by a
    window's cases, the fault hooks on the API's and the Lambdas' clients, and the checks."""

    def __init__(self, api: Any, aws: Aws, hook_url: str, simulator: SimulatorServer) -> None:
        self.api, self.aws, self.hook_url, self.simulator = api, aws, hook_url, simulator
        self.settings: Settings = api.app.state.settings  # as started (the simulator's URL, ...)
        clients = api.app.state.clients
        self.api_faults = Faults().install(clients.dynamodb, clients.s3, clients.sfn)
        self.env = Provisioner(self.settings, aws.endpoint_url).function_environment()
        token = use(self.env)
        try:
            config = load_config()  # what the functions of this deployment load
        finally:
            reset(token)
        self.store = store_for(config)  # the clients the in-process handlers use (cached per config)
        self.lambda_faults = Faults(thread_only=True).install(
            self.store.clients.dynamodb.meta.client,
            self.store.clients.client,
            self.store.clients.s3,
            self.store.clients.sfn,
            client_for(config, "stepfunctions"),
            webhook_tables_for(config).dynamodb.meta.client,
        )
        machine = self.settings.notify_machine_arn or aws.machine_arn(self.settings.notify_state_machine_name)
        self.notify_executions = machine.replace(":stateMachine:", ":execution:", 1)
        self.held: HeldCalls | None = None  # every model call waits until the checks after the pass are done
        self.submitted = 0  # submissions that started an execution

    @contextlib.contextmanager
    def holding(self) -> Iterator[HeldCalls]:
        """Every model call waits at the simulator until `release()` (or the block ends)."""
        model = self.simulator.simulator
        self.held = HeldCalls(self.simulator, 0)
        self.submitted = 0
        model.complete = self.held.complete  # type: ignore[method-assign]
        try:
            yield self.held
        finally:
            self.held.release()
            del model.complete  # the class's method again

    def close(self) -> None:
        self.api_faults.uninstall()
        self.lambda_faults.uninstall()

    # --- acting --------------------------------------------------------------------------
    def owner(self, label: str = "clean", webhook: bool = False) -> Case:
        user, auth = make_user(self.api, quota=QUOTA)
        case = Case(user, auth, label)
        if webhook:
            self.add_webhook(case)
        return case

    def add_webhook(self, case: Case) -> None:
        answer = self.api.put("/me/webhook", json={"url": self.hook_url}, headers=case.auth)
        assert answer.status_code == 201, answer.text
        case.webhook = True

    def submit(self, case: Case, **headers: str) -> dict[str, Any]:
        answer = self.api.post("/validations", json=DOC, headers={**case.auth, **headers})
        assert answer.status_code == 202, answer.text
        self.submitted += 1
        created: dict[str, Any] = answer.json()
        return created

    def stand_in(self, case: Case, **headers: str) -> tuple[Any, str | None]:
        """A submission stored and admitted (or queued) like any other, whose StartExecution is
        refused: it runs nothing, and the reconciler ends it. (The answer, the new validation's id.)"""
        with self.api_faults.writer(fail_on=START, mode="crash") as run:
            answer = self.api.post("/validations", json=DOC, headers={**case.auth, **headers})
        assert run.fired == START or answer.status_code == 202, (run, answer.text)
        # The validation stored (the Put of the transaction that enqueues it), if any.
        stored = [
            item["Put"]["Item"]["id"]["S"]
            for request in run.requests
            for item in request.get("TransactItems", [])
            if "Put" in item and item["Put"]["TableName"] == self.settings.table("validations")
        ]
        return answer, stored[0] if stored else None

    def invoke(self, handler: Callable[[Any, Any], Any], event: dict[str, Any], fault: Fault | None = None) -> Run:
        """A Lambda handler run in this thread, as the embedded AWS runs it, its writes under the hook."""
        fail_at, mode = fault or (None, "error")
        token = use({**self.env, "AWS_LAMBDA_FUNCTION_NAME": "in-test"})
        try:
            # A raised error is the function's failure, as Lambda would report it.
            with self.lambda_faults.writer(fail_at, mode) as run, contextlib.suppress(Exception):
                handler(event, LambdaContext(Function("in-test", handler, self.env, 60)))
        finally:
            reset(token)
        return run

    def reconcile(self) -> dict[str, Any]:
        answer = self.api.post("/admin/reconcile")
        assert answer.status_code == 200, answer.text
        report: dict[str, Any] = answer.json()
        return report

    # --- reading -------------------------------------------------------------------------
    def records(self, owner: str) -> list[dict[str, Any]]:
        """Every validation of `owner`: the `by_owner` index keeps every attribute (and the
        embedded AWS updates an index with its table, so no read lags a write)."""
        pages = (
            self.aws.client("dynamodb")
            .get_paginator("query")
            .paginate(
                TableName=self.settings.table("validations"),
                IndexName="by_owner",
                KeyConditionExpression="#o = :o",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":o": {"S": owner}},
            )
        )
        return [self.counted(from_item(i)) for page in pages for i in page["Items"]]

    def counted(self, record: dict[str, Any]) -> dict[str, Any]:
        """The record with its tallies' counts (core/tallies.py), as the API shows it."""
        request = tallies.query(self.settings.table("parts"), record["id"])
        found = self.aws.client("dynamodb").query(**request)["Items"]
        return tallies.merge(record, [from_item(i) for i in found])

    def settled_parts(self, validation_id: str) -> dict[str, int]:
        """Per file, the parts with a result or a failure (what `file_settled` must count)."""
        parts = self.aws.client("dynamodb").query(
            TableName=self.settings.table("parts"),
            KeyConditionExpression="validation_id = :v",
            ExpressionAttributeValues={":v": {"S": validation_id}},
        )["Items"]
        counts: dict[str, int] = {}
        for part in map(from_item, parts):
            if "file_index" in part and part.get("status") in ("SUCCEEDED", "FAILED") and "#" not in part["part_id"]:
                counts[str(part["file_index"])] = counts.get(str(part["file_index"]), 0) + 1
        return counts

    def bucket(self, owner: str) -> dict[str, Any]:
        return item(self.aws, self.settings.table("buckets"), {"user_id": owner})

    def live(self, arn: str | None) -> bool:
        if not arn:
            return False
        sfn = self.aws.client("stepfunctions")
        try:
            return bool(sfn.describe_execution(executionArn=arn)["status"] == "RUNNING")
        except sfn.exceptions.ExecutionDoesNotExist:
            return False

    def last_status(self, validation_id: str) -> tuple[str, int] | None:
        """The newest status event of the validation (what ends a viewer's stream)."""
        pages = (
            self.aws.client("dynamodb")
            .get_paginator("query")
            .paginate(
                TableName=self.settings.table("events"),
                KeyConditionExpression="validation_id = :v",
                ExpressionAttributeValues={":v": {"S": validation_id}},
                ScanIndexForward=False,
            )
        )
        for page in pages:
            for event in map(from_item, page["Items"]):
                if event["type"] == "status":
                    data = json.loads(event["data"])
                    return str(data["status"]), int(data["run"])
        return None

    def notified(self, record: dict[str, Any]) -> bool:
        """The notification of the record's end was started (one execution per event, by name)."""
        name = message_id(record["id"], int(record["run"]), record["status"])
        sfn = self.aws.client("stepfunctions")
        try:
            sfn.describe_execution(executionArn=f"{self.notify_executions}:{name}")
        except sfn.exceptions.ExecutionDoesNotExist:
            return False
        return True

    # --- checks --------------------------------------------------------------------------
    def check_after_pass(self, case: Case) -> list[str]:
        """After one reconciler pass: nothing stuck, nothing unannounced, counts that match.
        The executions still live (to wait for)."""
        # A head woken by the pass may be admitted meanwhile: a bucket unchanged around the read.
        bucket, records = wait_for(lambda: self._unchanged(case.owner), timeout=30, what="a still bucket")
        assert int(bucket["running"]) == sum(v["status"] == "RUNNING" for v in records), (case.label, bucket)
        assert int(bucket.get("queued", 0)) == sum("queue_key" in v for v in records), (case.label, bucket)
        live = []
        for v in records:
            where = f"{case.label}: {v['id']} {v['status']} run {v['run']}"
            if v.get("files"):  # each file counts its parts with a result or failure (not purged)
                settled = {k: n for k, n in v.get("file_settled", {}).items() if n}
                assert settled == self.settled_parts(v["id"]), f"{where}: file_settled {v.get('file_settled')}"
            if v["status"] in TERMINAL:
                assert ends.MARKER not in v, f"{where}: its end was never announced"
                if not v.get("purged_at"):
                    assert self.last_status(v["id"]) == (v["status"], v["run"]), f"{where}: no status event"
                if case.webhook:
                    assert self.notified(v), f"{where}: no notification"
                if "reserved_run" in v:
                    assert v.get("settled_run") == v["reserved_run"], f"{where}: not settled"
            else:
                assert v["status"] in ("QUEUED", "RUNNING"), where
                assert self.live(v.get("execution_arn")), f"{where}: no live execution"
                live.append(str(v["execution_arn"]))
        return live

    def _unchanged(self, owner: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        bucket, records = self.bucket(owner), self.records(owner)
        return (bucket, records) if self.bucket(owner) == bucket else None

    def next_submission(self, case: Case) -> None:
        """The owner's queue moves: once the runs that were live have ended, a next validation
        is admitted at once (a stand-in: the closing pass ends it)."""
        if case.waits_for is not None or case.has_next:
            return
        _, new = self.stand_in(case)
        admitted = item(self.aws, self.settings.table("validations"), {"id": str(new)})
        assert admitted["status"] == "RUNNING" and admitted["reserved_run"] == 1, (case.label, admitted)

    def check_settled(self, case: Case) -> None:
        """Everything ended: each admitted run settled once, the bucket back where its charges say."""
        runs = list(case.runs)
        for v in self.records(case.owner):
            where = f"{case.label}: {v['id']} {v['status']} run {v['run']}"
            assert v["status"] in TERMINAL, where
            if v["id"] == case.waits_for:  # admitted once the run ahead ended, and run to its end
                assert v.get("reserved_run") == 1 and "started_at" in v, f"{where}: the next one was not admitted"
            if "reserved_run" not in v:
                continue
            assert v.get("settled_run") == v["reserved_run"], f"{where}: not settled"
            before = case.before.get(v["id"], {})
            if before.get("reserved_run") == v["reserved_run"]:  # the faulted run was never admitted
                assert (v["refunded"], v["charged_tokens"]) == (before["refunded"], before["charged_tokens"]), where
                continue
            used = int(v.get("prompt_tokens", 0)) + int(v.get("completion_tokens", 0)) - int(v["usage_at_start"])
            charged = int(v["charged_tokens"]) - int(before.get("charged_tokens", 0))
            assert int(v["refunded"]) - int(before.get("refunded", 0)) == max(0, int(v["reserved"]) - charged), where
            # What the run used was charged, but for a call answered after a cancel settled the run.
            assert charged == used or (case.late_calls and charged < used), f"{where}: charged {charged} of {used}"
            runs.append((float(v["admitted_at"]), charged))
        bucket = self.bucket(case.owner)
        assert (int(bucket["running"]), int(bucket.get("queued", 0))) == (0, 0), (case.label, bucket)
        tat = 0.0
        for admitted_at, charged in sorted(runs):  # max_running=1: each run settled before the next was admitted
            tat = max(tat, admitted_at) + charged / RATE
        assert abs(float(bucket["tat"]) - tat) < 1e-3, (case.label, bucket, runs)


# --- the windows: prepare an owner, then the writer (under the hook) ------------------------
@dataclass(frozen=True)
class Window:
    prepare: Callable[[Lab, str], Case]
    write: Callable[[Lab, Case, Fault], Run]
    ready: Callable[[Lab, list[Case]], bool] = lambda lab, cases: True
    after: Callable[[Lab, list[Case]], None] = lambda lab, cases: None


def _api_write(lab: Lab, case: Case, fault: Fault, method: str, path: str, **kwargs: Any) -> Run:
    headers = {**case.auth, **kwargs.pop("headers", {})}
    with lab.api_faults.writer(*fault) as run:
        case.answer = lab.api.request(method, path, headers=headers, **kwargs)
    if case.answer.status_code >= 500:  # never a text/plain 500
        assert case.answer.headers["content-type"] == "application/problem+json", case.answer.text
    return run


def _ended_by_finalize(lab: Lab, case: Case, validation_id: str, part_failed: bool) -> None:
    """A stand-in's run as if its execution ran: its part failed (or not), Finalize ended it."""
    if part_failed:
        (part,) = lab.store.parts.of_file(validation_id, 0)
        assert lab.store.parts.record_failure(validation_id, part, {"type": "ModelRejected", "message": "refused"})
    lab.invoke(finalize, {"validation_id": validation_id, "run": 1})
    record = lab.records(case.owner)[0]
    assert record["status"] == "FAILED" and record["settled_run"] == 1, record


# submit: POST /validations with an Idempotency-Key.
def _submit_prepare(lab: Lab, label: str) -> Case:
    return lab.owner(label)


def _submit_write(lab: Lab, case: Case, fault: Fault) -> Run:
    return _api_write(lab, case, fault, "POST", "/validations", json=DOC, headers={"Idempotency-Key": "k"})


def _submit_after(lab: Lab, cases: list[Case]) -> None:
    """The key, once a crashed claim's lease is over: never 409, and one validation per key
    (the same one answered again, or the first start if none was started)."""
    claims = lab.settings.table("idempotency")
    leases = [
        float(claim["lease_until"]) for case in cases if "lease_until" in (claim := _claim(lab, claims, case.owner))
    ]
    wait_for(lambda: time.time() > max(leases, default=0.0), timeout=10, what="the crashed claims' leases")
    for case in cases:
        before = lab.records(case.owner)
        answer, _ = lab.stand_in(case, **{"Idempotency-Key": "k"})
        after = lab.records(case.owner)
        assert answer.status_code != 409, (case.label, answer.text)
        assert len(after) == 1, (case.label, [v["id"] for v in after])
        if before:
            assert answer.status_code == 202 and answer.json()["id"] == before[0]["id"], (case.label, answer.text)
        else:  # the first start: this is the owner's next validation, admitted
            assert after[0]["status"] == "RUNNING" and after[0]["reserved_run"] == 1, (case.label, after)
            case.has_next = True


def _claim(lab: Lab, table: str, owner: str) -> dict[str, Any]:
    found = lab.aws.client("dynamodb").get_item(TableName=table, Key={"key": {"S": f"{owner}#k"}}, ConsistentRead=True)
    return from_item(found.get("Item", {}))


# retry: POST /validations/{id}/retry of a run whose part failed. No webhook: the API's
# announcing of the ends it writes (its notification step) is faulted in the cancel window.
def _retry_prepare(lab: Lab, label: str) -> Case:
    case = lab.owner(label)
    validation_id = case.ids["a"] = str(lab.stand_in(case)[1])
    _ended_by_finalize(lab, case, validation_id, part_failed=True)
    first = case.before[validation_id] = lab.records(case.owner)[0]
    case.runs.append((float(first["admitted_at"]), 0))
    return case


def _retry_write(lab: Lab, case: Case, fault: Fault) -> Run:
    return _api_write(lab, case, fault, "POST", f"/validations/{case.ids['a']}/retry")


def _retry_after(lab: Lab, cases: list[Case]) -> None:
    """A second run that ended without running says why: never started, or its execution lost."""
    for case in cases:
        (record,) = lab.records(case.owner)
        if record["run"] == 2 and record["status"] == "FAILED":
            assert record["error"]["type"] in ("not_started", "execution_lost"), (case.label, record["error"])


# cancel: DELETE /validations/{id} of a run whose validator is mid-call.
def _cancel_prepare(lab: Lab, label: str) -> Case:
    case = lab.owner(label, webhook=True)
    case.ids["a"] = lab.submit(case)["id"]
    case.late_calls = True  # its held call answers after the cancel settled the run
    return case


def _cancel_ready(lab: Lab, cases: list[Case]) -> bool:
    """Every run's validator is mid-call (held at the simulator)."""
    assert lab.held is not None
    return lab.held.arrived >= lab.submitted


def _cancel_write(lab: Lab, case: Case, fault: Fault) -> Run:
    return _api_write(lab, case, fault, "DELETE", f"/validations/{case.ids['a']}")


# purge: DELETE /validations/{id}/data of an ended validation.
def _purge_prepare(lab: Lab, label: str) -> Case:
    case = lab.owner(label)
    case.ids["a"] = str(lab.stand_in(case)[1])
    _ended_by_finalize(lab, case, case.ids["a"], part_failed=False)
    case.has_next = True  # not a queue window: nothing to admit
    return case


def _purge_write(lab: Lab, case: Case, fault: Fault) -> Run:
    return _api_write(lab, case, fault, "DELETE", f"/validations/{case.ids['a']}/data")


def _purge_after(lab: Lab, cases: list[Case]) -> None:
    """Results answer 410 from the mark on; a repeated DELETE finishes what was cut short."""
    for case in cases:
        validation_id = case.ids["a"]
        marked = bool(lab.records(case.owner)[0].get("purged_at"))
        results = lab.api.get(f"/validations/{validation_id}/results", headers=case.auth)
        assert results.status_code == (410 if marked else 200), (case.label, results.text)
        again = lab.api.delete(f"/validations/{validation_id}/data", headers=case.auth)
        assert again.status_code == 200, (case.label, again.text)
        (record,) = lab.records(case.owner)
        assert record["status"] == "FAILED" and record["purged_at"] and record["files"] == [], (case.label, record)
        parts = lab.aws.client("dynamodb").query(
            TableName=lab.settings.table("parts"),
            KeyConditionExpression="validation_id = :v",
            ExpressionAttributeValues={":v": {"S": validation_id}},
        )
        assert parts["Count"] == 0 and lab.last_status(validation_id) is None, case.label
        stored = lab.aws.client("s3").list_objects_v2(
            Bucket=lab.settings.bucket, Prefix=f"validations/{validation_id}/"
        )
        assert stored.get("KeyCount", 0) == 0, case.label


# finalize: Finalize of a run, with the owner's next validation parked behind it.
def _finalize_prepare(lab: Lab, label: str) -> Case:
    case = lab.owner(label, webhook=True)
    case.ids["a"] = str(lab.stand_in(case)[1])
    case.waits_for = case.ids["b"] = lab.submit(case)["id"]  # queued behind a: parks
    return case


def _parked(lab: Lab, cases: list[Case]) -> bool:
    """Each `b` parked: its WaitForSlot task is waiting (its Lambda stored the token and made its
    re-check: the last event is TaskSubmitted)."""
    sfn = lab.aws.client("stepfunctions")
    table = lab.settings.table("validations")
    for case in cases:
        arn = item(lab.aws, table, {"id": case.ids["b"]})["execution_arn"]
        events = sfn.get_execution_history(executionArn=arn)["events"]  # a few dozen while parked
        if not events or events[-1]["type"] != "TaskSubmitted":
            return False
    return True


def _finalize_write(lab: Lab, case: Case, fault: Fault) -> Run:
    return lab.invoke(finalize, {"validation_id": case.ids["a"], "run": 1}, fault)


# mark_failed: MarkFailed of a run still QUEUED (Admit gave up, or the park timed out). No
# webhook: the notification step of the Lambdas' ends is Finalize's, faulted in its window.
def _mark_failed_prepare(lab: Lab, label: str) -> Case:
    case = lab.owner(label)
    case.ids["a"] = str(lab.stand_in(case)[1])  # holds the one running slot
    case.ids["c"] = str(lab.stand_in(case)[1])  # queued behind it
    return case


def _mark_failed_write(lab: Lab, case: Case, fault: Fault) -> Run:
    error = {"Error": "States.Timeout", "Cause": "WaitForSlot timed out"}
    return lab.invoke(finalize, {"validation_id": case.ids["c"], "run": 1, "error": error}, fault)


WINDOWS = {
    "submit": Window(_submit_prepare, _submit_write, after=_submit_after),
    "retry": Window(_retry_prepare, _retry_write, after=_retry_after),
    "cancel": Window(_cancel_prepare, _cancel_write, ready=_cancel_ready),
    "purge": Window(_purge_prepare, _purge_write, after=_purge_after),
    "finalize": Window(_finalize_prepare, _finalize_write, ready=_parked),
    "mark_failed": Window(_mark_failed_prepare, _mark_failed_write),
}


def _faulted(lab: Lab, name: str, window: Window) -> Iterator[Case]:
    """The clean case (its writes counted), then each write failed in each mode."""

    def prepared(labels: list[str]) -> list[Case]:
        cases = [window.prepare(lab, label) for label in labels]
        wait_for(lambda: window.ready(lab, cases), timeout=60, what="the cases' setup")
        return cases

    (clean,) = prepared([f"{name} clean"])
    clean.run = window.write(lab, clean, (None, "error"))
    writes = len(clean.run.writes)
    assert writes > 0, clean.run
    yield clean
    same_as_error: set[int] = set()
    for mode in MODES:
        points = [n for n in range(1, writes + 1) if n not in same_as_error]
        for n, case in zip(points, prepared([f"{name} {mode} at write {n}" for n in points]), strict=True):
            case.run = window.write(lab, case, (n, mode))
            assert case.run.fired == clean.run.writes[n - 1], f"{case.label}: {case.run} (clean: {clean.run})"
            if mode == "error" and case.run.writes_after == 0:
                same_as_error.add(n)  # no write followed the fault: a crash there leaves the same state
            yield case


@pytest.fixture(scope="module")
def lab(embedded_aws: EmbeddedAWS) -> Iterator[Lab]:
    """One deployment for every window (the cases of each use their own users)."""
    with SimulatorServer(SimulatorConfig(latency_seconds=0.01)) as simulator, receiver() as hook:
        settings = local_settings(
            embedded_aws.endpoint_url,
            simulator,
            "w",
            reconcile_grace_seconds=0,
            reconcile_interval_seconds=0,  # the tests run the passes
            idempotency_claim_seconds=1,
            webhook_retry_interval_seconds=1,
            webhook_retry_max_attempts=1,
            webhook_retry_max_delay_seconds=1,
        )
        # Fair share off: fewer governor calls per model call, and none of these tests is about it.
        ssm = Aws(embedded_aws.endpoint_url).client("ssm")
        ssm.put_parameter(Name=f"{settings.ssm_prefix}/fair-share", Value="off", Type="String", Overwrite=True)
        with TestClient(create_app(settings)) as api:
            api.headers.update(ADMIN)
            lab = Lab(api, Aws(embedded_aws.endpoint_url), hook.url, simulator)
            try:
                yield lab
            finally:
                lab.close()


# One test per group of windows, each on one deployment (`lab`): the windows' cases share it
# (their owners are separate users). The module is not an xdist_group on purpose: its two long
# tests run side by side on two workers, each building its own `lab` (~3 s), not one after the other.
@pytest.mark.slow(20)
def test_a_fault_at_any_write_of_submit_retry_or_purge_leaves_nothing_stuck(lab: Lab) -> None:
    for name in ("submit", "retry", "purge"):
        _check_window(lab, name)


@pytest.mark.slow(20)
def test_a_fault_at_any_write_of_cancel_finalize_or_mark_failed_leaves_nothing_stuck(lab: Lab) -> None:
    for name in ("cancel", "finalize", "mark_failed"):
        _check_window(lab, name)


def _check_window(lab: Lab, name: str) -> None:
    window = WINDOWS[name]
    # Runs stay mid-call (nothing moves while the state after the pass is checked, and a cancel
    # finds its run's validator in a call) until the checks after the pass are done.
    with lab.holding() as held:
        cases = list(_faulted(lab, name, window))
        lab.reconcile()  # ONE pass after all of this window's faults
        live = [arn for case in cases for arn in lab.check_after_pass(case)]
        window.after(lab, cases)
        held.release()
        for arn in live:  # they run to their end now
            wait_for(lambda: not lab.live(arn), timeout=120, interval=0.2, what=f"{arn} to end")  # noqa: B023
    for case in cases:
        lab.next_submission(case)
        if case.webhook:  # the closing pass's ends need no notification
            assert lab.api.delete("/me/webhook", headers=case.auth).status_code == 204
    lab.reconcile()  # ends the stand-ins (admitted, never started), settling them
    for case in cases:
        lab.check_settled(case)


def test_a_disabled_owners_queued_run_that_reaches_admit_is_cancelled_not_admitted(lab: Lab) -> None:
    """Disabling cancels the owner's queue; when that sweep is cut short (the admin's request dies
    after storing the disable), a queued run woken later is refused by Admit, which ends it
    CANCELLED saying why, takes it out of the queue and lets the next one be refused in turn."""
    case = lab.owner("disabled")
    blocker = str(lab.stand_in(case)[1])  # holds the one running slot, never started
    queued = [lab.submit(case)["id"] for _ in range(2)]
    parked = [Case(case.owner, case.auth, ids={"b": validation_id}) for validation_id in queued]
    wait_for(lambda: _parked(lab, parked), what="both parked")
    with lab.api_faults.writer(3, "crash") as run:  # the user stored disabled, the audit written, then dead
        answer = lab.api.patch(f"/admin/users/{case.owner}", json={"disabled": True})
    assert answer.status_code == 503 and run.writes[:2] == ["dynamodb.UpdateItem", "dynamodb.PutItem"], run
    assert {v["status"] for v in lab.records(case.owner) if v["id"] in queued} == {"QUEUED"}

    lab.reconcile()  # ends the blocker (never started) and wakes the queue's head

    table = lab.settings.table("validations")
    for validation_id in queued:  # the head, then the one behind it, woken in turn
        ended = wait_for(
            # ended, and that end announced (its marker off)
            lambda: (
                (v := item(lab.aws, table, {"id": validation_id}))["status"] == "CANCELLED"  # noqa: B023
                and ends.MARKER not in v
                and v
            ),
            timeout=60,
            what=f"{validation_id} refused",
        )
        assert ended["error"]["type"] == "owner_disabled" and "reserved_run" not in ended, ended
        assert lab.last_status(validation_id) == ("CANCELLED", 1)
    assert item(lab.aws, table, {"id": blocker})["status"] == "FAILED"
    bucket = lab.bucket(case.owner)
    assert (int(bucket["running"]), int(bucket["queued"])) == (0, 0), bucket
    retried = lab.api.post(f"/validations/{blocker}/retry")  # an admin's retry admits nothing of theirs either
    assert retried.status_code == 409 and retried.json()["field"] == "owner", retried.text

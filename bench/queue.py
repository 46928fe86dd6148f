"""The queue's cost while validations wait: N validations queued behind max_running=1 for T
minutes, against the Admit ⇄ Wait loop the queue used to be, measured in the same run.

Two stacks share one embedded AWS and one simulator: `parked` is the current state machine
(a queued validation parks on a task token, core/queue.py); `polling` is the same stack
with its state machine replaced by the old definition (`bench/queue_baseline.asl.json`,
the ASL as of commit 06e84f9) and its Admit state pointed at the old admit handler
(`bench/queue_baseline.py`, registered as a function of its own). In each, one user with
max_running=1 submits one validation whose model call is held at the simulator, then N
more, which queue. Once every queued one waits (parked; or QUEUED with its execution
running for the loop), the Admit function's invocations (counted by the embedded Lambda
route) and the N executions' history events are counted, T minutes pass, and they are
counted again. Then the held call is released and every validation must succeed.

Reported per queued validation: Admit invocations and history events per hour of waiting,
and history events when the wait ended (Step Functions fails an execution at 25,000).
`QUEUE_BENCH_N` and `QUEUE_BENCH_MINUTES` set the size (default 10 validations, 3 minutes).
"""

from __future__ import annotations

import asyncio
import io
import os
import threading
import time
import zipfile
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.main import create_app
from bench import aws_client, stack_settings
from bench.queue_baseline import ASL_FILE
from local.aws import lambda_router
from local.aws.provision import Provisioner, render_template
from local.aws.server import EmbeddedAWS
from local.serving import ThreadedServer
from local.simulator.app import SimulatorConfig
from local.simulator.server import SimulatorServer

N = int(os.environ.get("QUEUE_BENCH_N", "10"))
MINUTES = float(os.environ.get("QUEUE_BENCH_MINUTES", "3"))
DOC = {"documents": [{"name": "a.txt", "content": "row 1\nrow 2\n"}], "rules": ["be tidy"]}
ADMIN = {"Authorization": "Bearer bench"}
QUOTA = {"capacity_tokens": 1_000_000, "refill_tokens_per_minute": 1_000_000, "max_running": 1}


class Hold:
    """Every model call waits at the simulator until `release()` (the running validation stays running)."""

    def __init__(self, simulator: SimulatorServer) -> None:
        self._complete = simulator.simulator.complete
        self._released = threading.Event()
        simulator.simulator.complete = self.complete  # type: ignore[method-assign]  # the simulator's one entry point, wrapped

    async def complete(self, body: dict[str, Any]) -> Any:
        while not self._released.is_set():
            await asyncio.sleep(0.05)
        return await self._complete(body)

    def release(self) -> None:
        self._released.set()


@dataclass
class Stack:
    parks: bool  # the current queue (True) or the old loop
    api: ThreadedServer
    admit_function: str
    endpoint: str
    table: str  # the validations table
    auth: dict[str, str]
    validations: list[str] = field(default_factory=list)
    executions: list[str] = field(default_factory=list)

    def invocations(self) -> int:
        return lambda_router.invocations().get(self.admit_function, 0)

    def events(self) -> int:
        sfn = aws_client("stepfunctions", self.endpoint)
        pages = sfn.get_paginator("get_execution_history")
        return sum(len(page["events"]) for arn in self.executions for page in pages.paginate(executionArn=arn))

    def get(self, vid: str) -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(f"{self.api.url}/validations/{vid}", headers=self.auth, timeout=30).json()
        return answer

    def record(self, vid: str) -> dict[str, Any]:
        db = aws_client("dynamodb", self.endpoint)
        item: dict[str, Any] = db.get_item(TableName=self.table, Key={"id": {"S": vid}}, ConsistentRead=True)["Item"]
        return item


def _empty_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.txt", "bench/queue_baseline.py runs in-process in the embedded AWS.")
    return buffer.getvalue()


def _use_the_old_queue(settings: Any, endpoint: str) -> str:
    """Point the stack's state machine at the old definition and the old admit handler; its name."""
    provisioner = Provisioner(settings, endpoint)
    provisioned = provisioner.run()  # idempotent: the ARNs of what the API provisioned
    name = f"{settings.name_prefix}-admit-polling"
    created = aws_client("lambda", endpoint).create_function(
        FunctionName=name,
        Runtime="python3.13",
        Role=provisioner.create_role(),
        Handler="bench.queue_baseline.lambda_handler",
        Code={"ZipFile": _empty_zip()},  # the embedded AWS runs handlers from this checkout
        Timeout=30,
        Environment={"Variables": provisioner.function_environment()},
    )
    arns = {**provisioned.function_arns, "admit": created["FunctionArn"]}
    variables = {
        "ssm_prefix": settings.ssm_prefix,
        "retry_interval_seconds": settings.sfn_retry_interval_seconds,
        "retry_max_attempts": settings.sfn_retry_max_attempts,
        "retry_max_delay_seconds": settings.sfn_retry_max_delay_seconds,
        **{f"{logical}_arn": arn for logical, arn in arns.items()},
    }
    aws_client("stepfunctions", endpoint).update_state_machine(
        stateMachineArn=provisioned.state_machine_arn, definition=render_template(ASL_FILE.read_text(), variables)
    )
    return name


def _stack(kind: str, endpoint: str, simulator_url: str) -> Stack:
    settings = stack_settings(endpoint, simulator_url, f"q{kind[0]}")
    api = ThreadedServer(create_app(settings), lifespan="on").start()
    admit = _use_the_old_queue(settings, endpoint) if kind == "polling" else f"{settings.name_prefix}-admit"
    created = httpx.post(
        f"{api.url}/admin/users", json={"user_id": "queued", "quota": QUOTA, "on_limit": "queue"}, headers=ADMIN
    )
    created.raise_for_status()
    auth = {"Authorization": f"Bearer {created.json()['api_key']}"}
    return Stack(kind == "parked", api, admit, endpoint, settings.table("validations"), auth)


def _submit(stack: Stack) -> None:
    for _ in range(N + 1):
        answer = httpx.post(f"{stack.api.url}/validations", json=DOC, headers=stack.auth, timeout=60)
        answer.raise_for_status()
        stack.validations.append(answer.json()["id"])
    queued = stack.validations[1:]
    stack.executions = [stack.record(vid)["execution_arn"]["S"] for vid in queued]


def _waiting(stack: Stack) -> bool:
    """Every queued validation waits: parked on its token, or (the old loop) looping."""
    sfn = aws_client("stepfunctions", stack.endpoint)
    for vid, arn in zip(stack.validations[1:], stack.executions, strict=True):
        record = stack.record(vid)
        events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
        if record["status"]["S"] != "QUEUED" or not events:
            return False
        if stack.parks and ("park_token" not in record or events[-1]["type"] != "TaskSubmitted"):
            return False
    return True


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.5)


def main() -> None:
    with EmbeddedAWS() as aws, SimulatorServer(SimulatorConfig(latency_seconds=0.01)) as simulator:
        hold = Hold(simulator)
        stacks = [_stack(kind, aws.endpoint_url, simulator.base_url) for kind in ("parked", "polling")]
        try:
            for stack in stacks:
                _submit(stack)
            for stack in stacks:
                _wait(lambda s=stack: _waiting(s), 300, "the queued validations to wait")
            started = time.monotonic()
            before = [(s.invocations(), s.events()) for s in stacks]
            time.sleep(MINUTES * 60)
            after = [(s.invocations(), s.events()) for s in stacks]
            hours = (time.monotonic() - started) / 3600
            hold.release()
            for stack in stacks:
                for vid in stack.validations:
                    _wait(lambda s=stack, v=vid: s.get(v)["status"] in ("SUCCEEDED", "FAILED"), 600, vid)
                    status = stack.get(vid)["status"]
                    if status != "SUCCEEDED":
                        raise RuntimeError(f"validation {vid} ended {status}")
        finally:
            for stack in stacks:
                stack.api.stop()

    rates = [
        ((a[0] - b[0]) / N / hours, (a[1] - b[1]) / N / hours, a[1] / N) for (b, a) in zip(before, after, strict=True)
    ]
    (parked_calls, parked_events, parked_total), (polling_calls, polling_events, polling_total) = rates
    print(f"\n## Queue (`bench/queue.py`): {N} validations queued behind max_running=1 for {MINUTES:g} min")
    print("| per queued validation | parked (task token) | polling (Admit ⇄ Wait, before) | ratio |")
    print("|---|---:|---:|---:|")
    print(
        f"| Admit invocations per hour waiting | {parked_calls:.0f} | {polling_calls:.0f} | "
        f"{_ratio(parked_calls, polling_calls)} |"
    )
    print(
        f"| history events per hour waiting | {parked_events:.0f} | {polling_events:.0f} | "
        f"{_ratio(parked_events, polling_events)} |"
    )
    print(
        f"| history events at the end of the wait | {parked_total:.0f} | {polling_total:.0f} | "
        f"{_ratio(parked_total, polling_total)} |"
    )
    if polling_events > 0:
        print(f"At this rate the polling loop reaches 25,000 events after {25_000 / polling_events:.1f} h of waiting.")


def _ratio(ours: float, baseline: float) -> str:
    return f"{ours / baseline:.3f}" if baseline else "—"


if __name__ == "__main__":
    main()

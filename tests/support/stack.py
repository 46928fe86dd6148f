"""Helpers of the tests that run through the embedded AWS: its boto3 clients, the API settings,
submitting and waiting. The fixtures that build them are tests/conftest.py's."""

from __future__ import annotations

import asyncio
import collections
import functools
import io
import json
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from pydantic import SecretStr

from app.settings import Settings
from local.simulator.server import SimulatorServer

REGION = "us-east-1"


class Aws:
    """boto3 clients against the embedded AWS, and helpers to make test resources."""

    def __init__(self, endpoint_url: str) -> None:
        self.endpoint_url = endpoint_url
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.new_client(service)
        return self._clients[service]

    def new_client(self, service: str) -> Any:
        """A client of its own (one per thread in concurrency tests)."""
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def table(self, prefix: str, *, range_key: bool = False) -> str:
        """A fresh pay-per-request table keyed `pk` (and `sk`), for tests of DynamoDB itself."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        keys = ["pk", "sk"] if range_key else ["pk"]
        self.client("dynamodb").create_table(
            TableName=name,
            KeySchema=[{"AttributeName": k, "KeyType": t} for k, t in zip(keys, ["HASH", "RANGE"], strict=False)],
            AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in keys],
            BillingMode="PAY_PER_REQUEST",
        )
        return name

    def machine_arn(self, name: str) -> str:
        """A state machine's ARN by name (paginated: the shared embedded AWS holds many)."""
        pages = self.client("stepfunctions").get_paginator("list_state_machines").paginate()
        arn: str = next(m["stateMachineArn"] for page in pages for m in page["stateMachines"] if m["name"] == name)
        return arn

    def table_names(self, prefix: str) -> list[str]:
        pages = self.client("dynamodb").get_paginator("list_tables").paginate()
        return [t for page in pages for t in page["TableNames"] if t.startswith(prefix)]

    def role(self) -> str:
        iam = self.client("iam")
        try:
            role = iam.get_role(RoleName="tests")["Role"]
        except iam.exceptions.NoSuchEntityException:
            role = iam.create_role(RoleName="tests", AssumeRolePolicyDocument="{}")["Role"]
        return str(role["Arn"])

    def function(self, handler: str, environment: dict[str, str] | None = None) -> str:
        """Register a Lambda function whose handler runs in-process; returns its ARN."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("placeholder.txt", "")
        created = self.client("lambda").create_function(
            FunctionName=f"fn-{uuid.uuid4().hex[:10]}",
            Runtime="python3.13",
            Role=self.role(),
            Handler=handler,
            Code={"ZipFile": buffer.getvalue()},
            Environment={"Variables": environment or {}},
        )
        return str(created["FunctionArn"])

    def state_machine(self, definition: dict[str, Any]) -> str:
        created = self.client("stepfunctions").create_state_machine(
            name=f"sm-{uuid.uuid4().hex[:10]}", definition=json.dumps(definition), roleArn=self.role()
        )
        return str(created["stateMachineArn"])

    def map_machine(self, function_arn: str, *, max_concurrency: int, sleep: float, **map_fields: Any) -> str:
        """A state machine of one inline Map over `$.items`, each item a Task calling `function_arn`."""
        fan = {
            "Type": "Map",
            "ItemsPath": "$.items",
            "MaxConcurrency": max_concurrency,
            "ItemSelector": {"probe.$": "$.probe", "item.$": "$$.Map.Item.Value", "sleep": sleep},
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "INLINE"},
                "StartAt": "Work",
                "States": {"Work": {"Type": "Task", "Resource": function_arn, "End": True}},
            },
            "End": True,
            **map_fields,
        }
        return self.state_machine({"StartAt": "Fan", "States": {"Fan": fan}})

    def parking_machine(self, timeout_seconds: int = 604800) -> str:
        """One `.waitForTaskToken` task (by default the 7-day timeout of the queue's WaitForSlot)
        whose Lambda (tests/local_aws/handlers.park) keeps its token under `$.probe`."""
        function_arn = self.function("tests.local_aws.handlers.park")
        park = {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
            "Parameters": {"FunctionName": function_arn, "Payload": {"probe.$": "$.probe", "token.$": "$$.Task.Token"}},
            "TimeoutSeconds": timeout_seconds,
            "ResultPath": "$.woken",
            "End": True,
        }
        return self.state_machine({"StartAt": "Park", "States": {"Park": park}})

    def start(self, machine_arn: str, payload: dict[str, Any]) -> str:
        started = self.client("stepfunctions").start_execution(
            stateMachineArn=machine_arn, name=uuid.uuid4().hex, input=json.dumps(payload)
        )
        return str(started["executionArn"])

    def wait_until(
        self,
        execution_arn: str,
        statuses: tuple[str, ...] = ("SUCCEEDED", "FAILED", "ABORTED", "TIMED_OUT"),
        timeout: float = 60,
    ) -> dict[str, Any]:
        described: dict[str, Any] = wait_for(
            lambda: (
                (d := self.client("stepfunctions").describe_execution(executionArn=execution_arn))["status"] in statuses
                and d
            ),
            timeout=timeout,
            what=f"execution {execution_arn} in {statuses}",
        )
        return described


@functools.cache
def aws_at(endpoint_url: str) -> Aws:
    """One `Aws` per endpoint for the helpers of the test process, so they build each boto3 client once."""
    return Aws(endpoint_url)


def wait_for(
    condition: Callable[[], Any], *, timeout: float = 30, interval: float = 0.05, what: str = "condition"
) -> Any:
    """Poll until `condition()` is truthy; a generous timeout bounds the test, never asserts speed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class HeldCalls:
    """Model calls after the first `passing` wait at the simulator until released: all of them
    and every later one (`release()`), or the one held longest (`release_one()`).

    The test, not the clock, decides when they answer: while calls are held, the validators
    that made them are known to be mid-call. `arrived` counts every call that reached the
    simulator, held or not (the simulator's own stats count a held call once it is released).
    """

    def __init__(self, simulator: SimulatorServer, passing: int) -> None:
        self._complete = simulator.simulator.complete
        self._passing = passing
        self._released = threading.Event()
        self._lock = threading.Lock()
        # Each held call waits on an event of the simulator's loop, set from the test's thread (no polling).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._held: collections.deque[asyncio.Event] = collections.deque()
        self.arrived = 0
        self.waiting = 0
        self.peak_waiting = 0  # the most calls held at once: that many validators were mid-call together

    async def complete(self, body: dict[str, Any]) -> Any:
        opened: asyncio.Event | None = None
        with self._lock:
            self.arrived += 1
            if self.arrived > self._passing and not self._released.is_set():
                self._loop, opened = asyncio.get_running_loop(), asyncio.Event()
                self._held.append(opened)
                self.waiting += 1
                self.peak_waiting = max(self.peak_waiting, self.waiting)
        if opened is not None:
            await opened.wait()
            with self._lock:
                self.waiting -= 1
        return await self._complete(body)

    def release_one(self) -> None:
        """The call held longest answers; later calls are still held."""
        with self._lock:
            self._open(self._held.popleft())

    def release(self) -> None:
        with self._lock:
            self._released.set()
            while self._held:
                self._open(self._held.popleft())

    def _open(self, event: asyncio.Event) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(event.set)


ADMIN_KEY = "admin-test-key"


ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def settings_of(**values: Any) -> Settings:
    """Settings from these values (then the environment, then the defaults), never from a .env file."""
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]  # pydantic-settings' __init__ takes _env_file; mypy sees only the fields


def local_settings(endpoint_url: str, simulator: SimulatorServer, letter: str = "t", **overrides: Any) -> Settings:
    """Local-mode settings for a deployment of its own on the embedded AWS at `endpoint_url`
    (names from `letter` and a random suffix), with the model at `simulator` and short Step
    Functions retries; the governor targets the simulator's limit. `overrides` win."""
    prefix = f"{letter}{uuid.uuid4().hex[:8]}"
    values: dict[str, Any] = {
        "aws_endpoint_url": endpoint_url,
        "name_prefix": prefix,
        "ssm_prefix": f"/{prefix}",
        "admin_api_key": SecretStr(ADMIN_KEY),
        "openai_base_url": simulator.base_url,
        "openai_model": "simulator",
        "sfn_retry_interval_seconds": 1,
        "sfn_retry_max_attempts": 4,
        "sfn_retry_max_delay_seconds": 2,
    }
    settings = settings_of(**{**values, **overrides})
    target_the_simulators_limit(endpoint_url, settings, simulator)
    return settings


def target_the_simulators_limit(endpoint_url: str, settings: Settings, simulator: SimulatorServer) -> None:
    """The governor's target-tpm and target-rpm parameters at the simulator's limits (provisioning keeps a
    parameter that exists)."""
    ssm = aws_at(endpoint_url).client("ssm")
    for name, value in (("target-tpm", simulator.simulator.config.tpm), ("target-rpm", simulator.simulator.config.rpm)):
        ssm.put_parameter(Name=f"{settings.ssm_prefix}/{name}", Value=str(value), Type="String", Overwrite=True)


MakeApi = Callable[..., Any]  # make_api(**overrides) -> the API's TestClient


@contextmanager
def running_api(settings: Settings, **overrides: Any) -> Iterator[Any]:
    """The API in this process (a TestClient: its lifespan provisions `settings`' deployment), with
    `overrides` applied to the settings, calling as the admin; stopped when the block ends."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(settings.model_copy(update=overrides))) as client:
        client.headers.update(ADMIN)
        yield client


def set_parallelism(aws: Aws, settings: Settings, value: int) -> None:
    aws.client("ssm").put_parameter(
        Name=f"{settings.ssm_prefix}/max-parallelism", Value=str(value), Type="String", Overwrite=True
    )


def submit(api: Any, documents: dict[str, str], rules: list[Any], **kwargs: Any) -> dict[str, Any]:
    answer = api.post(
        "/validations",
        json={"documents": [{"name": n, "content": c} for n, c in documents.items()], "rules": rules},
        **kwargs,
    )
    assert answer.status_code == 202, answer.text
    created: dict[str, Any] = answer.json()
    return created


def wait_for_status(
    api: Any,
    validation_id: str,
    statuses: tuple[str, ...] = ("SUCCEEDED", "FAILED", "CANCELLED"),
    timeout: float = 120,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The validation's view once its status is one of `statuses` (`headers`: the caller's, if the
    client has none of its own)."""
    ended: dict[str, Any] = wait_for(
        lambda: (v := api.get(f"/validations/{validation_id}", headers=headers).json())["status"] in statuses and v,
        timeout=timeout,
        interval=0.2,
        what=f"validation {validation_id} in {statuses}",
    )
    return ended


def all_results(api: Any, validation_id: str) -> list[dict[str, Any]]:
    items, cursor = [], None
    while True:
        page = api.get(
            f"/validations/{validation_id}/results", params={"limit": 100, **({"cursor": cursor} if cursor else {})}
        ).json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return items


def lines_document(lines: int, marker_every: int = 0, marker: str = "secret") -> str:
    """A text of numbered lines; every `marker_every`-th line holds `marker`."""
    return "".join(
        f"row {i}: {marker if marker_every and i % marker_every == 0 else 'plain'} value {i * 7}\n"
        for i in range(1, lines + 1)
    )


def make_user(api: Any, user_id: str | None = None, **fields: Any) -> tuple[str, dict[str, str]]:
    """Create a user through the admin API; returns (user_id, its Authorization header)."""
    user_id = user_id or f"u{uuid.uuid4().hex[:8]}"
    answer = api.post("/admin/users", json={"user_id": user_id, **fields})
    assert answer.status_code == 201, answer.text
    return user_id, {"Authorization": f"Bearer {answer.json()['api_key']}"}


def record_dynamodb_calls(monkeypatch: Any, record: Callable[[str, dict[str, Any]], None]) -> None:
    """`record(operation, params)` before every DynamoDB call boto3 makes in this process (the
    in-process Lambdas' included; the API's aiobotocore calls are not seen), until the test ends."""
    import botocore.client

    call = botocore.client.BaseClient._make_api_call

    def recording(self: Any, operation: str, params: dict[str, Any]) -> Any:
        if self.meta.service_model.service_name == "dynamodb":
            record(operation, params)
        return call(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", recording)

"""Fixtures that build on each other: embedded_aws -> aws (boto3 factory) -> settings -> api.

The suite runs on pytest-xdist workers (pyproject.toml): each worker is one process with
its own embedded AWS; what workers share (the Lambda wheel cache) is taken under `exclusive`.
"""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import os
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest
from pydantic import SecretStr

from app.settings import Settings
from local.aws.server import EmbeddedAWS
from local.simulator.app import SimulatorConfig
from local.simulator.server import SimulatorServer

REGION = "us-east-1"
# Every API a test starts (in-process or `python -m app`) serves /metrics on a free port, not
# on the default 9464 that parallel workers would fight over.
os.environ.setdefault("METRICS_PORT", "0")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: two workers per core. Many tests spend much of their time waiting (model latency,
    polling, Step Functions' waits), so one core serves two; on 2 cores, 2 workers took 295 s,
    3 took 190 s and 4 took 172 s of an earlier, smaller suite. The suite has since become
    CPU-bound: 596 tests took 341 s on 4 workers of a quiet 2-core machine, with ~650 s of CPU
    (1.9 cores busy on average; the Terraform proof ran ~175 s beside the rest). More workers cannot
    help then; each costs its start (~8 s of CPU: imports, collection, its embedded AWS)."""
    return 2 * (os.cpu_count() or 1)


def _group_of(item: pytest.Item) -> str | None:
    """The item's `xdist_group` name (several marks: their names joined, as xdist does), or None."""
    names = {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")}
    return "_".join(sorted(names)) or None


def _join_group(item: pytest.Item, group: str) -> None:
    """Suffix the item's nodeid with `@group`, from which `--dist loadgroup` groups it.

    xdist 3.8 writes the suffix to `item._nodeid`, which pytest 9.2 no longer reads: a node's
    id is a structured `Node._id` and `nodeid` is `str(_id)`. The mark then did nothing and a
    module's tests ran on several workers (pytest-dev/pytest-xdist#1386). Here the suffix goes
    where this pytest reads it, unless xdist already put it there (a pytest or xdist that works).
    tests/test_scheduling.py runs a session with these hooks and fails if groups split again.
    """
    if item.nodeid.endswith(f"@{group}"):
        return
    suffixed = f"{item.nodeid}@{group}"
    structured = getattr(item, "_id", None)
    if structured is not None and hasattr(structured, "parse"):  # pytest >= 9.2
        item._id = type(structured).parse(suffixed)
    else:
        item._nodeid = suffixed  # type: ignore[attr-defined]  # what older pytest reads (and xdist writes)


def _slow_seconds(item: pytest.Item) -> float:
    marker = item.get_closest_marker("slow")
    return float(marker.args[0]) if marker and marker.args else 0.0


@pytest.hookimpl(trylast=True)  # after xdist's own suffixing, which this one completes
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker: group the `xdist_group` tests, and start the longest work first.

    A group runs on one worker from start to end, so it is one unit of work whose seconds are
    its tests' `slow` seconds added up; every other test is a unit of its own. `--dist loadgroup`
    (with --no-loadscope-reorder: in this order) hands each worker one unit, then one more
    queued behind it, then one whenever it has at most two tests left: so the N longest units
    go first (one each), then N short ones (queued behind them), then the other long ones,
    then the rest in collection order.
    """
    if getattr(config.option, "loadgroup", False):  # set on xdist's workers under --dist loadgroup
        for item in items:
            if group := _group_of(item):
                _join_group(item, group)

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers < 2:
        return

    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        group = _group_of(item)
        units.setdefault(f"@{group}" if group else item.nodeid, []).append(item)

    def seconds(unit: list[pytest.Item]) -> float:
        return sum(_slow_seconds(item) for item in unit)

    slow = sorted((u for u in units.values() if seconds(u) > 0), key=seconds, reverse=True)
    rest = [u for u in units.values() if seconds(u) == 0]
    ordered = slow[:workers] + rest[:workers] + slow[workers:] + rest[workers:]
    items[:] = [item for unit in ordered for item in unit]


@pytest.fixture(scope="session")
def exclusive(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Any]:
    """`with exclusive(name):` holds a lock shared by every xdist worker of this run."""
    # Under xdist each worker's basetemp is <run dir>/popen-gwN: the run dir is shared.
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent

    @contextmanager
    def hold(name: str) -> Iterator[None]:
        with open(shared / f"{name}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    return hold


@pytest.fixture(scope="session")
def embedded_aws() -> Iterator[EmbeddedAWS]:
    """One embedded AWS per test process (moto keeps its state in module globals)."""
    with EmbeddedAWS(region=REGION) as server:
        yield server


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
            Runtime="python3.11",
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


@pytest.fixture(scope="session")
def aws(embedded_aws: EmbeddedAWS) -> Aws:
    return Aws(embedded_aws.endpoint_url)


@pytest.fixture
def simulator() -> Iterator[SimulatorServer]:
    """A fresh OpenAI-compatible simulator per test, so its counts are the test's own."""
    with SimulatorServer(SimulatorConfig(latency_seconds=0.01)) as server:
        yield server


class HeldCalls:
    """Model calls after the first `passing` wait at the simulator until `release()`.

    The test, not the clock, decides when they answer: while calls are held, the validators
    that made them are known to be mid-call. `arrived` counts every call that reached the
    simulator, held or not (the simulator's own stats count a held call once it is released).
    """

    def __init__(self, simulator: SimulatorServer, passing: int) -> None:
        self._complete = simulator.simulator.complete
        self._passing = passing
        self._released = threading.Event()
        self._lock = threading.Lock()
        # Held calls wait on an event of the simulator's loop, set from the test's thread (no polling).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opened: asyncio.Event | None = None
        self.arrived = 0
        self.waiting = 0
        self.peak_waiting = 0  # the most calls held at once: that many validators were mid-call together

    async def complete(self, body: dict[str, Any]) -> Any:
        with self._lock:
            self.arrived += 1
            hold = self.arrived > self._passing and not self._released.is_set()
            self.waiting += hold
            self.peak_waiting = max(self.peak_waiting, self.waiting)
            if hold and self._opened is None:
                self._loop, self._opened = asyncio.get_running_loop(), asyncio.Event()
            opened = self._opened
        if hold and opened is not None:
            await opened.wait()
            with self._lock:
                self.waiting -= 1
        return await self._complete(body)

    def release(self) -> None:
        with self._lock:
            self._released.set()
            if self._loop is not None and self._opened is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._opened.set)


@pytest.fixture
def hold_calls(simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], HeldCalls]]:
    """`hold_calls(passing)`: hold the simulator's calls after the first `passing`; released at teardown."""
    held: list[HeldCalls] = []

    def hold(passing: int) -> HeldCalls:
        calls = HeldCalls(simulator, passing)
        monkeypatch.setattr(simulator.simulator, "complete", calls.complete)
        held.append(calls)
        return calls

    yield hold
    for calls in held:  # before the simulator stops: no request is left hanging
        calls.release()


ADMIN_KEY = "admin-test-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def settings_of(**values: Any) -> Settings:
    """Settings from these values (then the environment, then the defaults), never from a .env file."""
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]  # pydantic-settings' __init__ takes _env_file; mypy sees only the fields


@pytest.fixture
def settings(embedded_aws: EmbeddedAWS, simulator: SimulatorServer) -> Settings:
    """Local-mode settings against the shared embedded AWS, with names unique to the test.

    The governor's target is the simulator's limit (provisioning keeps a parameter that
    exists), so tests not about the TPM budget are not slowed by the 50,000 TPM default.
    """
    return local_settings(embedded_aws.endpoint_url, simulator)


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
    """The governor's target-tpm parameter at the simulator's limit (provisioning keeps a parameter that exists)."""
    ssm = Aws(endpoint_url).client("ssm")
    ssm.put_parameter(
        Name=f"{settings.ssm_prefix}/target-tpm",
        Value=str(simulator.simulator.config.tpm),
        Type="String",
        Overwrite=True,
    )


MakeApi = Callable[..., Any]  # make_api(**overrides) -> the API's TestClient


@pytest.fixture
def make_api(settings: Settings) -> Iterator[MakeApi]:
    """Start the API with settings overrides (chunk size, retry timing); stopped after the test."""
    from contextlib import ExitStack

    from fastapi.testclient import TestClient

    from app.main import create_app

    with ExitStack() as stack:

        def start(**overrides: Any) -> Any:
            client = stack.enter_context(TestClient(create_app(settings.model_copy(update=overrides))))
            client.headers.update(ADMIN)
            return client

        yield start


@pytest.fixture
def api(make_api: MakeApi) -> Any:
    """The API in local mode against the shared embedded AWS, provisioned for this test."""
    return make_api()


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
    api: Any, validation_id: str, statuses: tuple[str, ...] = ("SUCCEEDED", "FAILED", "CANCELLED"), timeout: float = 120
) -> dict[str, Any]:
    ended: dict[str, Any] = wait_for(
        lambda: (v := api.get(f"/validations/{validation_id}").json())["status"] in statuses and v,
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

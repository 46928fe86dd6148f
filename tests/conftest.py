"""Fixtures that build on each other: embedded_aws -> aws (boto3 factory) -> settings -> api."""

from __future__ import annotations

import io
import json
import time
import uuid
import zipfile
from typing import Any, Callable, Iterator

import boto3
import pytest

from local.aws.server import EmbeddedAWS
from app.settings import Settings
from local.simulator.app import SimulatorConfig
from local.simulator.server import SimulatorServer

REGION = "us-east-1"


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
        return boto3.client(service, endpoint_url=self.endpoint_url, region_name=REGION, aws_access_key_id="test", aws_secret_access_key="test")

    def table(self, prefix: str, *, range_key: bool = False) -> str:
        """A fresh pay-per-request table keyed `pk` (and `sk`), for tests of DynamoDB itself."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        keys = ["pk", "sk"] if range_key else ["pk"]
        self.client("dynamodb").create_table(
            TableName=name,
            KeySchema=[{"AttributeName": k, "KeyType": t} for k, t in zip(keys, ["HASH", "RANGE"])],
            AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in keys],
            BillingMode="PAY_PER_REQUEST",
        )
        return name

    def machine_arn(self, name: str) -> str:
        """A state machine's ARN by name (paginated: the shared embedded AWS holds many)."""
        pages = self.client("stepfunctions").get_paginator("list_state_machines").paginate()
        return next(m["stateMachineArn"] for page in pages for m in page["stateMachines"] if m["name"] == name)

    def table_names(self, prefix: str) -> list[str]:
        pages = self.client("dynamodb").get_paginator("list_tables").paginate()
        return [t for page in pages for t in page["TableNames"] if t.startswith(prefix)]

    def role(self) -> str:
        iam = self.client("iam")
        try:
            return iam.get_role(RoleName="tests")["Role"]["Arn"]
        except iam.exceptions.NoSuchEntityException:
            return iam.create_role(RoleName="tests", AssumeRolePolicyDocument="{}")["Role"]["Arn"]

    def function(self, handler: str, environment: dict[str, str] | None = None) -> str:
        """Register a Lambda function whose handler runs in-process; returns its ARN."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("placeholder.txt", "")
        return self.client("lambda").create_function(
            FunctionName=f"fn-{uuid.uuid4().hex[:10]}",
            Runtime="python3.11",
            Role=self.role(),
            Handler=handler,
            Code={"ZipFile": buffer.getvalue()},
            Environment={"Variables": environment or {}},
        )["FunctionArn"]

    def state_machine(self, definition: dict[str, Any]) -> str:
        return self.client("stepfunctions").create_state_machine(
            name=f"sm-{uuid.uuid4().hex[:10]}", definition=json.dumps(definition), roleArn=self.role()
        )["stateMachineArn"]

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

    def start(self, machine_arn: str, payload: dict[str, Any]) -> str:
        return self.client("stepfunctions").start_execution(
            stateMachineArn=machine_arn, name=uuid.uuid4().hex, input=json.dumps(payload)
        )["executionArn"]

    def wait_until(self, execution_arn: str, statuses: tuple[str, ...] = ("SUCCEEDED", "FAILED", "ABORTED", "TIMED_OUT"), timeout: float = 60) -> dict[str, Any]:
        return wait_for(
            lambda: (d := self.client("stepfunctions").describe_execution(executionArn=execution_arn))["status"] in statuses and d,
            timeout=timeout,
            what=f"execution {execution_arn} in {statuses}",
        )


def wait_for(condition: Callable[[], Any], *, timeout: float = 30, interval: float = 0.05, what: str = "condition") -> Any:
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


@pytest.fixture
def settings(embedded_aws: EmbeddedAWS, simulator: SimulatorServer) -> Settings:
    """Local-mode settings against the shared embedded AWS, with names unique to the test.

    The governor's target is the simulator's limit (provisioning keeps a parameter that
    exists), so tests not about the TPM budget are not slowed by the 50,000 TPM default.
    """
    settings = Settings(
        _env_file=None,
        aws_endpoint_url=embedded_aws.endpoint_url,
        name_prefix=f"t{uuid.uuid4().hex[:8]}",
        ssm_prefix=f"/t{uuid.uuid4().hex[:8]}",
        admin_api_key="admin-test-key",
        openai_base_url=simulator.base_url,
        openai_model="simulator",
        sfn_retry_interval_seconds=1,
        sfn_retry_max_attempts=4,
        sfn_retry_max_delay_seconds=2,
    )
    ssm = Aws(embedded_aws.endpoint_url).client("ssm")
    ssm.put_parameter(Name=f"{settings.ssm_prefix}/target-tpm", Value=str(simulator.simulator.config.tpm), Type="String")
    return settings


ADMIN = {"Authorization": "Bearer admin-test-key"}


@pytest.fixture
def make_api(settings: Settings) -> Iterator[Callable[..., Any]]:
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
def api(make_api: Callable[..., Any]) -> Any:
    """The API in local mode against the shared embedded AWS, provisioned for this test."""
    return make_api()


def set_parallelism(aws: Aws, settings: Settings, value: int) -> None:
    aws.client("ssm").put_parameter(Name=f"{settings.ssm_prefix}/max-parallelism", Value=str(value), Type="String", Overwrite=True)


def submit(api: Any, documents: dict[str, str], rules: list[Any], **kwargs: Any) -> dict[str, Any]:
    answer = api.post(
        "/validations",
        json={"documents": [{"name": n, "content": c} for n, c in documents.items()], "rules": rules},
        **kwargs,
    )
    assert answer.status_code == 202, answer.text
    return answer.json()


def wait_for_status(api: Any, validation_id: str, statuses: tuple[str, ...] = ("SUCCEEDED", "FAILED", "CANCELLED"), timeout: float = 120) -> dict[str, Any]:
    return wait_for(
        lambda: (v := api.get(f"/validations/{validation_id}").json())["status"] in statuses and v,
        timeout=timeout,
        interval=0.2,
        what=f"validation {validation_id} in {statuses}",
    )


def all_results(api: Any, validation_id: str) -> list[dict[str, Any]]:
    items, cursor = [], None
    while True:
        page = api.get(f"/validations/{validation_id}/results", params={"limit": 100, **({"cursor": cursor} if cursor else {})}).json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return items


def lines_document(lines: int, marker_every: int = 0, marker: str = "secret") -> str:
    """A text of numbered lines; every `marker_every`-th line holds `marker`."""
    return "".join(
        f"row {i}: {marker if marker_every and i % marker_every == 0 else 'plain'} value {i * 7}\n" for i in range(1, lines + 1)
    )


def make_user(api: Any, user_id: str | None = None, **fields: Any) -> tuple[str, dict[str, str]]:
    """Create a user through the admin API; returns (user_id, its Authorization header)."""
    user_id = user_id or f"u{uuid.uuid4().hex[:8]}"
    answer = api.post("/admin/users", json={"user_id": user_id, **fields})
    assert answer.status_code == 201, answer.text
    return user_id, {"Authorization": f"Bearer {answer.json()['api_key']}"}

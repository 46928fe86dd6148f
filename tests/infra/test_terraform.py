"""The proof that infra/terraform deploys a working stack.

Offline `terraform init` from a local provider directory, `fmt -check`, `validate`, then
`apply` against the embedded AWS running as its own process; the API in aws mode,
configured only from `terraform output` (plus its admin key, a secret Terraform does not
hold), runs a whole validation through the resources Terraform made; an admin changes
max-parallelism at run time; `plan -detailed-exitcode` must then report no changes;
switching on the optional API on ECS Fargate plans only additions; `destroy` removes
everything.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from app.settings import Settings
from infra import build_lambdas
from local.aws.provision import Provisioner, load_resources
from local.simulator.app import SimulatorConfig
from local.simulator.server import SimulatorServer
from tests.conftest import settings_of, wait_for
from tests.infra.terraform import Terraform, find_plugin_dir, missing_tools
from tests.servers import embedded_aws_process, free_port, process

pytestmark = pytest.mark.skipif(missing_tools() is not None, reason=str(missing_tools()))

REGION = "us-east-1"
ADMIN_KEY = "terraform-proof-admin-key"
# Short retry timings so a test run is quick; every other setting keeps its default.
OVERRIDES = {
    "openai_model": "simulator",
    "retry_interval_seconds": 1,
    "retry_max_attempts": 4,
    "retry_max_delay_seconds": 2,
    "queue_min_wait_seconds": 1,
}


@pytest.fixture
def log(capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """Print straight to the CI log (not captured): each step and how long it took."""
    started = time.monotonic()

    def write(message: str) -> None:
        with capsys.disabled():
            print(f"\n[terraform proof +{time.monotonic() - started:5.1f} s] {message}", flush=True)

    yield write


def _clients(endpoint: str) -> Any:
    def client(service: str) -> Any:
        return boto3.client(
            service, endpoint_url=endpoint, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
        )

    return client


@pytest.mark.slow(145)
def test_terraform_apply_runs_a_validation_then_plans_clean_and_destroys(
    tmp_path: Path, log: Any, exclusive: Callable[[str], Any]
) -> None:
    plugin_dir = find_plugin_dir()
    assert plugin_dir is not None
    with exclusive("lambda-build"):  # the wheel cache is shared with tests/infra/test_lambda_build.py
        hashes = build_lambdas.build(tmp_path / "lambda", strict=True)
    log(f"make lambdas: code.zip {hashes['code.zip'][:12]}…, dependencies.zip {hashes['dependencies.zip'][:12]}…")

    tf = Terraform.copy_module(tmp_path, plugin_dir, log)
    tf.init()
    tf.run("fmt", "-check", "-recursive", "-diff")
    tf.run("validate")

    with SimulatorServer(SimulatorConfig(latency_seconds=0.01)) as simulator, embedded_aws_process() as endpoint:
        client = _clients(endpoint)
        tfvars = {
            **OVERRIDES,
            "aws_endpoint_url": endpoint,
            "lambda_build_dir": str(tmp_path / "lambda"),
            "openai_base_url": simulator.base_url,
        }
        (tf.workdir / "proof.auto.tfvars.json").write_text(json.dumps(tfvars))
        try:
            tf.run("apply", "-auto-approve", "-parallelism=20")
            outputs = tf.outputs()
            environment = outputs["api_environment"]
            tables, functions = len(outputs["table_names"]), len(outputs["function_arns"])
            log(f"apply done: {tables} tables, {functions} functions, {outputs['state_machine_arn']}")

            _check_api_environment_matches_settings(environment, tfvars)
            _check_lambda_environment_covers_local_provisioning(client, outputs, environment)
            _check_least_privilege(client, outputs)

            _run_a_validation_through_the_api(environment, log)

            # An admin's run-time change (PATCH /admin/parallelism writes SSM) is not drift.
            ssm = client("ssm")
            ssm.put_parameter(
                Name=f"{environment['SSM_PREFIX']}/max-parallelism", Value="7", Type="String", Overwrite=True
            )
            plan = tf.run("plan", "-detailed-exitcode", "-parallelism=20", ok_codes=(0, 2))
            assert plan.returncode == 0, f"plan after apply is not clean:\n{plan.stdout[-4000:]}"
            log("plan -detailed-exitcode: no changes (exit 0)")

            _plan_the_api_on_fargate(tf, log)
        finally:
            tf.run("destroy", "-auto-approve", "-parallelism=20")
        assert client("dynamodb").list_tables()["TableNames"] == []
        assert client("stepfunctions").list_state_machines()["stateMachines"] == []
        assert client("lambda").list_functions()["Functions"] == []
        log("destroy done: no tables, functions or state machines left")


def _check_api_environment_matches_settings(environment: dict[str, str], tfvars: dict[str, Any]) -> None:
    """Every name is a Settings field; every value Terraform defaults is the app's default."""
    fields = set(Settings.model_fields)
    assert {name.lower() for name in environment} <= fields, "api_environment names a variable Settings does not read"
    parsed = settings_of(**{name.lower(): value for name, value in environment.items()})
    defaults = settings_of()
    overridden = {f"sfn_{k}" if k.startswith("retry_") else k for k in tfvars}
    resource_names = {n for n in fields if n.endswith("_table")} | {
        "uploads_bucket",
        "state_machine_arn",
        "mode",
        "aws_endpoint_url",
    }
    for name in {n.lower() for n in environment} - overridden - resource_names:
        assert getattr(parsed, name) == getattr(defaults, name), (
            f"Terraform's default for {name.upper()} differs from app/settings.py"
        )
    assert parsed.mode.value == "aws"
    # Every table of resources.json is named for the API.
    assert {f"{t.upper()}_TABLE" for t in load_resources()["tables"]} <= set(environment)


def _check_lambda_environment_covers_local_provisioning(
    client: Any, outputs: dict[str, Any], environment: dict[str, str]
) -> None:
    """Terraform gives each function every variable local provisioning gives it."""
    settings = settings_of(
        **{name.lower(): value for name, value in environment.items()}, openai_base_url="http://simulator"
    )
    expected = {
        name
        for name, value in Provisioner(settings, environment["AWS_ENDPOINT_URL"]).function_environment().items()
        if value
    }
    for name, arn in outputs["function_arns"].items():
        variables = client("lambda").get_function_configuration(FunctionName=arn)["Environment"]["Variables"]
        assert expected <= set(variables), f"{name} lacks {sorted(expected - set(variables))}"
        assert variables["VALIDATIONS_TABLE"] == environment["VALIDATIONS_TABLE"]


def _check_least_privilege(client: Any, outputs: dict[str, Any]) -> None:
    """Each function's role names exactly the tables its `uses` lists, and S3/SSM only when used."""
    iam = client("iam")
    functions = load_resources()["functions"]
    for name, role_arn in outputs["function_role_arns"].items():
        role = role_arn.rsplit("/", 1)[1]
        policy = iam.get_role_policy(RoleName=role, PolicyName="least-privilege")["PolicyDocument"]
        document = json.loads(policy) if isinstance(policy, str) else policy
        resources = {
            r
            for s in document["Statement"]
            for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
        }
        actions = {
            a for s in document["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
        }
        tables = {r.split(":table/")[1].split("/")[0] for r in resources if ":table/" in r}
        assert tables == {outputs["table_names"][t] for t in functions[name]["uses"]["tables"]}, name
        assert any(a.startswith("s3:") for a in actions) == (functions[name]["uses"]["bucket"] != "none"), name
        assert any(a.startswith("ssm:") for a in actions) == (functions[name]["uses"]["ssm"] != "none"), name
        # Only the functions that wake parked queued validations may send task tokens (core/queue.py).
        wakes = functions[name]["uses"].get("task_tokens") == "send"
        assert ("states:SendTaskSuccess" in actions) == wakes, name
        assert not wakes or any(
            r.endswith(f":stateMachine:{outputs['state_machine_arn'].split(':')[-1]}") for r in resources
        )
        read_only = {t for t, mode in functions[name]["uses"]["tables"].items() if mode == "r"}
        for statement in document["Statement"]:
            named = (
                {r.split(":table/")[1].split("/")[0] for r in statement["Resource"] if ":table/" in r}
                if isinstance(statement["Resource"], list)
                else set()
            )
            if named & {outputs["table_names"][t] for t in read_only}:
                assert not {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"} & set(
                    statement["Action"]
                ), name


def _run_a_validation_through_the_api(environment: dict[str, str], log: Any) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**environment, "ADMIN_API_KEY": ADMIN_KEY, "HOST": "127.0.0.1", "PORT": str(port)}
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    # /readyz answers 200 only when the table, bucket, state machine and parameter it names exist.
    with (
        process(["-m", "app"], f"{base}/readyz", env=env),
        httpx.Client(base_url=base, headers=headers, timeout=30) as api,
    ):
        log("API (MODE=aws, configured from terraform output) is ready")
        answer = api.post(
            "/validations",
            json={
                "documents": [
                    {"name": "clean.csv", "content": "id,note\n1,fine\n2,also fine\n"},
                    {"name": "leaky.md", "content": "# notes\nthe secret is out\nnothing here\n"},
                ],
                "rules": ['The file must not contain "secret".'],
            },
        )
        assert answer.status_code == 202, answer.text
        validation_id = answer.json()["id"]
        final = wait_for(
            lambda: (
                (v := api.get(f"/validations/{validation_id}").json())["status"] in {"SUCCEEDED", "FAILED", "CANCELLED"}
                and v
            ),
            timeout=120,
            interval=0.3,
            what=f"validation {validation_id} to end",
        )
        assert final["status"] == "SUCCEEDED", final
        log(f"validation {validation_id}: {final['status']} ({final['progress']})")
        results = {r["file"]: r for r in api.get(f"/validations/{validation_id}/results").json()["items"]}
        assert results["clean.csv"]["rules"][0]["passed"] is True
        leaky = results["leaky.md"]["rules"][0]
        assert leaky["passed"] is False and len(leaky["findings"]) == 1


def _plan_the_api_on_fargate(tf: Terraform, log: Any) -> None:
    """deploy_api=true adds the Fargate service, its load balancer and roles, and touches nothing else.

    (Applying it against the embedded AWS works too, but adds a minute to this test.)"""
    api_vars = {
        "deploy_api": True,
        "api_image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/validation:1",
        "vpc_id": "vpc-0123456789abcdef0",
        "public_subnet_ids": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
        "private_subnet_ids": ["subnet-0123456789abcdef2"],
        "certificate_arn": "arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000000",
        "admin_api_key": ADMIN_KEY,
    }
    (tf.workdir / "api.tfvars.json").write_text(json.dumps(api_vars))
    plan = tf.run("plan", "-detailed-exitcode", "-parallelism=20", "-var-file=api.tfvars.json", ok_codes=(2,))
    summary = re.search(r"Plan: (\d+) to add, (\d+) to change, (\d+) to destroy", plan.stdout)
    assert summary and summary.group(2, 3) == ("0", "0"), plan.stdout[-3000:]
    for address in (
        "aws_ecs_service.api[0]",
        "aws_lb.api[0]",
        "aws_lb_listener.api_https[0]",
        "aws_iam_role.api_task[0]",
    ):
        assert f"# {address} will be created" in plan.stdout
    log(f"plan with deploy_api=true: {summary.group(1)} to add, nothing else changes")

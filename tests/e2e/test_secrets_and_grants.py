"""One whole local run (`python -m app`, its embedded AWS and in-process Lambdas, a simulator
that requires the model key) as its own process, read three ways:

- its log (stdout and stderr) holds none of the keys: the model key, the admin key, a
  user's key, a wrong key someone tried;
- the model key reached the model only through SSM: no Lambda environment holds it, the
  model-calling functions read its SecureString, and nothing else did;
- every DynamoDB call of every Lambda and of the API is one its IAM grant allows
  (resources.json, read as iam.tf reads it: tests/infra/grants.py).
"""

from __future__ import annotations

import json
import secrets
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from local.aws.provision import OPENAI_KEY_PARAMETER, load_resources
from local.simulator.app import SimulatorConfig
from local.simulator.server import SimulatorServer
from tests.infra import grants
from tests.servers import free_port, process
from tests.support.stack import lines_document, wait_for_status
from tests.webhooks.receiver import receiver

pytestmark = pytest.mark.stack  # a whole run with servers of its own

PREFIX = "leakcheck"
SSM_PREFIX = "/leakcheck"


@pytest.mark.slow(15)
def test_a_whole_run_logs_no_key_reads_the_model_key_from_ssm_and_stays_within_its_grants(tmp_path: Path) -> None:
    openai_key = f"sk-test-{secrets.token_hex(16)}"
    admin_key = f"admin-{secrets.token_hex(16)}"
    wrong_key = f"vk_{secrets.token_hex(16)}"
    calls_file = tmp_path / "aws-calls.jsonl"
    port, aws_port = free_port(), free_port()
    base, endpoint = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{aws_port}"

    with (
        # The combine call fails twice (its attempt and its one retry): RecordCombineFailure runs,
        # and `retry` deletes the failed verdict, so every function and the API's deletes take part.
        SimulatorServer(
            SimulatorConfig(
                latency_seconds=0.01,
                api_key=openai_key,
                faults=["combine:malformed"] * 2,
                batch_completion_seconds=0.5,
            )
        ) as simulator,
        tempfile.TemporaryFile() as log,
        receiver() as hook,  # alice's webhook: the notify machine and its Lambda run too
    ):
        env = {
            "PORT": str(port),
            "EMBEDDED_AWS_PORT": str(aws_port),
            "NAME_PREFIX": PREFIX,
            "SSM_PREFIX": SSM_PREFIX,
            "ADMIN_API_KEY": admin_key,
            "OPENAI_API_KEY": openai_key,
            "OPENAI_BASE_URL": simulator.base_url,
            "OPENAI_MODEL": "simulator",
            "PART_MAX_TOKENS": "100",  # a file of several parts: the combine step runs too
            "SFN_RETRY_INTERVAL_SECONDS": "1",
            "SFN_RETRY_MAX_ATTEMPTS": "1",
            "BATCH_POLL_FIRST_SECONDS": "1",  # the batch lane's polls (its function's grants too)
            "BATCH_POLL_MAX_SECONDS": "1",
            "AWS_CALLS_FILE": str(calls_file),
        }
        with process(["-m", "tests.e2e.recorded_api"], f"{base}/readyz", env=env, output=log):
            aws = _clients(endpoint)
            # The governor's budget at the simulator's limit, not the 50,000 TPM default.
            aws("ssm").put_parameter(
                Name=f"{SSM_PREFIX}/target-tpm",
                Value=str(simulator.simulator.config.tpm),
                Type="String",
                Overwrite=True,
            )
            # One call at a time: the combine step's first two calls are the two faults (a tree
            # level's calls side by side would spend both on one attempt).
            aws("ssm").put_parameter(Name=f"{SSM_PREFIX}/max-parallelism", Value="1", Type="String", Overwrite=True)
            with httpx.Client(base_url=base, timeout=30) as api:
                admin = {"Authorization": f"Bearer {admin_key}"}
                created = api.post("/admin/users", json={"user_id": "alice"}, headers=admin)
                assert created.status_code == 201, created.text
                user_key = created.json()["api_key"]
                user = {"Authorization": f"Bearer {user_key}"}
                assert api.put("/me/webhook", json={"url": hook.url}, headers=user).status_code in (200, 201)
                assert api.get("/validations", headers={"Authorization": f"Bearer {wrong_key}"}).status_code == 401

                # One file uploaded straight to S3: the plan step (and its grants) runs too.
                uploaded = b"one plain line\nanother\n"
                declared = api.post(
                    "/uploads", headers=user, json={"files": [{"name": "up.log", "size": len(uploaded)}]}
                )
                assert declared.status_code == 201, declared.text
                (ticket,) = declared.json()["uploads"]
                assert httpx.put(ticket["url"], content=uploaded, headers=ticket["headers"]).status_code == 200
                submitted = api.post(
                    "/validations",
                    headers=user,
                    json={
                        "documents": [
                            {"name": "long.txt", "content": lines_document(40, marker_every=7)},
                            {"name": "short.csv", "content": "id,note\n1,fine\n"},
                        ],
                        "uploads": [ticket["upload_id"]],
                        "rules": ['The file must not contain "secret".'],
                    },
                )
                assert submitted.status_code == 202, submitted.text
                validation_id = submitted.json()["id"]

                first = wait_for_status(api, validation_id, headers=user)
                assert (first["status"], first["error"]["type"]) == ("FAILED", "combine_failed"), first
                assert api.post(f"/validations/{validation_id}/retry", headers=user).status_code == 202
                final = wait_for_status(api, validation_id, headers=user)
                assert final["status"] == "SUCCEEDED", final
                results = api.get(f"/validations/{validation_id}/results", headers=user).json()["items"]
                assert {r["file"]: r["rules"][0]["passed"] for r in results} == {
                    "long.txt": False,
                    "short.csv": True,
                    "up.log": True,
                }
                rotated = api.post("/admin/users/alice/keys", headers=admin)
                assert rotated.status_code == 201, rotated.text
                new_key = rotated.json()["api_key"]
                assert api.get("/validations", headers={"Authorization": f"Bearer {new_key}"}).status_code == 200
                # The batch lane's function: one validation through the Batch API (the admin has every tier).
                on_batch = api.post(
                    "/validations",
                    headers=admin,
                    json={
                        "documents": [{"name": "batched.txt", "content": "a secret line\nfine\n"}],
                        "rules": ['The file must not contain "secret".'],
                        "tier": "batch",
                        "reuse": False,
                    },
                )
                assert on_batch.status_code == 202, on_batch.text
                batched = wait_for_status(api, on_batch.json()["id"], headers=admin)
                assert batched["status"] == "SUCCEEDED" and batched["batch"]["status"] == "completed", batched
                # The reconciler's grants too (one pass; the purge of the API's deletes on events).
                assert api.post("/admin/reconcile", headers=admin).status_code == 200
                purged = api.delete(f"/validations/{validation_id}/data", headers=admin)
                assert purged.status_code == 200, purged.text
            environments = {
                f["FunctionName"]: f.get("Environment", {}).get("Variables", {})
                for f in aws("lambda").list_functions()["Functions"]
            }
        log.seek(0)
        output = log.read().decode(errors="replace")
        stats = simulator.stats.snapshot()

    # The log is the run's (it saw the validation), and no key is in it.
    assert validation_id in output
    for name, key in {
        "model": openai_key,
        "admin": admin_key,
        "user": user_key,
        "rotated": new_key,
        "wrong": wrong_key,
    }.items():
        assert output.count(key) == 0, f"the {name} key is in the log"

    # The model got the key (every call authorized) from SSM: no function's environment holds it.
    assert stats["unauthorized"] == 0 and stats["part_calls"] > 1 and stats["combine_calls"] >= 1
    parameter = f"{SSM_PREFIX}/{OPENAI_KEY_PARAMETER}"
    assert set(environments) == {f"{PREFIX}-{f.replace('_', '-')}" for f in load_resources()["functions"]}
    for function, variables in environments.items():
        assert "OPENAI_API_KEY" not in variables, function
        assert not [k for k, v in variables.items() if openai_key in v], function
        assert variables["OPENAI_API_KEY_PARAMETER"] == parameter, function

    calls = [json.loads(line) for line in calls_file.read_text().splitlines()]
    by_caller: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for call in calls:
        by_caller[_role(call["caller"])].add((call["action"], call["resource"]))
    # Every function ran, and the API.
    assert set(load_resources()["functions"]) | {grants.API} <= set(by_caller)

    # Only the model-calling functions touched the key's parameter (local provisioning wrote it), and they read it.
    touching = {role for role, seen in by_caller.items() if any(resource == parameter for _, resource in seen)}
    readers = {role for role, seen in by_caller.items() if ("ssm:GetParameter", parameter) in seen}
    assert touching - {"other"} == readers and readers <= grants.model_callers() and "validate_part" in readers

    # Every DynamoDB call of a Lambda or the API is one its grant allows.
    refused = []
    for role, seen in by_caller.items():
        if role == "other":  # local provisioning, the Step Functions interpreter: not a role of ours
            continue
        allowed = grants.table_grants(role)
        for action, table in seen:
            if action.startswith("dynamodb:"):
                logical = table.removeprefix(f"{PREFIX}-")
                if action not in allowed.get(logical, set()):
                    refused.append((role, action, logical))
    assert not refused, f"calls the IAM grants of resources.json refuse: {sorted(refused)}"
    deletes = {
        (role, table) for role, seen in by_caller.items() for action, table in seen if action.endswith("DeleteItem")
    }
    assert deletes, "the run deleted nothing: the check above saw no DeleteItem to judge"


def _role(caller: str) -> str:
    """A function's name (`<prefix>-validate-part`) as resources.json names it; "api"; "other"."""
    return caller.removeprefix(f"{PREFIX}-").replace("-", "_") if caller.startswith(f"{PREFIX}-") else caller


def _clients(endpoint: str) -> Callable[[str], Any]:
    def client(service: str) -> Any:
        return boto3.client(
            service, endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )

    return client

"""The embedded AWS as its own process; the API as `python -m app` (what `make run` runs)."""

from __future__ import annotations

from collections.abc import Callable

import boto3
import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from local.simulator.server import SimulatorServer
from tests.servers import embedded_aws_process, free_port, process
from tests.support.stack import (
    ADMIN,
    ADMIN_KEY,
    HeldCalls,
    all_results,
    lines_document,
    settings_of,
    target_the_simulators_limit,
    wait_for,
    wait_for_status,
)

pytestmark = pytest.mark.stack  # starts the API and AWS in processes of their own


def test_api_restart_keeps_the_state_of_a_separate_embedded_aws() -> None:
    with embedded_aws_process() as endpoint:
        settings = settings_of(aws_endpoint_url=endpoint, name_prefix="restart", admin_api_key="k")
        with TestClient(create_app(settings)) as client:
            assert client.get("/readyz").status_code == 200
        s3 = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
        s3.put_object(Bucket=settings.bucket, Key="kept", Body=b"still here")

        with TestClient(create_app(settings)) as client:  # the API restarted; AWS kept running
            assert client.get("/readyz").status_code == 200

        assert s3.get_object(Bucket=settings.bucket, Key="kept")["Body"].read() == b"still here"
        sfn = boto3.client(
            "stepfunctions",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
        # Provisioned once, not again at the restart: the validation and the notify machines.
        names = sorted(m["name"] for m in sfn.list_state_machines()["stateMachines"])
        assert names == sorted([settings.state_machine_name, f"{settings.name_prefix}-notify"])


@pytest.mark.slow(6)
def test_python_m_app_serves_health_readiness_and_docs_in_local_mode() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with process(["-m", "app"], f"{base}/healthz", env={"PORT": str(port), "ADMIN_API_KEY": "k"}):
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/readyz").status_code == 200
        assert httpx.get(f"{base}/docs").status_code == 200


@pytest.mark.slow(13)
def test_api_restarted_mid_run_the_validation_completes_and_nothing_is_lost(
    simulator: SimulatorServer, hold_calls: Callable[[int], HeldCalls]
) -> None:
    held = hold_calls(2)  # two parts answer; the others wait until the first API is gone
    with embedded_aws_process() as endpoint:
        settings = settings_of(
            aws_endpoint_url=endpoint,
            name_prefix="midrun",
            admin_api_key=ADMIN_KEY,
            openai_base_url=simulator.base_url,
            part_max_tokens=100,
            sfn_retry_interval_seconds=1,
        )
        target_the_simulators_limit(
            endpoint, settings, simulator
        )  # not the 50,000 TPM default: this test is not about the budget
        with TestClient(create_app(settings), headers=ADMIN) as first:
            created = first.post(
                "/validations",
                json={
                    "documents": [{"name": "a.txt", "content": lines_document(200)}],
                    "rules": ['must not contain "secret"'],
                },
            ).json()
            vid = created["id"]
            wait_for(lambda: first.get(f"/validations/{vid}").json()["progress"]["succeeded"] >= 2, what="progress")
        # The first API is gone; the execution goes on in the embedded AWS process.
        with TestClient(create_app(settings), headers=ADMIN) as second:
            assert second.get(f"/validations/{vid}").json()["status"] == "RUNNING"
            held.release()
            done = wait_for_status(second, vid, timeout=240)
            results = all_results(second, vid)

    assert done["status"] == "SUCCEEDED"
    assert done["progress"]["succeeded"] == done["progress"]["total"] == results[0]["parts"]["total"]
    assert simulator.stats.part_calls == done["progress"]["total"]  # no part was validated twice
    assert results[0]["rules"][0]["passed"] is True

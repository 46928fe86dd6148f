"""Liveness, readiness and the OpenAPI UI."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.support.stack import ADMIN, Aws


def test_healthz_readyz_and_docs_answer(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz", headers=ADMIN)  # details for admins only
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"dynamodb": "ok", "s3": "ok", "stepfunctions": "ok", "ssm": "ok"}
        assert client.get("/docs").status_code == 200
        assert client.get("/openapi.json").json()["info"]["title"] == "Validation service"


def test_readyz_is_503_naming_what_is_unreachable(settings: Settings, aws: Aws) -> None:
    with TestClient(create_app(settings)) as client:
        aws.client("s3").delete_bucket(Bucket=settings.bucket)
        aws.client("ssm").delete_parameter(Name=f"{settings.ssm_prefix}/max-parallelism")

        answer = client.get("/readyz", headers=ADMIN)  # details for admins only

    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert set(body["failed"]) == {"s3", "ssm"}
    assert body["detail"] == "Unreachable: s3, ssm"

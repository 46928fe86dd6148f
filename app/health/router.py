"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.deps import ClientsDep, SettingsDep
from app.errors import PROBLEM_BASE, PROBLEM_JSON

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A dependency is unreachable"}})
async def readyz(settings: SettingsDep, clients: ClientsDep) -> Any:
    """DynamoDB, S3, Step Functions and SSM are reachable with the configured resources."""
    checks = {
        "dynamodb": clients.dynamodb.describe_table(TableName=settings.table("validations")),
        "s3": clients.s3.head_bucket(Bucket=settings.bucket),
        "stepfunctions": clients.sfn.describe_state_machine(stateMachineArn=settings.state_machine_arn or ""),
        "ssm": clients.ssm.get_parameter(Name=f"{settings.ssm_prefix}/max-parallelism"),
    }

    async def probe(call: Any) -> str | None:
        try:
            await asyncio.wait_for(call, timeout=settings.readiness_timeout_seconds)
        except Exception as exc:  # noqa: BLE001 - every failure is reported by name, not raised
            return f"{type(exc).__name__}: {exc}"[:300]
        return None

    results = dict(zip(checks, await asyncio.gather(*(probe(c) for c in checks.values())), strict=True))
    failed = {name: reason for name, reason in results.items() if reason}
    if failed:
        body = {
            "type": PROBLEM_BASE + "not-ready",
            "title": "Not ready",
            "status": 503,
            "detail": "Unreachable: " + ", ".join(sorted(failed)),
            "failed": failed,
        }
        return JSONResponse(body, status_code=503, media_type=PROBLEM_JSON)
    return {"status": "ready", "checks": dict.fromkeys(checks, "ok")}

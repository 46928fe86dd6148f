"""Liveness and readiness."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from app.errors import PROBLEM_BASE, PROBLEM_JSON
from app.health.readiness import Readiness
from app.identity.principal import Principal

router = APIRouter(tags=["health"])
CHECKS = ("dynamodb", "s3", "stepfunctions", "ssm")


def get_readiness(request: Request) -> Readiness:
    readiness: Readiness = request.app.state.readiness
    return readiness


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A dependency is unreachable"}})
async def readyz(request: Request, readiness: Annotated[Readiness, Depends(get_readiness)]) -> Any:
    """DynamoDB, S3, Step Functions and SSM are reachable (checked at most once a second). Anonymous
    callers get the status only; with an admin key, which dependency failed and why."""
    failed = await readiness.failures()
    caller: Principal | None = getattr(request.state, "principal", None)
    details = caller is not None and caller.is_admin
    if failed:
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + "not-ready",
            "title": "Not ready",
            "status": 503,
            "detail": "Unreachable: " + ", ".join(sorted(failed)) if details else "A dependency is unreachable.",
        }
        if details:
            body["failed"] = failed
        return JSONResponse(body, status_code=503, media_type=PROBLEM_JSON)
    return {"status": "ready", **({"checks": dict.fromkeys(CHECKS, "ok")} if details else {})}

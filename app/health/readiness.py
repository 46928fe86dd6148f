"""Readiness: are DynamoDB, S3, Step Functions and SSM reachable with the configured resources?

The four AWS calls are made at most once per `readiness_cache_seconds` per process, however
often the probe is hit (an anonymous caller cannot turn `/readyz` into AWS traffic), and a
failure is described by its exception class and AWS error code only (AWS messages carry ARNs).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from botocore.exceptions import ClientError

from app.aws.clients import AWSClients
from app.aws.errors import error_code
from app.settings import Settings


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return f"ClientError: {error_code(exc)}"
    if isinstance(exc, TimeoutError):
        return "TimeoutError: no answer in time"
    return type(exc).__name__


class Readiness:
    def __init__(self, clients: AWSClients, settings: Settings) -> None:
        self._clients = clients
        self._settings = settings
        self._lock = asyncio.Lock()
        self._checked_at: float | None = None
        self._failed: dict[str, str] = {}
        self.probes = 0  # rounds of AWS calls made (tests count them)

    async def failures(self) -> dict[str, str]:
        """Unreachable dependencies by name, with a reason; {} when ready."""
        async with self._lock:  # concurrent probes share one round of calls
            fresh = self._checked_at is not None and (
                time.monotonic() - self._checked_at < self._settings.readiness_cache_seconds
            )
            if not fresh:
                self._failed = await self._probe()
                self._checked_at = time.monotonic()
            return dict(self._failed)

    async def _probe(self) -> dict[str, str]:
        self.probes += 1
        s, c = self._settings, self._clients
        checks = {
            "dynamodb": c.dynamodb.describe_table(TableName=s.table("validations")),
            "s3": c.s3.head_bucket(Bucket=s.bucket),
            "stepfunctions": c.sfn.describe_state_machine(stateMachineArn=s.state_machine_arn or ""),
            "ssm": c.ssm.get_parameter(Name=f"{s.ssm_prefix}/max-parallelism"),
        }

        async def probe(call: Any) -> str | None:
            try:
                await asyncio.wait_for(call, timeout=s.readiness_timeout_seconds)
            except Exception as exc:  # noqa: BLE001 - every failure is reported by name, not raised
                return _reason(exc)
            return None

        results = await asyncio.gather(*(probe(call) for call in checks.values()))
        return {name: reason for name, reason in zip(checks, results, strict=True) if reason}

"""Parallelism settings in SSM Parameter Store, read by every execution at its start."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from app.aws.clients import AWSClients
from app.errors import UpstreamError
from app.settings import Settings

PARAMETERS = {"max_parallelism": "max-parallelism", "target_tpm": "target-tpm", "throttle_threshold": "throttle-threshold"}
_TYPES = {"max_parallelism": int, "target_tpm": int, "throttle_threshold": float}


class ParallelismSettings:
    def __init__(self, clients: AWSClients, settings: Settings) -> None:
        self._ssm = clients.ssm
        self._prefix = settings.ssm_prefix

    def _name(self, field: str) -> str:
        return f"{self._prefix}/{PARAMETERS[field]}"

    async def read(self) -> dict[str, Any]:
        try:
            answer = await self._ssm.get_parameters(Names=[self._name(f) for f in PARAMETERS])
        except ClientError as exc:
            raise UpstreamError(f"SSM GetParameters failed: {exc.response['Error']['Code']}") from exc
        by_name = {p["Name"]: p["Value"] for p in answer["Parameters"]}
        missing = [self._name(f) for f in PARAMETERS if self._name(f) not in by_name]
        if missing:
            raise UpstreamError(f"SSM parameters missing: {', '.join(missing)}")
        return {field: _TYPES[field](by_name[self._name(field)]) for field in PARAMETERS}

    async def write(self, changes: dict[str, Any]) -> None:
        for field, value in changes.items():
            await self._ssm.put_parameter(Name=self._name(field), Value=str(value), Type="String", Overwrite=True)

"""Parallelism settings in SSM Parameter Store (read live by the controller and the
validators, cached a few seconds), and the governor's state beside them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from app.aws.clients import AWSClients
from app.errors import UpstreamError
from app.settings import Settings
from core import governor as g
from core.dynamo import decimal, from_item, typed

PARAMETERS = {
    "max_parallelism": "max-parallelism",
    "target_tpm": "target-tpm",
    "throttle_threshold": "throttle-threshold",
    "fair_share": "fair-share",
}
_TYPES: dict[str, Callable[[str], Any]] = {
    "max_parallelism": int,
    "target_tpm": int,
    "throttle_threshold": float,
    "fair_share": lambda value: value.strip().lower() != "off",  # as the Lambdas read it (core/governor.Limits)
}
OPTIONAL = {"fair_share": "on"}  # a deployment made before the parameter existed: its default


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
        for field, default in OPTIONAL.items():
            by_name.setdefault(self._name(field), default)
        missing = [self._name(f) for f in PARAMETERS if self._name(f) not in by_name]
        if missing:
            raise UpstreamError(f"SSM parameters missing: {', '.join(missing)}")
        return {field: _TYPES[field](by_name[self._name(field)]) for field in PARAMETERS}

    async def write(self, changes: dict[str, Any]) -> None:
        for field, value in changes.items():
            text = ("on" if value else "off") if isinstance(value, bool) else str(value)
            await self._ssm.put_parameter(Name=self._name(field), Value=text, Type="String", Overwrite=True)


class GovernorView:
    """What the TPM governor is doing (core/governor.py), read from its table."""

    def __init__(self, clients: AWSClients, settings: Settings) -> None:
        self._dynamodb = clients.dynamodb
        self._table = settings.table("governor")
        self._window = settings.governor_window_seconds

    async def read(self, configured: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        try:
            item = (
                await self._dynamodb.get_item(TableName=self._table, Key=typed(g.BUDGET_KEY), ConsistentRead=True)
            ).get("Item")
            usage = await self._dynamodb.batch_get_item(
                RequestItems={
                    self._table: {"Keys": [typed(k) for k in g.usage_keys(now, self._window)], "ConsistentRead": True}
                }
            )
            in_flight = 0
            for shard in range(g.OPEN_SHARDS):
                answer = await self._dynamodb.query(
                    TableName=self._table,
                    IndexName="open_leases",
                    KeyConditionExpression="open_shard = :s AND open_until >= :now",
                    ExpressionAttributeValues=typed({":s": f"s{shard}", ":now": decimal(now)}),
                    Select="COUNT",
                )
                in_flight += answer["Count"]
        except ClientError as exc:
            raise UpstreamError(f"DynamoDB read of the governor failed: {exc.response['Error']['Code']}") from exc
        limits = g.Limits(configured["max_parallelism"], configured["target_tpm"], configured["throttle_threshold"])
        budget = g.Budget(limits, g.BudgetState.of(from_item(item) if item else None), self._window)
        return {
            **configured,
            "effective": {
                "tokens_per_window": int(budget.tokens_per_window(now)),
                "window_seconds": self._window,
                "factor": round(budget.factor(now), 3),
                "upstream_limit_tokens": budget.state.upstream_tpm,
                "burst_tokens": int(budget.capacity(0)),
            },
            "usage": {
                "tokens_last_window": g.usage_tokens(usage["Responses"].get(self._table, [])),
                "calls_in_flight": in_flight,
            },
        }

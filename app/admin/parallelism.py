"""Parallelism settings in SSM Parameter Store (the source of truth), their copy on the
governor's budget item that the validators read (lambdas/common/live_config.py), and the
governor's state beside them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from app.aws.clients import AWSClients
from app.aws.functions import Functions
from app.errors import UpstreamError
from app.settings import Settings
from core import governor as g
from core.dynamo import decimal, from_item, typed

PARAMETERS = {name.replace("-", "_"): name for name in g.PARAMETERS}  # field → SSM name
_TYPES: dict[str, Callable[[str], Any]] = {
    "max_parallelism": int,
    "target_tpm": int,
    "target_rpm": int,
    "throttle_threshold": float,
    "fair_share": lambda value: value.strip().lower() != "off",  # as the Lambdas read it (core/governor.Limits)
}
# A deployment made before the parameter existed: its default (fair share on, requests not governed).
OPTIONAL: dict[str, str | None] = {"fair_share": "on", "target_rpm": None}


def limits_of(configured: dict[str, Any]) -> g.Limits:
    """The typed settings (`ParallelismSettings.read`) as the governor reads them."""
    return g.Limits(
        configured["max_parallelism"],
        configured["target_tpm"],
        configured["throttle_threshold"],
        configured["fair_share"],
        configured["target_rpm"],
    )


class ParallelismSettings:
    def __init__(self, clients: AWSClients, settings: Settings) -> None:
        self._ssm = clients.ssm
        self._prefix = settings.ssm_prefix
        self._functions = Functions(clients.lambda_)
        self._reconciler = settings.reconcile_function

    def _name(self, field: str) -> str:
        return f"{self._prefix}/{PARAMETERS[field]}"

    async def read(self) -> dict[str, Any]:
        try:
            answer = await self._ssm.get_parameters(Names=[self._name(f) for f in PARAMETERS])
        except ClientError as exc:
            raise UpstreamError(f"SSM GetParameters failed: {exc.response['Error']['Code']}") from exc
        by_name: dict[str, str | None] = {p["Name"]: p["Value"] for p in answer["Parameters"]}
        for field, default in OPTIONAL.items():
            by_name.setdefault(self._name(field), default)
        missing = [self._name(f) for f in PARAMETERS if self._name(f) not in by_name]
        if missing:
            raise UpstreamError(f"SSM parameters missing: {', '.join(missing)}")
        return {
            field: None if (value := by_name[self._name(field)]) is None else _TYPES[field](value)
            for field in PARAMETERS
        }

    async def write(self, changes: dict[str, Any]) -> None:
        for field, value in changes.items():
            text = ("on" if value else "off") if isinstance(value, bool) else str(value)
            try:
                await self._ssm.put_parameter(Name=self._name(field), Value=text, Type="String", Overwrite=True)
            except ClientError as exc:
                raise UpstreamError(f"SSM PutParameter failed: {exc.response['Error']['Code']}") from exc

    async def propagate(self) -> list[str]:
        """Copy SSM onto the validators' mirror now (the reconciler's Lambda does it: one writer);
        the parameters copied."""
        try:
            answer = await self._functions.invoke(self._reconciler, {"source": "parameters"})
        except UpstreamError as exc:
            raise UpstreamError(
                f"The change is saved in SSM, but running validations were not told ({exc.detail}): they follow "
                "it after the reconciler's next pass, or PATCH the same values again."
            ) from exc
        return [str(name) for name in answer.get("parameters", [])]


class GovernorView:
    """What the governor is doing (core/governor.py), read from its table."""

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
        stored = from_item(item) if item else None
        limits = limits_of(configured)
        budget = g.Budget(limits, g.BudgetState.of(stored), self._window)
        mirrored = g.Mirror.of(stored)
        requests = budget.requests_per_window(now)
        return {
            **configured,
            "effective": {
                "tokens_per_window": int(budget.tokens_per_window(now)),
                "requests_per_window": int(requests) if requests is not None else None,
                "window_seconds": self._window,
                "factor": round(budget.factor(now), 3),
                "upstream_limit_tokens": budget.state.upstream_tpm,
                "upstream_limit_requests": budget.state.upstream_rpm,
                "burst_tokens": int(budget.capacity(0)),
                "tokens_per_request": budget.cost(0),
                "in_sync": mirrored.complete and mirrored.limits() == limits,
            },
            "usage": {
                "tokens_last_window": g.usage_tokens(usage["Responses"].get(self._table, [])),
                "calls_in_flight": in_flight,
            },
        }

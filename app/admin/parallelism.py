"""Parallelism settings in SSM Parameter Store (the source of truth), their copy on the
governor's budget item that the validators read (lambdas/common/live_config.py), and the
governor's state beside them: one budget per model of the admin's list (core/models.py), the
default model's targets being the deployment-wide `target-tpm` and `target-rpm`."""

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
from core.models import Catalog

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
        """Copy SSM onto the validators' mirror now; the parameters copied."""
        return await self._functions.copy_live_parameters(self._reconciler)


class GovernorView:
    """What the governor is doing (core/governor.py), read from its table: one budget per model."""

    def __init__(self, clients: AWSClients, settings: Settings) -> None:
        self._dynamodb = clients.dynamodb
        self._table = settings.table("governor")
        self._window = settings.governor_window_seconds
        self._configured = settings.openai_model

    async def read(self, configured: dict[str, Any], catalog: Catalog) -> dict[str, Any]:
        """`GET /admin/parallelism`: the settings, the default model's budget (the deployment-wide
        targets are its), the calls in flight across every model."""
        now = time.time()
        limits = limits_of(configured)
        default = catalog.default.name
        try:
            budget, used = await self._budget(g.Scope.of(default, self._configured), limits, now)
            in_flight = await self._in_flight(now)
            mirrored = await self._mirror()
        except ClientError as exc:
            raise UpstreamError(f"DynamoDB read of the governor failed: {exc.response['Error']['Code']}") from exc
        return {
            **configured,
            "model": default,
            "effective": {
                **_effective(budget, now),
                "window_seconds": self._window,
                "burst_tokens": int(budget.capacity(0)),
                "tokens_per_request": budget.cost(0),
                "in_sync": self.in_sync(mirrored, limits, catalog),
            },
            "usage": {"tokens_last_window": used, "calls_in_flight": in_flight},
        }

    async def models(self, catalog: Catalog, shared: g.Limits) -> dict[str, dict[str, Any]]:
        """Each model's budget now (its targets, the shared settings): name → effective numbers
        and the tokens charged in the last window."""
        now, found = time.time(), {}
        try:
            for entry in catalog.entries:
                limits = shared.of_model(entry.target_tpm, entry.target_rpm)
                budget, used = await self._budget(g.Scope.of(entry.name, self._configured), limits, now)
                found[entry.name] = {**_effective(budget, now), "tokens_last_window": used}
        except ClientError as exc:
            raise UpstreamError(f"DynamoDB read of the governor failed: {exc.response['Error']['Code']}") from exc
        return found

    async def calls_in_flight(self) -> int:
        try:
            return await self._in_flight(time.time())
        except ClientError as exc:
            raise UpstreamError(f"DynamoDB read of the governor failed: {exc.response['Error']['Code']}") from exc

    async def mirror(self) -> g.Mirror:
        try:
            return await self._mirror()
        except ClientError as exc:
            raise UpstreamError(f"DynamoDB read of the governor failed: {exc.response['Error']['Code']}") from exc

    def in_sync(self, mirrored: g.Mirror, limits: g.Limits, catalog: Catalog) -> bool:
        """The validators' copy (the mirror) holds what SSM holds: the settings and the list of models."""
        if not mirrored.complete or mirrored.limits() != limits:
            return False
        try:
            copied = Catalog.parse(mirrored.models, self._configured, limits.target_tpm, limits.target_rpm)
        except ValueError:
            return False
        return copied == catalog

    async def _budget(self, scope: g.Scope, limits: g.Limits, now: float) -> tuple[g.Budget, int]:
        """A model's budget (its stored state at `limits`) and the tokens charged in its last window."""
        item = (
            await self._dynamodb.get_item(TableName=self._table, Key=typed(scope.budget_key), ConsistentRead=True)
        ).get("Item")
        keys = [typed(k) for k in g.usage_keys(now, self._window, scope)]
        usage = await self._dynamodb.batch_get_item(RequestItems={self._table: {"Keys": keys, "ConsistentRead": True}})
        budget = g.Budget(limits, g.BudgetState.of(from_item(item) if item else None), self._window)
        return budget, g.usage_tokens(usage["Responses"].get(self._table, []))

    async def _in_flight(self, now: float) -> int:
        """Call slots held now, across every validation and model (the open_leases index)."""
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
        return in_flight

    async def _mirror(self) -> g.Mirror:
        budget, models = g.mirrored_items((await self._dynamodb.query(**g.mirror_query(self._table)))["Items"])
        return g.Mirror.of(from_item(budget) if budget else None, from_item(models) if models else None)


def _effective(budget: g.Budget, now: float) -> dict[str, Any]:
    """A budget's numbers now, as the admin views show them."""
    requests = budget.requests_per_window(now)
    return {
        "tokens_per_window": int(budget.tokens_per_window(now)),
        "requests_per_window": int(requests) if requests is not None else None,
        "factor": round(budget.factor(now), 3),
        "upstream_limit_tokens": budget.state.upstream_tpm,
        "upstream_limit_requests": budget.state.upstream_rpm,
    }

"""The price table in use: core/pricing's defaults, the deployment's `PRICE_OVERRIDES`, and an
admin's overrides in SSM (`<prefix>/prices`, JSON), read like live configuration: once per
`CONFIG_CACHE_SECONDS` per process, never per request.
"""

from __future__ import annotations

import json
import time
from typing import Any

from botocore.exceptions import ClientError

from app.aws.clients import AWSClients
from app.errors import UpstreamError
from app.settings import Settings
from core import pricing
from core.pricing import PriceTable

PARAMETER = "prices"
_cache: dict[str, tuple[float, dict[str, Any]]] = {}  # parameter name → (read at, overrides)


class PriceBook:
    def __init__(self, clients: AWSClients, settings: Settings) -> None:
        self._ssm = clients.ssm
        self._name = f"{settings.ssm_prefix}/{PARAMETER}"
        self._settings = settings

    async def overrides(self, *, fresh: bool = False) -> dict[str, Any]:
        """The admin's overrides (`{}` when none were made)."""
        held = _cache.get(self._name)
        if held is not None and not fresh and time.monotonic() - held[0] < self._settings.config_cache_seconds:
            return held[1]
        try:
            value = (await self._ssm.get_parameter(Name=self._name))["Parameter"]["Value"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ParameterNotFound":
                raise UpstreamError(f"SSM GetParameter failed: {exc.response['Error']['Code']}") from exc
            value = "{}"  # a deployment made before prices existed: no overrides
        try:
            overrides = json.loads(value)
            pricing.table_of({k: v for k, v in overrides.items() if v})  # checked as PATCH checks it
        except (ValueError, AttributeError) as exc:
            raise UpstreamError(f"The SSM parameter {self._name} is not a price table: {exc}") from exc
        _cache[self._name] = (time.monotonic(), overrides)
        return overrides

    async def table(self) -> PriceTable:
        """The table in use: the defaults, then `PRICE_OVERRIDES`, then the admin's overrides."""
        table = pricing.merged(self._settings.price_overrides)
        for model, tiers in (await self.overrides()).items():
            if tiers:
                table[model] = pricing.table_of({model: tiers})[model]
            else:
                table.pop(model, None)
        return table

    async def write(self, overrides: dict[str, Any]) -> None:
        await self._ssm.put_parameter(
            Name=self._name, Value=json.dumps(overrides, sort_keys=True), Type="String", Overwrite=True
        )
        _cache.pop(self._name, None)

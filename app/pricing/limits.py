"""The governor's live target as estimates read it: SSM `<prefix>/target-tpm`, cached per process
like the other live parameters (CONFIG_CACHE_SECONDS)."""

from __future__ import annotations

import time

from botocore.exceptions import ClientError

from app.aws.clients import AWSClients
from app.settings import Settings

_cache: dict[str, tuple[float, int | None]] = {}


class LiveLimits:
    def __init__(self, clients: AWSClients, settings: Settings) -> None:
        self._ssm = clients.ssm
        self._name = f"{settings.ssm_prefix}/target-tpm"
        self._seconds = settings.config_cache_seconds

    async def target_tpm(self) -> int | None:
        """The deployment's tokens-per-minute target; None when it cannot be read (no time estimate)."""
        held = _cache.get(self._name)
        if held is not None and time.monotonic() - held[0] < self._seconds:
            return held[1]
        try:
            value: int | None = int((await self._ssm.get_parameter(Name=self._name))["Parameter"]["Value"])
        except (ClientError, ValueError):
            value = None
        _cache[self._name] = (time.monotonic(), value)
        return value

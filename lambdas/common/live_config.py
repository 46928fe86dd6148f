"""The live settings, read from the governor's budget item, cached for a few seconds per process.

SSM Parameter Store holds them (`<prefix>/max-parallelism`, `target-tpm`, `target-rpm`,
`throttle-threshold`, `fair-share`: core/governor.PARAMETERS) and stays their source of
truth. But SSM serves about 40 reads a second to a whole account, so a fleet of warm Lambdas
each asking every few seconds would throttle it. The values are mirrored on the governor's
budget item instead (core/governor.Mirror, each with the SSM version it was copied from), and
a warm Lambda reads that item (one consistent GetItem) at most once per CONFIG_CACHE_SECONDS.

`sync` copies SSM onto the mirror with one GetParameters: the admin PATCH has it run at once
(through the reconciler's Lambda, `{"source": "parameters"}`), every reconciler pass runs it
(a direct edit in SSM reaches the validators within the reconciler's interval), and a process
that finds no mirror runs it before its first read (a new deployment). SSM reads per second do
not grow with the number of Lambdas.

Expired values are read again by one thread while the others keep the last ones (an
invocation runs up to k calls at once, core/headroom.py). When the read fails, the last values
read are kept (a stale value is better than a failed part); with none read yet, the error goes
up and Step Functions retries.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from core import governor as g
from core.dynamo import from_item, typed
from lambdas.common.config import LambdaConfig
from lambdas.common.errors import StoreUnavailable, is_condition_failure

log = logging.getLogger(__name__)

_SYNC_ATTEMPTS = 5  # a lost race means someone copied newer versions: each retry has less to copy


@lru_cache(maxsize=8)
def _ssm(endpoint_url: str | None, region: str) -> Any:
    kwargs: dict[str, Any] = {"region_name": region, "config": Config(retries={"mode": "standard"})}
    if endpoint_url:
        kwargs.update(endpoint_url=endpoint_url, aws_access_key_id="local", aws_secret_access_key="local")
    return boto3.client("ssm", **kwargs)


def ssm_for(config: LambdaConfig) -> Any:
    """The process's SSM client (one per endpoint and region)."""
    return _ssm(config.aws_endpoint_url, config.aws_region)


def read_parameters(ssm: Any, prefix: str) -> dict[str, tuple[str, int]]:
    """The live parameters in SSM (one GetParameters): name → (value, version)."""
    answer = ssm.get_parameters(Names=[f"{prefix}/{name}" for name in g.PARAMETERS])
    return {p["Name"].rsplit("/", 1)[-1]: (p["Value"], int(p["Version"])) for p in answer["Parameters"]}


def _read_item(dynamodb: Any, table: str) -> dict[str, Any] | None:
    """The budget item, typed (one consistent GetItem)."""
    item: dict[str, Any] | None = dynamodb.get_item(TableName=table, Key=typed(g.BUDGET_KEY), ConsistentRead=True).get(
        "Item"
    )
    return item


def sync(dynamodb: Any, table: str, ssm: Any, prefix: str) -> list[str]:
    """Copy SSM's values onto the budget item's mirror where its copy is older; the names copied."""
    current = read_parameters(ssm, prefix)
    item = _read_item(dynamodb, table)
    for _ in range(_SYNC_ATTEMPTS):
        behind = g.Mirror.of(from_item(item) if item else None).behind(current)
        if not behind:
            return []
        try:
            dynamodb.update_item(**g.mirror(table, behind))
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise
            # A newer copy was written meanwhile: compare with it (returned with the refusal, or read).
            item = exc.response.get("Item") or _read_item(dynamodb, table)
            continue
        return sorted(behind)  # no log line: the PATCH is audited, the reconciler reports what it copied
    raise StoreUnavailable(f"the live parameters' mirror kept changing during {_SYNC_ATTEMPTS} copies")


class LiveConfig:
    """One process's view of the live settings (`limits()`), for one deployment."""

    def __init__(
        self,
        dynamodb: Any,
        ssm: Any,
        table: str,
        prefix: str,
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dynamodb, self._ssm, self._table, self._prefix = dynamodb, ssm, table, prefix
        self._cache_seconds, self._clock = cache_seconds, clock
        self._lock = threading.Lock()
        self._hit: tuple[float, g.Limits] | None = None
        self._reading = False  # one read per process at a time

    def limits(self) -> g.Limits:
        with self._lock:
            hit = self._hit
            if hit and (self._clock() - hit[0] < self._cache_seconds or self._reading):
                return hit[1]  # fresh, or another thread of the process is reading: the last values meanwhile
            self._reading = True
        try:
            fresh = self._read()
        except Exception:
            if hit:
                log.warning("reading the live settings failed; keeping the last ones", exc_info=True)
                return hit[1]
            raise
        finally:
            with self._lock:
                self._reading = False
        with self._lock:
            self._hit = (self._clock(), fresh)
        return fresh

    def _read(self) -> g.Limits:
        if not self._table:  # a deployment without the governor's table: SSM itself
            return g.Limits.parse({n: v for n, (v, _) in read_parameters(self._ssm, self._prefix).items()})
        item = _read_item(self._dynamodb, self._table)
        mirrored = g.Mirror.of(from_item(item) if item else None)
        if not mirrored.complete:  # nothing copied yet (a new deployment): copy, then read the copy
            sync(self._dynamodb, self._table, self._ssm, self._prefix)
            item = _read_item(self._dynamodb, self._table)
            mirrored = g.Mirror.of(from_item(item) if item else None)
        return mirrored.limits()


_views: dict[LambdaConfig, LiveConfig] = {}
_views_lock = threading.Lock()


def view_for(config: LambdaConfig) -> LiveConfig:
    """The process's LiveConfig of the deployment `config` names: warm invocations share its cache."""
    with _views_lock:
        found = _views.get(config)
        if found is None:
            from lambdas.common.stores import store_for

            found = _views[config] = LiveConfig(
                store_for(config).client,
                ssm_for(config),
                config.governor_table,
                config.ssm_prefix,
                config.config_cache_seconds,
            )
        return found


def limits(config: LambdaConfig) -> g.Limits:
    """The live settings now (cached CONFIG_CACHE_SECONDS)."""
    return view_for(config).limits()

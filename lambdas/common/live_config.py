"""The live settings, read from the governor's budget item, cached for a few seconds per process.

SSM Parameter Store holds them (`<prefix>/max-parallelism`, `target-tpm`, `target-rpm`,
`throttle-threshold`, `fair-share`: core/governor.PARAMETERS, and the list of models,
`models`: core/models.py) and stays their source of truth. But SSM serves about 40 reads a
second to a whole account, so a fleet of warm Lambdas each asking every few seconds would
throttle it. The values are mirrored in the governor's budget partition instead
(core/governor.Mirror, each with the SSM version it was copied from: the budget item, and the
models item beside it), and a warm Lambda reads them (one consistent Query) at most once per
CONFIG_CACHE_SECONDS. `limits(model)` is one model's: its targets from the list (the default
model's are the deployment-wide `target-tpm` and `target-rpm`), the other settings shared.

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
from core.dynamo import from_item
from core.models import Catalog, UnknownModel
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
    answer = ssm.get_parameters(Names=[f"{prefix}/{name}" for name in g.MIRRORED])
    return {p["Name"].rsplit("/", 1)[-1]: (p["Value"], int(p["Version"])) for p in answer["Parameters"]}


def read_mirror(dynamodb: Any, table: str) -> g.Mirror:
    """The mirror as stored (one consistent Query of the budget partition)."""
    budget, models = g.mirrored_items(dynamodb.query(**g.mirror_query(table))["Items"])
    return g.Mirror.of(from_item(budget) if budget else None, from_item(models) if models else None)


def sync(dynamodb: Any, table: str, ssm: Any, prefix: str) -> list[str]:
    """Copy SSM's values onto the mirror where its copy is older; the names copied."""
    current = read_parameters(ssm, prefix)
    mirrored = read_mirror(dynamodb, table)
    for _ in range(_SYNC_ATTEMPTS):
        behind = mirrored.behind(current)
        if not behind:
            return []
        try:
            for request in g.mirror(table, behind):
                dynamodb.update_item(**request)
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise
            # A newer copy was written meanwhile: compare with it.
            mirrored = read_mirror(dynamodb, table)
            continue
        return sorted(behind)  # no log line: the PATCH is audited, the reconciler reports what it copied
    raise StoreUnavailable(f"the live parameters' mirror kept changing during {_SYNC_ATTEMPTS} copies")


class Live:
    """The live settings at one moment: the shared ones, and the list of models."""

    def __init__(self, shared: g.Limits, catalog: Catalog) -> None:
        self.shared, self.catalog = shared, catalog

    @classmethod
    def of(cls, values: dict[str, str], configured: str) -> Live:
        shared = g.Limits.parse(values)
        return cls(shared, Catalog.parse(values.get(g.MODELS), configured, shared.target_tpm, shared.target_rpm))

    def limits(self, model: str | None = None) -> g.Limits:
        """One model's limits (None: the default model's, the deployment-wide targets); UnknownModel
        when the model is not in the list."""
        if model is None:
            return self.shared
        entry = self.catalog.resolve(model)
        return self.shared.of_model(entry.target_tpm, entry.target_rpm)


class LiveConfig:
    """One process's view of the live settings (`limits(model)`), for one deployment whose
    configured model (OPENAI_MODEL) is `configured`: the list of models when none is stored."""

    def __init__(
        self,
        dynamodb: Any,
        ssm: Any,
        table: str,
        prefix: str,
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        configured: str = "",
    ) -> None:
        self._dynamodb, self._ssm, self._table, self._prefix = dynamodb, ssm, table, prefix
        self._cache_seconds, self._clock, self._configured = cache_seconds, clock, configured
        self._lock = threading.Lock()
        self._hit: tuple[float, Live] | None = None
        self._reading = False  # one read per process at a time

    def limits(self, model: str | None = None) -> g.Limits:
        """The settings of `model`'s budget (None: the default model's); UnknownModel when it is not listed."""
        return self.live().limits(model)

    def catalog(self) -> Catalog:
        return self.live().catalog

    def live(self) -> Live:
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

    def _read(self) -> Live:
        if not self._table:  # a deployment without the governor's table: SSM itself
            return Live.of({n: v for n, (v, _) in read_parameters(self._ssm, self._prefix).items()}, self._configured)
        mirrored = read_mirror(self._dynamodb, self._table)
        if not mirrored.complete:  # nothing copied yet (a new deployment): copy, then read the copy
            sync(self._dynamodb, self._table, self._ssm, self._prefix)
            mirrored = read_mirror(self._dynamodb, self._table)
        return Live.of(dict(mirrored.values), self._configured)


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
                configured=config.openai_model,
            )
        return found


def limits(config: LambdaConfig, model: str | None = None) -> g.Limits:
    """The live settings now (cached CONFIG_CACHE_SECONDS): `model`'s budget's (None: the default
    model's); UnknownModel when the model is not in the list."""
    return view_for(config).limits(model)


def batch_queue_limit(config: LambdaConfig, model: str) -> int:
    """`model`'s Batch API queue limit: its entry's `batch_queue_tokens`, else BATCH_QUEUE_LIMIT_TOKENS
    (also for a model no longer listed)."""
    try:
        listed = view_for(config).catalog().resolve(model).batch_queue_tokens
    except UnknownModel:
        listed = None
    return listed if listed is not None else config.batch_queue_limit_tokens


def budget_limits(config: LambdaConfig, model: str) -> g.Limits:
    """`model`'s limits, or, for a model no longer in the list, the default model's: what a budget
    is priced at when its tokens are given back (a reclaimed lease, the controller's plan). Its
    validators refuse to call it (lambdas/common/model.askers_for)."""
    try:
        return limits(config, model)
    except UnknownModel:
        return limits(config)

"""The live settings from SSM Parameter Store, cached for a few seconds per process.

A warm Lambda asks SSM at most once per CONFIG_CACHE_SECONDS, not once per part, and
values that expired are read again by one thread while the others keep them meanwhile (an
invocation runs up to k calls at once, core/headroom.py). When SSM fails, the last values
read are kept (a stale value is better than a failed part); with none read yet, the error
goes up and Step Functions retries.
"""

from __future__ import annotations

import threading
import time
from functools import lru_cache
from typing import Any

import boto3
from botocore.config import Config

from core.governor import Limits
from lambdas.common.config import LambdaConfig

NAMES = ("max-parallelism", "target-tpm", "throttle-threshold", "fair-share")
_lock = threading.Lock()
_cache: dict[tuple[str | None, str], tuple[float, Limits]] = {}
_reading: set[tuple[str | None, str]] = set()  # keys being read: one read per process at a time


@lru_cache(maxsize=8)
def _ssm(endpoint_url: str | None, region: str) -> Any:
    kwargs: dict[str, Any] = {"region_name": region, "config": Config(retries={"mode": "standard"})}
    if endpoint_url:
        kwargs.update(endpoint_url=endpoint_url, aws_access_key_id="local", aws_secret_access_key="local")
    return boto3.client("ssm", **kwargs)


def limits(config: LambdaConfig, clock: Any = time.monotonic) -> Limits:
    key = (config.aws_endpoint_url, config.ssm_prefix)
    with _lock:
        hit = _cache.get(key)
        if hit and clock() - hit[0] < config.config_cache_seconds:
            return hit[1]
        if hit and key in _reading:  # another thread of the process is asking SSM: the last values meanwhile
            return hit[1]
        _reading.add(key)
    try:
        answer = _ssm(config.aws_endpoint_url, config.aws_region).get_parameters(
            Names=[f"{config.ssm_prefix}/{n}" for n in NAMES]
        )
        values = {p["Name"].rsplit("/", 1)[-1]: p["Value"] for p in answer["Parameters"]}
        fresh = Limits.parse(values)
    except Exception:
        if hit:
            return hit[1]
        raise
    finally:
        with _lock:
            _reading.discard(key)
    with _lock:
        _cache[key] = (clock(), fresh)
    return fresh

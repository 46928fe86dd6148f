"""Benchmarks that print ratios against a baseline from the same run (`make bench`)."""

from __future__ import annotations

import uuid
from typing import Any

import boto3

from app.settings import Settings


def local_settings(**values: Any) -> Settings:
    """Settings from these values (then the environment, then the defaults), never from a .env file;
    /metrics on a free port unless `metrics_port` is given (a `make run` may hold 9464)."""
    return Settings(_env_file=None, **{"metrics_port": 0, **values})  # type: ignore[call-arg]  # pydantic-settings' __init__ takes _env_file; mypy sees only the fields


def stack_settings(endpoint_url: str, simulator_url: str, tag: str, **values: Any) -> Settings:
    """Local-mode settings for a benchmark's own stack: the embedded AWS at `endpoint_url`, the
    simulator at `simulator_url`, resource names and SSM prefix unique to this run (`tag` + hex),
    admin key `bench`, retries timed for benchmarks; `values` override."""
    prefix = f"{tag}{uuid.uuid4().hex[:6]}"
    defaults: dict[str, Any] = {
        "aws_endpoint_url": endpoint_url,
        "name_prefix": prefix,
        "ssm_prefix": f"/{prefix}",
        "admin_api_key": "bench",
        "openai_base_url": simulator_url,
        "openai_model": "simulator",
        "sfn_retry_interval_seconds": 1,
    }
    return local_settings(**{**defaults, **values})


def aws_client(service: str, endpoint_url: str) -> Any:
    """A boto3 client against the benchmark's embedded AWS."""
    return boto3.client(
        service, endpoint_url=endpoint_url, region_name="us-east-1", aws_access_key_id="b", aws_secret_access_key="b"
    )


def set_parameters(settings: Settings, values: dict[str, Any]) -> None:
    """The live SSM parameters (target-tpm, throttle-threshold, max-parallelism) of this stack."""
    ssm = aws_client("ssm", str(settings.aws_endpoint_url))
    for name, value in values.items():
        ssm.put_parameter(Name=f"{settings.ssm_prefix}/{name}", Value=str(value), Type="String", Overwrite=True)

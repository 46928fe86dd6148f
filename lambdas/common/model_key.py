"""The model server's key, read from an SSM SecureString at run time, never from the environment.

Terraform (infra/terraform/secrets.tf) and local provisioning (local/aws/provision.py) store
the key in a SecureString and give the functions only its name, OPENAI_API_KEY_PARAMETER;
only the roles of the functions that call the model may read and decrypt it. Powertools
Parameters fetches it through the configured endpoint (the embedded AWS in local mode) and
keeps it for KEY_CACHE_SECONDS per warm Lambda: a rotated key is in use within that, and at
once after the model refuses the old one (`forget`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import boto3
from aws_lambda_powertools.utilities.parameters import GetParameterError, SSMProvider
from botocore.config import Config

from lambdas.common.config import LambdaConfig
from lambdas.common.errors import StoreUnavailable

# One GetParameter (and one KMS decrypt) per warm Lambda every five minutes, not per call.
KEY_CACHE_SECONDS = 300
REDACTED = "[redacted]"


@lru_cache(maxsize=8)
def _provider(endpoint_url: str | None, region: str) -> SSMProvider:
    kwargs: dict[str, Any] = {"region_name": region, "config": Config(retries={"mode": "standard"})}
    if endpoint_url:
        kwargs.update(endpoint_url=endpoint_url, aws_access_key_id="local", aws_secret_access_key="local")
    return SSMProvider(boto3_client=boto3.client("ssm", **kwargs))


def api_key(config: LambdaConfig) -> str:
    """The key, or "" when none is configured (a model server without authentication)."""
    if not config.openai_api_key_parameter:
        return ""
    try:
        value = _provider(config.aws_endpoint_url, config.aws_region).get(
            config.openai_api_key_parameter, decrypt=True, max_age=KEY_CACHE_SECONDS
        )
    except GetParameterError as exc:  # throttled, unreachable, missing or not allowed: retried, then the part fails
        raise StoreUnavailable(
            f"the model key parameter {config.openai_api_key_parameter} is unreadable: {exc}"
        ) from exc
    if not isinstance(value, str):
        raise StoreUnavailable(f"the model key parameter {config.openai_api_key_parameter} is not a string")
    return value


def forget() -> None:
    """Drop the cached key: the next call reads the parameter again (the model refused the key)."""
    _provider.cache_clear()  # the providers hold the cache: new ones start empty


def redact(text: str, key: str) -> str:
    """`text` without the key (an error message that echoes the request's credentials)."""
    return text.replace(key, REDACTED) if key else text

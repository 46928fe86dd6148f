"""aioboto3 clients, built once per process in the app's lifespan.

The only place (with the adapters beside it) that imports aioboto3. With an endpoint
URL every service is sent there: the embedded AWS, LocalStack, or nothing (real AWS).
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aioboto3
from botocore.config import Config

# One pool big enough for SSE readers, pollers and request handlers sharing a client.
# No client-side parameter validation: AWS validates every request anyway, and botocore's
# walk of a 25-item BatchWriteItem ran on the event loop for most of a large submission's time.
_CONFIG = Config(max_pool_connections=64, retries={"mode": "standard", "max_attempts": 3}, parameter_validation=False)
# botocore presigns S3 URLs with the legacy SigV2 unless told otherwise; SigV4 is what signs
# `content-length` and `x-amz-checksum-sha256` into the URL (S3 then refuses other bytes), and
# what SSE-KMS buckets require.
_PRESIGNER_CONFIG = Config(signature_version="s3v4")


@dataclass
class AWSClients:
    dynamodb: Any
    s3: Any
    sfn: Any
    ssm: Any
    lambda_: Any  # invokes the reconciler (POST /admin/reconcile)
    presigner: Any  # S3, signing with SigV4: the uploads' presigned URLs (it sends no request)


async def open_clients(stack: AsyncExitStack, region: str, endpoint_url: str | None) -> AWSClients:
    # One session for all of them: a session of its own costs a client ~10 ms more to build
    # (its own event handlers, endpoint resolver, credential chain).
    session = aioboto3.Session()
    kwargs: dict[str, Any] = {"region_name": region, "config": _CONFIG}
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
        # The embedded AWS accepts any credentials; don't require a profile on a laptop.
        kwargs.setdefault("aws_access_key_id", "local")
        kwargs.setdefault("aws_secret_access_key", "local")

    async def client(service: str, **changes: Any) -> Any:
        return await stack.enter_async_context(session.client(service, **{**kwargs, **changes}))

    return AWSClients(
        dynamodb=await client("dynamodb"),
        s3=await client("s3"),
        sfn=await client("stepfunctions"),
        ssm=await client("ssm"),
        lambda_=await client("lambda"),
        presigner=await client("s3", config=_PRESIGNER_CONFIG),
    )

"""What local mode adds around the API: the embedded AWS (unless an endpoint is given),
the OpenAI-compatible simulator (unless a key or base URL is given), a generated admin
key (unless one is set), and provisioning from the Terraform definitions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import boto3
from pydantic import SecretStr

from app.settings import Mode, Settings
from local.aws.provision import Provisioner
from local.aws.server import EmbeddedAWS
from local.simulator.app import MODEL_NAME
from local.simulator.server import SimulatorServer

log = logging.getLogger(__name__)


@asynccontextmanager
async def local_runtime(settings: Settings) -> AsyncIterator[Settings]:
    """Yield the settings the API should use; in aws mode they are returned unchanged."""
    if settings.mode is not Mode.LOCAL:
        yield settings
        return
    if settings.admin_api_key is None:
        key = secrets.token_urlsafe(32)
        settings = settings.model_copy(update={"admin_api_key": SecretStr(key)})
        # Printed once, on purpose: local mode has no other way to hand out the first key.
        print(f"Local mode: no ADMIN_API_KEY set; generated admin key: {key}", flush=True)
    simulator: SimulatorServer | None = None
    if settings.openai_api_key is None and settings.openai_base_url is None:
        simulator = await asyncio.to_thread(SimulatorServer().start)
        settings = settings.model_copy(update={"openai_base_url": simulator.base_url, "openai_model": MODEL_NAME})
        log.info("no OPENAI_API_KEY: validating with the simulator at %s", simulator.base_url)
    embedded: EmbeddedAWS | None = None
    endpoint = settings.aws_endpoint_url
    if endpoint is None:
        embedded = await asyncio.to_thread(
            EmbeddedAWS(port=settings.embedded_aws_port, region=settings.aws_region).start
        )
        endpoint = embedded.endpoint_url
    timer: asyncio.Task[None] | None = None
    try:
        provisioned = await asyncio.to_thread(Provisioner(settings, endpoint).run)
        if settings.reconcile_interval_seconds > 0:
            timer = asyncio.create_task(_reconcile_every(settings, endpoint))
        yield settings.model_copy(
            update={
                "aws_endpoint_url": endpoint,
                "state_machine_arn": provisioned.state_machine_arn,
                "notify_state_machine_arn": provisioned.notify_state_machine_arn,
            }
        )
    finally:
        if timer is not None:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        if simulator is not None:
            await asyncio.to_thread(simulator.stop)


async def _reconcile_every(settings: Settings, endpoint: str) -> None:
    """What EventBridge Scheduler does on AWS (infra/terraform/reconcile.tf): invoke the
    reconciler's Lambda every `reconcile_interval_seconds`, through the embedded AWS."""
    client = boto3.client(
        "lambda",
        endpoint_url=endpoint,
        region_name=settings.aws_region,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    while True:
        await asyncio.sleep(settings.reconcile_interval_seconds)
        try:
            answer = await asyncio.to_thread(
                client.invoke, FunctionName=settings.reconcile_function, Payload=b'{"source": "timer"}'
            )
            report = json.loads(answer["Payload"].read() or b"null")
            if answer.get("FunctionError") or (isinstance(report, dict) and report.get("ended")):
                log.info("reconciler: %s", report)
        except Exception:  # noqa: BLE001 - a failed pass is retried at the next tick
            log.exception("reconciler pass failed")

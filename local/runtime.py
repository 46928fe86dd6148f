"""What local mode adds around the API: the embedded AWS (unless an endpoint is given),
the OpenAI-compatible simulator (unless a key or base URL is given), a generated admin
key (unless one is set), and provisioning from the Terraform definitions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import boto3
from pydantic import SecretStr

from app.settings import PROJECT_ROOT, Mode, Settings
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
    generated = settings.admin_api_key is None
    if generated:
        settings = settings.model_copy(update={"admin_api_key": SecretStr(secrets.token_urlsafe(32))})
    simulator: SimulatorServer | None = None
    parameters: dict[str, str] = {}
    if settings.openai_api_key is None and settings.openai_base_url is None:
        simulator = await asyncio.to_thread(SimulatorServer().start)
        settings = settings.model_copy(update={"openai_base_url": simulator.base_url, "openai_model": MODEL_NAME})
        log.info("no OPENAI_API_KEY: validating with the simulator at %s", simulator.base_url)
        # The governor aims at the simulator's own limit, not the production default (50,000 TPM,
        # which made a first run of 20 small files wait on the budget): a parameter that already
        # exists (a separate embedded AWS, an admin's PATCH) is kept.
        parameters["target-tpm"] = str(simulator.simulator.config.tpm)
        parameters["target-rpm"] = str(simulator.simulator.config.rpm)
    embedded: EmbeddedAWS | None = None
    endpoint = settings.aws_endpoint_url
    if endpoint is None:
        embedded = await asyncio.to_thread(
            EmbeddedAWS(port=settings.embedded_aws_port, region=settings.aws_region).start
        )
        endpoint = embedded.endpoint_url
    timer: asyncio.Task[None] | None = None
    try:
        provisioned = await asyncio.to_thread(Provisioner(settings, endpoint, parameters).run)
        # Printed once, on purpose: local mode has no other way to hand out the first key.
        print(first_run_banner(settings, generated), flush=True)
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


def first_run_banner(settings: Settings, key_generated: bool) -> str:
    """Where the API is, the admin key (when generated here; never echoes one that was set) and a CLI example."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    url = f"http://{host}:{settings.port}"
    key = settings.admin_api_key.get_secret_value() if key_generated and settings.admin_api_key else None
    cli = Path(sys.prefix) / "bin" / "validate"
    command = _shown_path(cli) if cli.exists() else "python -m cli"
    examples = PROJECT_ROOT / "examples"
    rules = _shown_path(examples / "rules.yaml")
    return "\n".join(
        [
            f"Local mode is ready: API {url} (OpenAPI UI {url}/docs)",
            f"  admin key: {key}" if key else "  admin key: the ADMIN_API_KEY you set",
            f"  web page: {url}/ (sign in with the key)",
            "  try the CLI:",
            f"    export VALIDATE_URL={url} VALIDATE_API_KEY={key or '$ADMIN_API_KEY'}",
            f"    {command} submit {_shown_path(examples / 'data')} --rules {rules} --wait",
        ]
    )


def _shown_path(path: Path) -> str:
    """Relative to the working directory when under it (as `make run` is), else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)

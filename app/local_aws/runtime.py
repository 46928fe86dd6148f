"""What local mode adds around the API: the embedded AWS (unless an endpoint is given)
and provisioning from the Terraform definitions."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from app.local_aws.provision import Provisioner
from app.local_aws.server import EmbeddedAWS
from app.settings import Mode, Settings

log = logging.getLogger(__name__)


@asynccontextmanager
async def local_runtime(settings: Settings) -> AsyncIterator[Settings]:
    """Yield the settings the API should use; in aws mode they are returned unchanged."""
    if settings.mode is not Mode.LOCAL:
        yield settings
        return
    embedded: EmbeddedAWS | None = None
    endpoint = settings.aws_endpoint_url
    if endpoint is None:
        embedded = await asyncio.to_thread(EmbeddedAWS(port=settings.embedded_aws_port, region=settings.aws_region).start)
        endpoint = embedded.endpoint_url
    try:
        provisioned = await asyncio.to_thread(Provisioner(settings, endpoint).run)
        yield settings.model_copy(
            update={"aws_endpoint_url": endpoint, "state_machine_arn": provisioned.state_machine_arn}
        )
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)

"""The governor's tests: a deployment whose governor targets the simulator's limits, both of them."""

from __future__ import annotations

import pytest

from app.settings import Settings
from local.aws.server import EmbeddedAWS
from local.simulator.server import SimulatorServer
from tests.support.stack import Aws, local_settings


@pytest.fixture
def settings(embedded_aws: EmbeddedAWS, simulator: SimulatorServer) -> Settings:
    """As tests/conftest.py's, with `target-rpm` at the simulator's request limit too (its
    `target-tpm` is the simulator's token limit there): tests about tokens are not bound by the
    default 500 requests a minute."""
    settings = local_settings(embedded_aws.endpoint_url, simulator)
    Aws(embedded_aws.endpoint_url).client("ssm").put_parameter(
        Name=f"{settings.ssm_prefix}/target-rpm",
        Value=str(simulator.simulator.config.rpm),
        Type="String",
        Overwrite=True,
    )
    return settings

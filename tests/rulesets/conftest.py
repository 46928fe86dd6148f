"""The API with its DynamoDB tables only (no functions, no state machine): rule sets live in one
table and need nothing else, so their routes are tested without provisioning a whole deployment."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.main import create_app
from app.settings import Settings
from local.aws.provision import Provisioner
from local.aws.server import EmbeddedAWS
from tests.support.stack import ADMIN, ADMIN_KEY, settings_of


@pytest.fixture(scope="module")
def tables_settings(embedded_aws: EmbeddedAWS) -> Settings:
    """aws-mode settings against the shared embedded AWS, names unique to the module, every table created."""
    prefix = f"r{uuid.uuid4().hex[:8]}"
    settings = settings_of(
        mode="aws",
        aws_endpoint_url=embedded_aws.endpoint_url,
        name_prefix=prefix,
        ssm_prefix=f"/{prefix}",
        admin_api_key=SecretStr(ADMIN_KEY),
        state_machine_arn=f"arn:aws:states:us-east-1:123456789012:stateMachine:{prefix}-validation",  # never started
    )
    Provisioner(settings, embedded_aws.endpoint_url).create_tables()
    return settings


@pytest.fixture(scope="module")
def tables_api(tables_settings: Settings) -> Iterator[Any]:
    """The API (as the bootstrap admin) over those tables; the tests of a module share it, each with its own
    users and rule set names."""
    with TestClient(create_app(tables_settings)) as client:
        client.headers.update(ADMIN)
        yield client

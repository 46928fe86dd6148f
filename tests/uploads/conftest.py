"""One API per module for the upload tests, on the embedded AWS with its S3 patched as presigned
uploads need (local/aws/upload_patches.py); users of their own keep the tests apart."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from local.aws import upload_patches
from local.aws.server import EmbeddedAWS
from local.simulator.app import SimulatorConfig
from local.simulator.server import SimulatorServer
from tests.support.stack import ADMIN, local_settings, make_user

MIB = 1024 * 1024
User = tuple[str, dict[str, str]]


@pytest.fixture(scope="module")
def uploads_api(embedded_aws: EmbeddedAWS) -> Iterator[Any]:
    """The API with multipart uploads from 5 MiB (S3's smallest part), so a multipart test sends ~5 MiB."""
    upload_patches.apply()  # once per process; a no-op where the embedded AWS applies it itself
    with SimulatorServer(SimulatorConfig(latency_seconds=0.01)) as simulator:  # the local runtime wants a model
        settings = local_settings(
            embedded_aws.endpoint_url,
            simulator,
            letter="u",
            upload_multipart_threshold_bytes=5 * MIB,
            upload_part_bytes=5 * MIB,
        )
        with TestClient(create_app(settings)) as client:
            client.headers.update(ADMIN)
            yield client


@pytest.fixture
def alice(uploads_api: Any) -> User:
    return make_user(uploads_api)


@pytest.fixture
def bob(uploads_api: Any) -> User:
    return make_user(uploads_api)

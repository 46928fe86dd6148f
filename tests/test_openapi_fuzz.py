"""Property-based run of schemathesis against /openapi.json: no 5xx, no response off its schema.

schemathesis' own pytest plugin does not run under pytest 9, so the operations are
driven here with hypothesis directly (same checks: `call_and_validate`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks
from schemathesis.core.result import Ok

from app.main import create_app
from app.settings import Settings
from local.serving import ThreadedServer
from tests.support.stack import ADMIN

EXAMPLES_PER_OPERATION = 15
NEGATIVE_EXAMPLES_PER_OPERATION = 6
# What the contract promises: no 5xx; statuses, content types, headers and bodies as documented.
# (Not `positive_data_acceptance`: a schema-valid body can still break a documented rule,
# e.g. a `rules` part that is not JSON, which is rightly a 400.)
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture
def served_api(settings: Settings) -> Iterator[str]:
    app = create_app(settings.model_copy(update={"max_files": 5, "max_file_bytes": 10_000}))
    server = ThreadedServer(app, lifespan="on").start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.mark.slow(14)
def test_api_honours_its_openapi_schema(served_api: str) -> None:
    schema = schemathesis.openapi.from_url(f"{served_api}/openapi.json")
    headers = ADMIN
    failures: dict[str, str] = {}
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # an operation schemathesis cannot read is a broken schema
        operations.append(result.ok())

    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def check(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(base_url=served_api, headers=headers, checks=CHECKS)

        # Negative data (off the schema: wrong types, missing members, bad ids): never a 5xx.
        @given(case=operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
        @hypothesis_settings(
            max_examples=NEGATIVE_EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check_negative(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(base_url=served_api, headers=headers, checks=[checks.not_a_server_error])

        for run, label in ((check, operation.label), (check_negative, f"{operation.label} (negative)")):
            try:
                run()
            except Unsatisfiable:  # nothing to get wrong: no parameters, no body (GET /healthz)
                continue
            except Exception as exc:  # noqa: BLE001 - gather every operation's failure, then report them all
                failures[label] = f"{type(exc).__name__}: {exc}"[:2000]

    assert len(operations) >= 8
    assert failures == {}

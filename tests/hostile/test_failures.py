"""Whatever escapes the app is still problem+json: AWS failures 503/502 without AWS's text, the rest 500
with an error id that the log line carries too."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import Route

from app.failures import LastResort
from tests.hostile.asgi import call

ARN = "arn:aws:iam::123456789012:role/validation-api"


def failing_app(exc: Exception) -> Starlette:
    """An app whose route raises `exc`, with the last resort where `app/guards.py` puts it."""

    async def fail(request: Request) -> None:
        raise exc

    return Starlette(routes=[Route("/fail", fail)], middleware=[Middleware(LastResort)])


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"User: {ARN} is not authorized"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "GetItem",
    )


async def test_an_unexpected_error_is_a_500_problem_whose_error_id_is_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="app.failures"):
        answer = await call(failing_app(RuntimeError(f"secret internals {ARN}")), "GET", "/fail")

    assert answer.status == 500
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["type"].endswith("/internal") and body["status"] == 500
    assert ARN not in answer.body.decode() and "secret internals" not in answer.body.decode()
    logged = [r for r in caplog.records if body["error_id"] in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None


@pytest.mark.parametrize(
    "exc,status,retry_after",
    [
        (client_error("ProvisionedThroughputExceededException", 400), 503, "1"),
        (client_error("ThrottlingException", 400), 503, "1"),
        (client_error("InternalServerError", 500), 503, "1"),
        (EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com"), 503, "1"),
        (client_error("AccessDeniedException", 400), 502, None),
        (client_error("ResourceNotFoundException", 400), 502, None),
    ],
)
async def test_an_aws_failure_is_503_with_retry_after_or_502_and_never_shows_aws_text(
    exc: Exception, status: int, retry_after: str | None
) -> None:
    answer = await call(failing_app(exc), "GET", "/fail")

    assert answer.status == status
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers.get("retry-after") == retry_after
    body: dict[str, Any] = answer.json()
    assert body["error_id"] and body["aws_error"]
    assert "arn:" not in answer.body.decode() and "123456789012" not in answer.body.decode()

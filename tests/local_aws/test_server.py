"""The embedded AWS counts what it serves (local/aws/server.py `traffic()`)."""

from __future__ import annotations

import pytest

from local.aws.server import EmbeddedAWS, operation_of
from tests.support.stack import Aws

SCOPE = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=x"


@pytest.mark.parametrize(
    ("service", "environ", "operation"),
    [
        ("dynamodb", {"HTTP_X_AMZ_TARGET": "DynamoDB_20120810.GetItem"}, "dynamodb.GetItem"),
        ("states", {"HTTP_X_AMZ_TARGET": "AWSStepFunctions.StartExecution"}, "states.StartExecution"),
        ("lambda", {"REQUEST_METHOD": "POST", "PATH_INFO": "/2015-03-31/functions/f/invocations"}, "lambda.Invoke"),
        ("s3", {"REQUEST_METHOD": "PUT", "PATH_INFO": "/bucket/key"}, "s3.PUT"),
    ],
)
def test_a_call_is_named_by_its_service_and_action(service: str, environ: dict[str, str], operation: str) -> None:
    assert operation_of({"HTTP_AUTHORIZATION": SCOPE.format(service=service), **environ}) == operation


def test_traffic_counts_calls_by_operation(embedded_aws: EmbeddedAWS, aws: Aws) -> None:
    before = embedded_aws.traffic().calls["dynamodb.DescribeLimits"]
    for _ in range(3):
        aws.client("dynamodb").describe_limits()

    assert embedded_aws.traffic().calls["dynamodb.DescribeLimits"] - before == 3

"""The embedded Lambda Invoke route answers as Lambda does."""

from __future__ import annotations

import json
import uuid

import pytest
from botocore.exceptions import ClientError

from tests.local_aws.handlers import probe
from tests.support.stack import Aws, wait_for


def test_invoke_returns_the_handlers_json_result(aws: Aws) -> None:
    arn = aws.function("tests.local_aws.handlers.sleepy")
    name = arn.rsplit(":", 1)[1]

    for function in (name, arn, f"{name}:$LATEST"):
        answer = aws.client("lambda").invoke(FunctionName=function, Payload=json.dumps({"probe": "x", "item": 7}))
        assert answer["StatusCode"] == 200
        assert "FunctionError" not in answer
        assert json.loads(answer["Payload"].read()) == {"item": 7, "function": name}


def test_an_exception_is_an_unhandled_function_error_named_by_its_class(aws: Aws) -> None:
    arn = aws.function("tests.local_aws.handlers.always_fails")

    answer = aws.client("lambda").invoke(FunctionName=arn, Payload=json.dumps({"probe": uuid.uuid4().hex}))

    assert answer["FunctionError"] == "Unhandled"
    body = json.loads(answer["Payload"].read())
    assert body["errorType"] == "Fatal"
    assert body["errorMessage"] == "this handler always fails"


def test_unknown_function_is_resource_not_found_not_an_echo(aws: Aws) -> None:
    with pytest.raises(ClientError) as caught:
        aws.client("lambda").invoke(FunctionName="no-such-function", Payload=b'{"echo": true}')
    assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_event_invocation_runs_in_the_background(aws: Aws) -> None:
    arn = aws.function("tests.local_aws.handlers.sleepy")
    name = uuid.uuid4().hex

    answer = aws.client("lambda").invoke(
        FunctionName=arn, InvocationType="Event", Payload=json.dumps({"probe": name, "sleep": 0.2})
    )

    assert answer["StatusCode"] == 202
    wait_for(lambda: probe.calls[name] == 1 and probe.in_flight[name] == 0, what="background invocation")


def test_handler_sees_its_functions_environment(aws: Aws) -> None:
    arn = aws.function("tests.local_aws.handlers.echo_environment", {"TABLE": "mine"})

    answer = aws.client("lambda").invoke(
        FunctionName=arn, Payload=json.dumps({"names": ["TABLE", "AWS_LAMBDA_FUNCTION_NAME"]})
    )

    # and, as Lambda's runtime sets it, its own name
    assert json.loads(answer["Payload"].read()) == {"TABLE": "mine", "AWS_LAMBDA_FUNCTION_NAME": arn.rsplit(":", 1)[1]}


def test_the_route_counts_invocations_per_function(aws: Aws) -> None:
    from local.aws import lambda_router

    arn = aws.function("tests.local_aws.handlers.sleepy")
    name = arn.rsplit(":", 1)[1]
    before = lambda_router.invocations().get(name, 0)

    for _ in range(3):
        aws.client("lambda").invoke(FunctionName=arn, Payload=json.dumps({"probe": "counted", "sleep": 0}))

    assert before == 0
    assert lambda_router.invocations()[name] == 3

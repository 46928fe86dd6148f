"""Conformance of the embedded Step Functions engine: what the service relies on.

These guard the moto pin: each runs a real state machine through boto3/aioboto3
against the embedded server, with Lambda handlers from tests/local_aws/handlers.py.
"""

from __future__ import annotations

import json
import time
import uuid

import aioboto3

from tests.conftest import REGION, wait_for
from tests.local_aws.handlers import probe


def _task(function_arn: str, **extra: object) -> dict:
    return {"Type": "Task", "Resource": function_arn, **extra}


def test_map_concurrency_from_ssm_parameter_is_never_exceeded(aws):
    limit = 3
    parameter = f"/conformance/{uuid.uuid4().hex}/max-parallelism"
    aws.client("ssm").put_parameter(Name=parameter, Value=str(limit), Type="String")
    sleepy = aws.function("tests.local_aws.handlers.sleepy")
    machine = aws.state_machine(
        {
            "StartAt": "ReadLimit",
            "States": {
                "ReadLimit": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::aws-sdk:ssm:getParameter",
                    "Parameters": {"Name": parameter},
                    "ResultSelector": {"limit.$": "States.StringToJson($.Parameter.Value)"},
                    "ResultPath": "$.config",
                    "Next": "Fan",
                },
                "Fan": {
                    "Type": "Map",
                    "ItemsPath": "$.items",
                    "MaxConcurrencyPath": "$.config.limit",
                    "ItemSelector": {"probe.$": "$.probe", "item.$": "$$.Map.Item.Value", "sleep": 0.2},
                    "ItemProcessor": {
                        "ProcessorConfig": {"Mode": "INLINE"},
                        "StartAt": "Work",
                        "States": {"Work": _task(sleepy, End=True)},
                    },
                    "End": True,
                },
            },
        }
    )
    name = uuid.uuid4().hex
    execution = aws.start(machine, {"probe": name, "items": list(range(12))})

    result = aws.wait_until(execution)

    assert result["status"] == "SUCCEEDED"
    assert probe.calls[name] == 12
    assert probe.peak[name] <= limit
    assert probe.peak[name] == limit  # the limit was reached, so it is what held them back
    assert [r["item"] for r in json.loads(result["output"])] == list(range(12))


def test_retry_with_backoff_and_jitter_retries_then_succeeds(aws):
    flaky = aws.function("tests.local_aws.handlers.flaky")
    retry = {
        "ErrorEquals": ["RateLimited"],
        "IntervalSeconds": 1,
        "MaxAttempts": 3,
        "BackoffRate": 2.0,
        "MaxDelaySeconds": 1,
        "JitterStrategy": "FULL",
    }
    machine = aws.state_machine({"StartAt": "Call", "States": {"Call": _task(flaky, Retry=[retry], End=True)}})
    name = uuid.uuid4().hex

    result = aws.wait_until(aws.start(machine, {"probe": name, "fail_times": 2}))

    assert result["status"] == "SUCCEEDED"
    assert probe.calls[name] == 3  # two failures, one success
    assert json.loads(result["output"]) == {"attempts": 3}


def test_catch_takes_over_when_retries_are_exhausted(aws):
    failing = aws.function("tests.local_aws.handlers.always_fails")
    machine = aws.state_machine(
        {
            "StartAt": "Call",
            "States": {
                "Call": _task(
                    failing,
                    Retry=[{"ErrorEquals": ["Fatal"], "IntervalSeconds": 1, "MaxAttempts": 2, "BackoffRate": 1.0}],
                    Catch=[{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Recovered"}],
                    Next="Unreachable",
                ),
                "Unreachable": {"Type": "Fail", "Error": "NotCaught"},
                "Recovered": {"Type": "Pass", "End": True},
            },
        }
    )
    name = uuid.uuid4().hex

    result = aws.wait_until(aws.start(machine, {"probe": name}))

    assert result["status"] == "SUCCEEDED"
    assert probe.calls[name] == 3  # the first attempt and two retries
    error = json.loads(result["output"])["error"]
    assert error["Error"] == "Fatal"  # the exception's class name, as Lambda reports it
    assert "always fails" in error["Cause"]


def test_choice_and_wait_seconds_path_loop_with_dynamodb_update_item(aws):
    table = f"loop-{uuid.uuid4().hex[:8]}"
    aws.client("dynamodb").create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    machine = aws.state_machine(
        {
            "StartAt": "Pause",
            "States": {
                "Pause": {"Type": "Wait", "SecondsPath": "$.wait", "Next": "Count"},
                "Count": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::dynamodb:updateItem",
                    "Parameters": {
                        "TableName": table,
                        "Key": {"id": {"S": "loop"}},
                        "UpdateExpression": "ADD n :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                        "ReturnValues": "UPDATED_NEW",
                    },
                    "ResultSelector": {"n.$": "States.StringToJson($.Attributes.n.N)"},
                    "ResultPath": "$.count",
                    "Next": "Again",
                },
                "Again": {
                    "Type": "Choice",
                    "Choices": [{"Variable": "$.count.n", "NumericLessThan": 3, "Next": "Pause"}],
                    "Default": "Done",
                },
                "Done": {"Type": "Succeed"},
            },
        }
    )

    result = aws.wait_until(aws.start(machine, {"wait": 1}))

    assert result["status"] == "SUCCEEDED"
    assert json.loads(result["output"])["count"] == {"n": 3}
    item = aws.client("dynamodb").get_item(TableName=table, Key={"id": {"S": "loop"}})["Item"]
    assert item["n"] == {"N": "3"}
    history = aws.client("stepfunctions").get_execution_history(executionArn=result["executionArn"], maxResults=1000)
    waits = [e for e in history["events"] if e["type"] == "WaitStateEntered"]
    assert len(waits) == 3


def test_stop_mid_map_aborts_and_no_handler_starts_after_the_stop_settles(aws):
    machine = aws.map_machine(aws.function("tests.local_aws.handlers.sleepy"), max_concurrency=2, sleep=0.3)
    name = uuid.uuid4().hex
    execution = aws.start(machine, {"probe": name, "items": list(range(40))})
    wait_for(lambda: probe.calls[name] >= 3, what="the map to be under way")

    aws.client("stepfunctions").stop_execution(executionArn=execution, error="Cancelled", cause="test")
    result = aws.wait_until(execution, statuses=("ABORTED", "FAILED", "SUCCEEDED"))
    settled_at = time.monotonic()
    wait_for(lambda: probe.in_flight[name] == 0, what="in-flight handlers to return")
    calls_after_settle = probe.calls[name]
    time.sleep(1.5)  # several handler durations: any scheduled iteration would have started

    assert result["status"] == "ABORTED"
    assert probe.calls[name] == calls_after_settle < 40
    assert all(started <= settled_at for started in probe.started_at[name])


async def test_describe_execution_and_history_through_aioboto3(aws, embedded_aws):
    sleepy = aws.function("tests.local_aws.handlers.sleepy")
    machine = aws.state_machine({"StartAt": "Work", "States": {"Work": _task(sleepy, End=True)}})
    execution = aws.start(machine, {"probe": uuid.uuid4().hex, "item": "x"})
    aws.wait_until(execution)

    session = aioboto3.Session()
    async with session.client(
        "stepfunctions",
        endpoint_url=embedded_aws.endpoint_url,
        region_name=REGION,
        aws_access_key_id="t",
        aws_secret_access_key="t",
    ) as sfn:
        described = await sfn.describe_execution(executionArn=execution)
        history = await sfn.get_execution_history(executionArn=execution)

    assert described["status"] == "SUCCEEDED"
    assert json.loads(described["output"])["item"] == "x"
    types = [event["type"] for event in history["events"]]
    assert types[0] == "ExecutionStarted"
    assert types[-1] == "ExecutionSucceeded"
    assert {"TaskStateEntered", "LambdaFunctionSucceeded", "TaskStateExited"} <= set(types)

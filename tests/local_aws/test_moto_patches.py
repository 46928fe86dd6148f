"""Guards for app/local_aws/moto_patches.py: each fails if its moto defect comes back."""

from __future__ import annotations

import json
import uuid

from tests.conftest import wait_for
from tests.local_aws.handlers import probe


def _map_machine(aws, function_arn: str) -> str:
    return aws.state_machine(
        {
            "StartAt": "Fan",
            "States": {
                "Fan": {
                    "Type": "Map",
                    "ItemsPath": "$.items",
                    "MaxConcurrency": 2,
                    "ItemSelector": {"probe.$": "$.probe", "sleep": 0.3},
                    "ItemProcessor": {
                        "ProcessorConfig": {"Mode": "INLINE"},
                        "StartAt": "Work",
                        "States": {"Work": {"Type": "Task", "Resource": function_arn, "End": True}},
                    },
                    "End": True,
                }
            },
        }
    )


def test_stop_during_map_is_aborted_not_failed_with_runtime_error(aws):
    machine = _map_machine(aws, aws.function("tests.local_aws.handlers.sleepy"))
    name = uuid.uuid4().hex
    execution = aws.start(machine, {"probe": name, "items": list(range(10))})
    wait_for(lambda: probe.calls[name] >= 1, what="first iteration")

    aws.client("stepfunctions").stop_execution(executionArn=execution)
    result = aws.wait_until(execution)

    assert result["status"] == "ABORTED"
    assert result.get("error") != "States.Runtime"
    events = aws.client("stepfunctions").get_execution_history(executionArn=execution, maxResults=1000)["events"]
    assert events[-1]["type"] == "ExecutionAborted"
    assert not [e for e in events if e["type"] == "ExecutionFailed"]


def test_start_execution_without_a_name_gets_a_unique_arn(aws):
    machine = aws.state_machine({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})
    sfn = aws.client("stepfunctions")

    first = sfn.start_execution(stateMachineArn=machine, input="{}")["executionArn"]
    second = sfn.start_execution(stateMachineArn=machine, input="{}")["executionArn"]

    assert not first.endswith(":None")
    assert first != second
    uuid.UUID(first.rsplit(":", 1)[1])  # named like AWS names it


def test_task_states_reuse_one_boto_client_per_service(aws):
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
    from moto.stepfunctions.parser.asl.utils import boto_client

    assert lambda_eval_utils.boto_client_for is boto_client.boto_client_for  # every user rebound
    machine = _map_machine(aws, aws.function("tests.local_aws.handlers.sleepy"))
    name = uuid.uuid4().hex
    aws.wait_until(aws.start(machine, {"probe": name, "items": list(range(6))}))

    cache = boto_client.boto_client_for.cache
    lambda_clients = [client for key, client in cache.items() if key[1] == "lambda"]
    assert probe.calls[name] == 6
    assert len(lambda_clients) == 1  # six tasks, one client

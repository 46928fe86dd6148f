"""`python -m tests.e2e.recorded_api`: the API as `python -m app` runs it, with every AWS call
that the API and the Lambdas running in its embedded AWS make written to $AWS_CALLS_FILE.

One JSON line per action and resource: {"caller": <Lambda function name, "api" or "other">,
"action": "dynamodb:PutItem", "resource": <table, parameter or bucket>}. A transaction
counts as the action of each of its items, as IAM evaluates it. The caller of a Lambda's
call is the function the Lambda route is running (AWS_LAMBDA_FUNCTION_NAME in its
environment, core.lambda_env); the API's calls are the aioboto3 ones; "other" is local
provisioning and the Step Functions interpreter.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import aiobotocore.client
import botocore.client

from core import lambda_env

_TRANSACT_ITEMS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
    "Get": "GetItem",
}


def accesses(service: str, operation: str, params: dict[str, Any]) -> list[tuple[str, str]]:
    """(IAM action, resource name) pairs of one API call."""
    if service == "dynamodb":
        if operation in {"TransactWriteItems", "TransactGetItems"}:
            return [
                (f"dynamodb:{_TRANSACT_ITEMS[kind]}", body["TableName"])
                for item in params["TransactItems"]
                for kind, body in item.items()
            ]
        if operation in {"BatchWriteItem", "BatchGetItem"}:
            return [(f"dynamodb:{operation}", table) for table in params["RequestItems"]]
        return [(f"dynamodb:{operation}", str(params.get("TableName", "*")))]
    if service == "ssm":
        return [(f"ssm:{operation}", str(name)) for name in params.get("Names") or [params.get("Name", "*")]]
    return [(f"{service}:{operation}", str(params.get("Bucket", "*")))]


class Recorder:
    def __init__(self, path: str) -> None:
        self._file = open(path, "a", buffering=1)  # noqa: SIM115 - open for the life of the process
        self._lock = threading.Lock()

    def record(self, client: Any, operation: str, params: dict[str, Any], *, api: bool) -> None:
        function = lambda_env.current().get("AWS_LAMBDA_FUNCTION_NAME")
        caller = function or ("api" if api else "other")
        service = client.meta.service_model.service_name
        lines = [
            json.dumps({"caller": caller, "action": action, "resource": resource})
            for action, resource in accesses(service, operation, params)
        ]
        with self._lock:
            self._file.write("".join(f"{line}\n" for line in lines))

    def install(self) -> None:
        sync_call = botocore.client.BaseClient._make_api_call
        async_call = aiobotocore.client.AioBaseClient._make_api_call
        recorder = self

        def recorded_sync(client: Any, operation: str, params: dict[str, Any]) -> Any:
            recorder.record(client, operation, params, api=False)
            return sync_call(client, operation, params)

        async def recorded_async(client: Any, operation: str, params: dict[str, Any]) -> Any:
            recorder.record(client, operation, params, api=True)
            return await async_call(client, operation, params)

        botocore.client.BaseClient._make_api_call = recorded_sync
        aiobotocore.client.AioBaseClient._make_api_call = recorded_async


if __name__ == "__main__":
    Recorder(os.environ["AWS_CALLS_FILE"]).install()

    from app.__main__ import main

    main()

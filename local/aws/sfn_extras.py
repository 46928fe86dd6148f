"""Step Functions actions moto 5.2.5 lacks but the Terraform AWS provider calls.

- `ValidateStateMachineDefinition`: the provider validates every definition before
  create/update. We parse it with the same ASL parser the interpreter uses; a parse
  error becomes one ERROR diagnostic, as AWS reports it.
- `ListStateMachineVersions`: the provider reads versions after create. Answered from
  the versions moto keeps on the state machine.
"""

from __future__ import annotations

import json
from typing import Any

ACTIONS = ("AWSStepFunctions.ValidateStateMachineDefinition", "AWSStepFunctions.ListStateMachineVersions")


def validate_definition(request: dict[str, Any]) -> dict[str, Any]:
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    definition = request.get("definition", "")
    try:
        json.loads(definition)
        AmazonStateLanguageParser.parse(definition)
    except Exception as exc:  # noqa: BLE001 - any parser failure is a diagnostic, not a server error
        return {
            "result": "FAIL",
            "diagnostics": [
                {
                    "severity": "ERROR",
                    "code": "SCHEMA_VALIDATION_FAILED",
                    "message": f"{type(exc).__name__}: {exc}",
                    "location": "/",
                }
            ],
            "truncated": False,
        }
    return {"result": "OK", "diagnostics": [], "truncated": False}


def list_versions(request: dict[str, Any], account_id: str, region: str) -> dict[str, Any]:
    from moto.stepfunctions.responses import get_backend

    machine = get_backend(account_id, region).describe_state_machine(request["stateMachineArn"])
    versions = sorted(machine.versions.values(), key=lambda v: v.version, reverse=True)
    return {
        "stateMachineVersions": [{"stateMachineVersionArn": v.arn, "creationDate": v.creation_date} for v in versions]
    }


def answer(target: str, request: dict[str, Any], account_id: str, region: str) -> dict[str, Any]:
    if target.endswith("ValidateStateMachineDefinition"):
        return validate_definition(request)
    return list_versions(request, account_id, region)

"""The Step Functions actions the Terraform provider needs and moto lacks."""

from __future__ import annotations

import json
import uuid

from tests.support.stack import Aws


def test_validate_state_machine_definition_ok_and_diagnostics(aws: Aws) -> None:
    sfn = aws.client("stepfunctions")

    ok = sfn.validate_state_machine_definition(
        definition=json.dumps({"StartAt": "A", "States": {"A": {"Type": "Succeed"}}})
    )
    bad = sfn.validate_state_machine_definition(
        definition=json.dumps({"StartAt": "A", "States": {"A": {"Type": "Nope"}}})
    )

    assert ok["result"] == "OK" and ok["diagnostics"] == []
    assert bad["result"] == "FAIL"
    assert bad["diagnostics"][0]["severity"] == "ERROR"


def test_list_state_machine_versions(aws: Aws) -> None:
    sfn = aws.client("stepfunctions")
    arn = sfn.create_state_machine(
        name=f"versioned-{uuid.uuid4().hex[:8]}",
        definition=json.dumps({"StartAt": "A", "States": {"A": {"Type": "Succeed"}}}),
        roleArn=aws.role(),
        publish=True,
    )["stateMachineArn"]

    versions = sfn.list_state_machine_versions(stateMachineArn=arn)["stateMachineVersions"]

    assert [v["stateMachineVersionArn"] for v in versions] == [f"{arn}:1"]

"""Local provisioning builds what Terraform builds, from the same files, idempotently."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from app.settings import Settings
from local.aws.provision import ASL_FILE, OPENAI_KEY_PARAMETER, Provisioner, load_resources, render_template
from local.aws.server import EmbeddedAWS
from tests.support.stack import Aws


def test_render_template_fills_placeholders_and_refuses_missing_ones() -> None:
    assert (
        render_template('{"a": "${x}", "b": ${n}, "p": "$.path"}', {"x": "arn", "n": 2})
        == '{"a": "arn", "b": 2, "p": "$.path"}'
    )
    with pytest.raises(KeyError, match="missing"):
        render_template("${missing}", {})


def test_asl_file_renders_to_a_definition_the_engine_accepts(
    settings: Settings, embedded_aws: EmbeddedAWS, aws: Aws
) -> None:
    provisioner = Provisioner(settings, embedded_aws.endpoint_url)
    definition = provisioner.definition(
        {name: f"arn:aws:lambda:us-east-1:123456789012:function:{name}" for name in load_resources()["functions"]}
    )

    parsed = json.loads(definition)
    verdict = aws.client("stepfunctions").validate_state_machine_definition(definition=definition)

    assert "${" not in definition
    # Uploaded files are planned first, then the per-user queue.
    assert parsed["StartAt"] == "Uploaded"
    assert parsed["States"]["Uploaded"]["Default"] == "Admit" and parsed["States"]["PlanOutcome"]["Default"] == "Admit"
    assert verdict["result"] == "OK", verdict["diagnostics"]
    assert "${control_arn}" in ASL_FILE.read_text()  # the shared file stays a template


def test_provisioning_twice_creates_nothing_twice_and_keeps_changed_parameters(
    settings: Settings, embedded_aws: EmbeddedAWS, aws: Aws
) -> None:
    first = Provisioner(settings, embedded_aws.endpoint_url).run()
    aws.client("ssm").put_parameter(
        Name=f"{settings.ssm_prefix}/max-parallelism", Value="9", Overwrite=True, Type="String"
    )

    second = Provisioner(settings, embedded_aws.endpoint_url).run()

    assert second == first
    pages = aws.client("stepfunctions").get_paginator("list_state_machines").paginate()
    machines = [m for page in pages for m in page["stateMachines"] if m["name"] == settings.state_machine_name]
    assert len(machines) == 1
    tables = aws.table_names(settings.name_prefix + "-")
    assert sorted(tables) == sorted(settings.table(t) for t in load_resources()["tables"])
    assert aws.client("ssm").get_parameter(Name=f"{settings.ssm_prefix}/max-parallelism")["Parameter"]["Value"] == "9"


def test_the_model_key_becomes_a_securestring_and_the_functions_get_only_its_name(
    settings: Settings, embedded_aws: EmbeddedAWS, aws: Aws
) -> None:
    with_key = settings.model_copy(update={"openai_api_key": SecretStr("sk-local-0123456789")})
    Provisioner(with_key, embedded_aws.endpoint_url).run()

    name = f"{settings.ssm_prefix}/{OPENAI_KEY_PARAMETER}"
    stored = aws.client("ssm").get_parameter(Name=name, WithDecryption=True)["Parameter"]
    assert (stored["Type"], stored["Value"]) == ("SecureString", "sk-local-0123456789")
    for logical in load_resources()["functions"]:
        function = f"{settings.name_prefix}-{logical.replace('_', '-')}"
        variables = aws.client("lambda").get_function_configuration(FunctionName=function)["Environment"]["Variables"]
        assert variables["OPENAI_API_KEY_PARAMETER"] == name and "OPENAI_API_KEY" not in variables
        assert not [v for v in variables.values() if "sk-local-0123456789" in v]

"""Local provisioning: create what the service needs from the definitions Terraform uses.

`infra/terraform/resources.json` (tables, SSM parameters, functions) and
`infra/terraform/statemachine/validation.asl.json` are read here and by Terraform.
Every step checks before it creates, so provisioning twice is harmless; the state
machine's definition is updated in place when it changed.
"""

from __future__ import annotations

import io
import json
import logging
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from app.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

TERRAFORM_DIR = PROJECT_ROOT / "infra" / "terraform"
RESOURCES_FILE = TERRAFORM_DIR / "resources.json"
ASL_FILE = TERRAFORM_DIR / "statemachine" / "validation.asl.json"
_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")
_ASSUME_ROLE = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": ["lambda.amazonaws.com", "states.amazonaws.com"]},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)


def load_resources(path: Path = RESOURCES_FILE) -> dict[str, Any]:
    return json.loads(path.read_text())


def render_template(text: str, variables: Mapping[str, Any]) -> str:
    """Fill `${name}` placeholders as Terraform's templatefile() does; a missing one is an error."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            raise KeyError(f"template variable {name!r} has no value")
        return str(variables[name])

    return _PLACEHOLDER.sub(fill, text)


@dataclass(frozen=True)
class Provisioned:
    state_machine_arn: str
    function_arns: dict[str, str]


class Provisioner:
    def __init__(self, settings: Settings, endpoint_url: str) -> None:
        self.settings = settings
        self.endpoint_url = endpoint_url
        self.resources = load_resources()
        kwargs = {
            "endpoint_url": endpoint_url,
            "region_name": settings.aws_region,
            "aws_access_key_id": "local",
            "aws_secret_access_key": "local",
        }
        self._client = lambda service: boto3.client(service, **kwargs)

    def run(self) -> Provisioned:
        self.create_tables()
        self.create_bucket()
        self.create_parameters()
        role_arn = self.create_role()
        functions = self.create_functions(role_arn)
        machine = self.create_state_machine(role_arn, functions)
        return Provisioned(state_machine_arn=machine, function_arns=functions)

    def create_tables(self) -> None:
        dynamodb = self._client("dynamodb")
        existing = {name for page in dynamodb.get_paginator("list_tables").paginate() for name in page["TableNames"]}
        for logical, spec in self.resources["tables"].items():
            name = self.settings.table(logical)
            if name in existing:
                continue
            keys = [{"AttributeName": spec["hash_key"], "KeyType": "HASH"}]
            if spec["range_key"]:
                keys.append({"AttributeName": spec["range_key"], "KeyType": "RANGE"})
            request: dict[str, Any] = {
                "TableName": name,
                "KeySchema": keys,
                "AttributeDefinitions": [
                    {"AttributeName": a, "AttributeType": t} for a, t in spec["attributes"].items()
                ],
                "BillingMode": "PAY_PER_REQUEST",
            }
            if spec["indexes"]:
                request["GlobalSecondaryIndexes"] = [
                    {
                        "IndexName": index,
                        "KeySchema": [
                            {"AttributeName": ix["hash_key"], "KeyType": "HASH"},
                            {"AttributeName": ix["range_key"], "KeyType": "RANGE"},
                        ],
                        "Projection": {"ProjectionType": "ALL"},
                    }
                    for index, ix in spec["indexes"].items()
                ]
            dynamodb.create_table(**request)
            if spec["ttl_attribute"]:
                dynamodb.update_time_to_live(
                    TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": spec["ttl_attribute"]}
                )
            log.info("created table %s", name)

    def create_bucket(self) -> None:
        s3 = self._client("s3")
        try:
            s3.head_bucket(Bucket=self.settings.bucket)
        except ClientError:
            s3.create_bucket(Bucket=self.settings.bucket)
            log.info("created bucket %s", self.settings.bucket)

    def create_parameters(self) -> None:
        ssm = self._client("ssm")
        for name, default in self.resources["parameters"].items():
            full = f"{self.settings.ssm_prefix}/{name}"
            try:
                ssm.put_parameter(Name=full, Value=default, Type="String", Overwrite=False)
            except ClientError as exc:  # an admin may have changed it: keep the value
                if exc.response["Error"]["Code"] != "ParameterAlreadyExists":
                    raise

    def create_role(self) -> str:
        iam = self._client("iam")
        name = f"{self.settings.name_prefix}-local"
        try:
            return iam.get_role(RoleName=name)["Role"]["Arn"]
        except ClientError:
            return iam.create_role(RoleName=name, AssumeRolePolicyDocument=_ASSUME_ROLE)["Role"]["Arn"]

    def function_environment(self) -> dict[str, str]:
        """What each handler reads (lambdas/common/config.py); on AWS Terraform sets the same names."""
        s = self.settings
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "VALIDATIONS_TABLE": s.table("validations"),
            "CHUNKS_TABLE": s.table("chunks"),
            "USERS_TABLE": s.table("users"),
            "EVENTS_TABLE": s.table("events"),
            "BUCKETS_TABLE": s.table("buckets"),
            "GOVERNOR_TABLE": s.table("governor"),
            "GOVERNOR_WINDOW_SECONDS": str(s.governor_window_seconds),
            "LEASE_SECONDS": str(s.lease_seconds),
            "CONFIG_CACHE_SECONDS": str(s.config_cache_seconds),
            "MAP_CONCURRENCY_CEILING": str(s.map_concurrency_ceiling),
            "QUEUE_MIN_WAIT_SECONDS": str(s.queue_min_wait_seconds),
            "UPLOADS_BUCKET": s.bucket,
            "SSM_PREFIX": s.ssm_prefix,
            "OPENAI_BASE_URL": s.openai_base_url or "",
            "OPENAI_API_KEY": s.openai_api_key.get_secret_value() if s.openai_api_key else "",
            "OPENAI_MODEL": s.openai_model,
            "OPENAI_TIMEOUT_SECONDS": str(s.openai_timeout_seconds),
            "COMPLETION_MAX_TOKENS": str(s.completion_max_tokens),
            "COMPLETION_MAX_TOKENS_CAP": str(s.completion_max_tokens_cap),
            "CHUNK_MAX_TOKENS": str(s.chunk_max_tokens),
        }

    def create_functions(self, role_arn: str) -> dict[str, str]:
        lam = self._client("lambda")
        environment = {"Variables": self.function_environment()}
        arns = {}
        for logical, spec in self.resources["functions"].items():
            name = f"{self.settings.name_prefix}-{logical.replace('_', '-')}"
            try:
                current = lam.get_function_configuration(FunctionName=name)
                if current.get("Environment") != environment or current["Handler"] != spec["handler"]:
                    lam.update_function_configuration(
                        FunctionName=name, Environment=environment, Handler=spec["handler"]
                    )
                arns[logical] = current["FunctionArn"]
            except ClientError:
                created = lam.create_function(
                    FunctionName=name,
                    Runtime="python3.11",
                    Role=role_arn,
                    Handler=spec["handler"],
                    # The embedded AWS runs handlers from this checkout; the zip is a placeholder.
                    Code={"ZipFile": _placeholder_zip()},
                    Timeout=spec["timeout"],
                    MemorySize=spec["memory"],
                    Environment=environment,
                )
                arns[logical] = created["FunctionArn"]
        return arns

    def definition(self, function_arns: Mapping[str, str]) -> str:
        s = self.settings
        variables = {
            "ssm_prefix": s.ssm_prefix,
            "retry_interval_seconds": s.sfn_retry_interval_seconds,
            "retry_max_attempts": s.sfn_retry_max_attempts,
            "retry_max_delay_seconds": s.sfn_retry_max_delay_seconds,
            **{f"{logical}_arn": arn for logical, arn in function_arns.items()},
        }
        return render_template(ASL_FILE.read_text(), variables)

    def create_state_machine(self, role_arn: str, function_arns: Mapping[str, str]) -> str:
        sfn = self._client("stepfunctions")
        definition = self.definition(function_arns)
        machines = [m for page in sfn.get_paginator("list_state_machines").paginate() for m in page["stateMachines"]]
        for machine in machines:
            if machine["name"] == self.settings.state_machine_name:
                arn = machine["stateMachineArn"]
                if sfn.describe_state_machine(stateMachineArn=arn)["definition"] != definition:
                    sfn.update_state_machine(stateMachineArn=arn, definition=definition)
                return arn
        return sfn.create_state_machine(name=self.settings.state_machine_name, definition=definition, roleArn=role_arn)[
            "stateMachineArn"
        ]


def _placeholder_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.txt", "Handlers run in-process in the embedded AWS.")
    return buffer.getvalue()

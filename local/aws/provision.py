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
NOTIFY_ASL_FILE = TERRAFORM_DIR / "statemachine" / "notify.asl.json"  # webhook notifications
ASL_FILE = TERRAFORM_DIR / "statemachine" / "validation.asl.json"
# Where the model key lives under SSM_PREFIX, as in infra/terraform/secrets.tf.
OPENAI_KEY_PARAMETER = "secrets/openai-api-key"
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
    notify_state_machine_arn: str = ""


class Provisioner:
    def __init__(self, settings: Settings, endpoint_url: str, parameters: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.endpoint_url = endpoint_url
        self.resources = load_resources()
        # Initial SSM values other than resources.json's (local mode: target-tpm at the simulator's limit).
        self.parameters = {**self.resources["parameters"], **(parameters or {})}
        kwargs = {
            "endpoint_url": endpoint_url,
            "region_name": settings.aws_region,
            "aws_access_key_id": "local",
            "aws_secret_access_key": "local",
        }
        self._client = lambda service: boto3.client(service, **kwargs)
        self._account_id: str | None = None

    def run(self) -> Provisioned:
        self.create_tables()
        self.create_bucket()
        self.create_parameters()
        self.put_openai_key()
        role_arn = self.create_role()
        functions = self.create_functions(role_arn)
        machine = self.create_state_machine(role_arn, functions)
        notify = self._ensure_state_machine(
            self.settings.notify_state_machine_name, self.notify_definition(functions), role_arn
        )
        return Provisioned(state_machine_arn=machine, function_arns=functions, notify_state_machine_arn=notify)

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
                        "Projection": _projection(ix),
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
        # Terraform's rule for `api_origin` (infra/terraform/uploads.tf), for the page this API serves:
        # its multipart uploads read each part's ETag, which a browser sees only when CORS exposes it.
        s3.put_bucket_cors(Bucket=self.settings.bucket, CORSConfiguration={"CORSRules": [self.cors_rule()]})

    def cors_rule(self) -> dict[str, Any]:
        host, port = self.settings.host, self.settings.port
        hosts = ["127.0.0.1", "localhost"] if host in ("127.0.0.1", "localhost", "0.0.0.0") else [host]
        return {
            "ID": "presigned-uploads",
            "AllowedMethods": ["PUT"],
            "AllowedOrigins": [f"http://{h}:{port}" for h in hosts],
            "AllowedHeaders": ["content-type", "x-amz-checksum-sha256", "x-amz-tagging"],
            "ExposeHeaders": ["ETag"],
            "MaxAgeSeconds": 3600,
        }

    def create_parameters(self) -> None:
        ssm = self._client("ssm")
        for name, default in self.parameters.items():
            full = f"{self.settings.ssm_prefix}/{name}"
            try:
                ssm.put_parameter(Name=full, Value=default, Type="String", Overwrite=False)
            except ClientError as exc:  # an admin may have changed it: keep the value
                if exc.response["Error"]["Code"] != "ParameterAlreadyExists":
                    raise

    @property
    def openai_key_parameter(self) -> str:
        """The SecureString holding the model key; "" when no key is set (the simulator needs none)."""
        key = self.settings.openai_api_key
        return f"{self.settings.ssm_prefix}/{OPENAI_KEY_PARAMETER}" if key and key.get_secret_value() else ""

    def put_openai_key(self) -> None:
        """The key as a SecureString (KMS default key alias/aws/ssm), for the Lambdas to read at run
        time: the functions' environment holds only its name. Overwritten: the setting is the truth."""
        if not self.openai_key_parameter:
            return
        assert self.settings.openai_api_key is not None
        self._client("ssm").put_parameter(
            Name=self.openai_key_parameter,
            Value=self.settings.openai_api_key.get_secret_value(),
            Type="SecureString",
            Overwrite=True,
        )

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
            "PARTS_TABLE": s.table("parts"),
            "USERS_TABLE": s.table("users"),
            "EVENTS_TABLE": s.table("events"),
            "BUCKETS_TABLE": s.table("buckets"),
            "SPEND_TABLE": s.table("spend"),
            "GOVERNOR_TABLE": s.table("governor"),
            "REUSE_TABLE": s.table("reuse"),
            # Webhooks: Finalize and the reconciler start notifications, the notify Lambda delivers them.
            "WEBHOOKS_TABLE": s.table("webhooks"),
            "WEBHOOK_SECRETS_TABLE": s.table("webhook_secrets"),
            "WEBHOOK_DELIVERIES_TABLE": s.table("webhook_deliveries"),
            "NOTIFY_STATE_MACHINE_ARN": self.notify_state_machine_arn(),
            "WEBHOOK_ALLOW_PRIVATE": "true" if s.webhooks_private_allowed else "",
            "WEBHOOK_ALLOW_HTTP": "true" if s.webhooks_http_allowed else "",
            "WEBHOOK_TIMEOUT_SECONDS": str(s.webhook_timeout_seconds),
            "GOVERNOR_WINDOW_SECONDS": str(s.governor_window_seconds),
            "LEASE_SECONDS": str(s.lease_seconds),
            "GOVERNOR_SHARDS": str(s.governor_shards),
            "CONFIG_CACHE_SECONDS": str(s.config_cache_seconds),
            "MAP_CONCURRENCY_CEILING": str(s.map_concurrency_ceiling),
            "INLINE_MAP_MAX_ITEMS": str(s.inline_map_max_items),
            "PARTS_PER_ITEM": str(s.parts_per_item),
            "PLAN_RANGE_BYTES": str(s.plan_range_bytes),
            "PLAN_INVOCATION_BYTES": str(s.plan_invocation_bytes),
            "PLAN_MAX_LINE_BYTES": str(s.plan_max_line_bytes),
            "PLAN_WHOLE_FILE_MAX_BYTES": str(s.plan_whole_file_max_bytes),
            "RECONCILE_GRACE_SECONDS": str(s.reconcile_grace_seconds),
            "RETENTION_DAYS": str(s.retention_days),
            "QUEUE_MIN_WAIT_SECONDS": str(s.queue_min_wait_seconds),
            "DEFAULT_MAX_QUEUED": str(s.default_max_queued),
            "UPLOADS_BUCKET": s.bucket,
            "SSM_PREFIX": s.ssm_prefix,
            "OPENAI_BASE_URL": s.openai_base_url or "",
            "OPENAI_API_KEY_PARAMETER": self.openai_key_parameter,  # the key's name, never the key
            "OPENAI_MODEL": s.openai_model,
            "OPENAI_TIMEOUT_SECONDS": str(s.openai_timeout_seconds),
            "FLEX_TIMEOUT_SECONDS": str(s.flex_timeout_seconds or s.openai_timeout_seconds),
            "FLEX_RETRY_BASE_SECONDS": str(s.flex_retry_base_seconds),
            "FLEX_RETRY_MAX_SECONDS": str(s.flex_retry_max_seconds),
            "BATCH_MAX_REQUESTS": str(s.batch_max_requests),
            "BATCH_MAX_BYTES": str(s.batch_max_bytes),
            "BATCH_QUEUE_LIMIT_TOKENS": str(s.batch_queue_limit_tokens),
            "BATCH_CANCEL_WAIT_SECONDS": str(s.batch_cancel_wait_seconds),
            "COMPLETION_MAX_TOKENS": str(s.completion_max_tokens),
            "COMPLETION_MAX_TOKENS_CAP": str(s.completion_max_tokens_cap),
            "PART_MAX_TOKENS": str(s.part_max_tokens),
            # Powertools: the `service` of log lines and the metrics' dimension (the deployment).
            "POWERTOOLS_SERVICE_NAME": s.name_prefix,
        }

    def notify_state_machine_arn(self) -> str:
        """Known before the machine exists (the functions that start it are created first)."""
        if self.settings.notify_machine_arn:
            return self.settings.notify_machine_arn
        if self._account_id is None:
            self._account_id = str(self._client("sts").get_caller_identity()["Account"])
        region, name = self.settings.aws_region, self.settings.notify_state_machine_name
        return f"arn:aws:states:{region}:{self._account_id}:stateMachine:{name}"

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
                    # As Terraform declares them (lambda_runtime, lambda_architecture); the handlers run here.
                    Runtime="python3.13",
                    Architectures=["arm64"],
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

    def _variables(self, function_arns: Mapping[str, str]) -> dict[str, Any]:
        """The template variables of both ASL files (Terraform passes the same: stepfunctions.tf)."""
        s = self.settings
        return {
            "ssm_prefix": s.ssm_prefix,
            "retry_interval_seconds": s.sfn_retry_interval_seconds,
            "retry_max_attempts": s.sfn_retry_max_attempts,
            "retry_max_delay_seconds": s.sfn_retry_max_delay_seconds,
            "batch_poll_first_seconds": s.batch_poll_first_seconds,
            "batch_poll_max_seconds": s.batch_poll_max_seconds,
            "webhook_retry_interval_seconds": s.webhook_retry_interval_seconds,
            "webhook_retry_max_attempts": s.webhook_retry_max_attempts,
            "webhook_retry_max_delay_seconds": s.webhook_retry_max_delay_seconds,
            **{f"{logical}_arn": arn for logical, arn in function_arns.items()},
        }

    def definition(self, function_arns: Mapping[str, str]) -> str:
        return render_template(ASL_FILE.read_text(), self._variables(function_arns))

    def notify_definition(self, function_arns: Mapping[str, str]) -> str:
        return render_template(NOTIFY_ASL_FILE.read_text(), self._variables(function_arns))

    def create_state_machine(self, role_arn: str, function_arns: Mapping[str, str]) -> str:
        return self._ensure_state_machine(self.settings.state_machine_name, self.definition(function_arns), role_arn)

    def _ensure_state_machine(self, name: str, definition: str, role_arn: str) -> str:
        sfn = self._client("stepfunctions")
        machines = [m for page in sfn.get_paginator("list_state_machines").paginate() for m in page["stateMachines"]]
        for machine in machines:
            if machine["name"] == name:
                arn: str = machine["stateMachineArn"]
                if sfn.describe_state_machine(stateMachineArn=arn)["definition"] != definition:
                    sfn.update_state_machine(stateMachineArn=arn, definition=definition)
                return arn
        created: str = sfn.create_state_machine(name=name, definition=definition, roleArn=role_arn)["stateMachineArn"]
        return created


def _projection(index: dict[str, Any]) -> dict[str, Any]:
    """An index keeps every attribute unless it names the few it includes (as main.tf reads it)."""
    if index.get("include"):
        return {"ProjectionType": "INCLUDE", "NonKeyAttributes": list(index["include"])}
    return {"ProjectionType": "ALL"}


def _placeholder_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.txt", "Handlers run in-process in the embedded AWS.")
    return buffer.getvalue()

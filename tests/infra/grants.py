"""What resources.json lets each role do to each table, read as infra/terraform/iam.tf reads it.

The Terraform proof checks that the policies Terraform renders name exactly these actions
(tests/infra/test_terraform.py), and the whole-run test checks that every DynamoDB call a
Lambda or the API makes is among them (tests/e2e/test_secrets_and_grants.py).
"""

from __future__ import annotations

from typing import Any

from local.aws.provision import load_resources

# iam.tf `table_access`: one letter of a table's mode per kind of access.
TABLE_ACCESS = {
    "r": {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:ConditionCheckItem"},
    "a": {"dynamodb:PutItem"},
    "w": {"dynamodb:PutItem", "dynamodb:UpdateItem"},
    "d": {"dynamodb:DeleteItem"},
    "b": {"dynamodb:BatchWriteItem"},
    "s": {"dynamodb:Scan"},
}
API = "api"  # the role of the API (the ECS task), beside the functions' names


def actions(mode: str) -> set[str]:
    return set().union(*(TABLE_ACCESS[letter] for letter in mode))


def uses(role: str, resources: dict[str, Any] | None = None) -> dict[str, Any]:
    resources = resources or load_resources()
    found: dict[str, Any] = resources[API]["uses"] if role == API else resources["functions"][role]["uses"]
    return found


def table_grants(role: str, resources: dict[str, Any] | None = None) -> dict[str, set[str]]:
    """Logical table -> the DynamoDB actions `role` (a function of resources.json, or "api") may take."""
    resources = resources or load_resources()
    granted = {table: actions(mode) for table, mode in uses(role, resources)["tables"].items()}
    if role == API:  # api.tf "DescribeTables": /readyz, on every table
        granted = {table: granted.get(table, set()) | {"dynamodb:DescribeTable"} for table in resources["tables"]}
    return granted


def model_callers(resources: dict[str, Any] | None = None) -> set[str]:
    """The functions that call the model, the only ones that may read its key."""
    resources = resources or load_resources()
    return {name for name, f in resources["functions"].items() if f["uses"].get("model")}

"""The validator asks the model of its validation (its record's `model`), from that model's budget;
a model no longer in the admin's list is refused before any call."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from app.settings import Settings
from lambdas.common.config import LambdaConfig, config_from_environ
from lambdas.common.errors import ModelRejected
from lambdas.common.stores import store_for
from lambdas.validate_part.validator import validate_batch
from local.aws.provision import Provisioner
from local.simulator.server import SimulatorServer
from tests.support.stack import Aws, MakeApi, lines_document, submit

NO_SECRET = {"id": "no-secret", "text": "No line may contain the word secret."}
OTHER = "simulator-b"


class _Models:
    """The model named by each chat completion request the simulator receives."""

    def __init__(self, simulator: SimulatorServer) -> None:
        self._simulator = simulator.simulator
        self._complete = self._simulator.complete
        self._lock = threading.Lock()
        self.seen: list[str] = []
        self._simulator.complete = self.complete  # type: ignore[method-assign]  # the app calls the instance's attribute

    async def complete(self, body: dict[str, Any]) -> Any:
        with self._lock:
            self.seen.append(str(body.get("model")))
        return await self._complete(body)

    def close(self) -> None:
        self._simulator.complete = self._complete  # type: ignore[method-assign]


def _held_validation(api: Any, aws: Aws, settings: Settings, model: str) -> tuple[str, dict[str, str], int]:
    """A submitted validation whose execution only waits (its validator is run by hand), its record's
    `model` set to `model`: (id, its parts' range, how many)."""
    sfn = aws.client("stepfunctions")
    definition = {"StartAt": "Hold", "States": {"Hold": {"Type": "Wait", "Seconds": 120, "End": True}}}
    sfn.update_state_machine(
        stateMachineArn=aws.machine_arn(settings.state_machine_name), definition=json.dumps(definition)
    )
    created = submit(api, {"a.txt": lines_document(30)}, [NO_SECRET])
    vid = created["id"]
    dynamodb = aws.client("dynamodb")
    dynamodb.update_item(
        TableName=settings.table("validations"),
        Key={"id": {"S": vid}},
        UpdateExpression="SET #m = :m",
        ExpressionAttributeNames={"#m": "model"},
        ExpressionAttributeValues={":m": {"S": model}},
    )
    parts = dynamodb.query(
        TableName=settings.table("parts"),
        KeyConditionExpression="validation_id = :v",
        ExpressionAttributeValues={":v": {"S": vid}},
    )["Items"]
    ids = sorted(p["part_id"]["S"] for p in parts if p["part_id"]["S"][0].isdigit())  # not its ~detail or tallies
    return vid, {"first": ids[0], "last": ids[-1]}, len(ids)


def _config(aws: Aws, settings: Settings) -> LambdaConfig:
    return config_from_environ(Provisioner(settings, aws.endpoint_url).function_environment())


def _granted(aws: Aws, settings: Settings, pk: str) -> int:
    item = (
        aws.client("dynamodb")
        .get_item(TableName=settings.table("governor"), Key={"pk": {"S": pk}, "sk": {"S": "tokens"}})
        .get("Item", {})
    )
    return int(item.get("granted", {"N": "0"})["N"])


@pytest.mark.slow(6)
def test_the_validator_asks_the_validations_model_from_that_models_budget(
    make_api: MakeApi, aws: Aws, settings: Settings, simulator: SimulatorServer
) -> None:
    api = make_api(part_max_tokens=100)
    listed = [
        {"name": "simulator", "target_tpm": 1_000_000, "target_rpm": 10_000, "tiers": ["standard"], "default": True},
        {"name": OTHER, "target_tpm": 500_000, "target_rpm": 5_000, "tiers": ["standard"]},
    ]
    assert api.patch("/admin/models", json={"models": listed}).status_code == 200
    vid, parts, total = _held_validation(api, aws, settings, OTHER)
    models = _Models(simulator)
    try:
        summary = validate_batch(
            store_for(_config(aws, settings)), _config(aws, settings), vid, 1, parts, lambda: 600_000
        )
    finally:
        models.close()

    assert summary["validated"] == total and total > 1
    assert set(models.seen) == {OTHER} and len(models.seen) == total
    assert _granted(aws, settings, f"budget#{OTHER}") > 0  # its model's budget
    assert _granted(aws, settings, "budget") == 0  # not the configured model's


def test_a_model_no_longer_listed_is_refused_before_any_call(
    make_api: MakeApi, aws: Aws, settings: Settings, simulator: SimulatorServer
) -> None:
    api = make_api(part_max_tokens=100)
    vid, parts, _ = _held_validation(api, aws, settings, "retired-model")
    models = _Models(simulator)
    try:
        with pytest.raises(ModelRejected, match="retired-model"):
            validate_batch(store_for(_config(aws, settings)), _config(aws, settings), vid, 1, parts, lambda: 600_000)
    finally:
        models.close()

    assert models.seen == []

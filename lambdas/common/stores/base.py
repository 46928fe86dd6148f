"""What every store of the Lambdas shares: the configuration, the clients, and the driver of
core's sans-IO rules (core/steps.py)."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from core.steps import STEP_FUNCTIONS_OPERATIONS, Driven, Step, StepAnswer, answer_to_error
from lambdas.common.config import LambdaConfig

T = TypeVar("T")


@dataclass(frozen=True)
class Clients:
    config: LambdaConfig
    dynamodb: Any  # boto3's DynamoDB resource: marshals Python values itself
    s3: Any
    client: Any  # low-level DynamoDB client, for the typed requests core builds
    sfn: Any = None  # Step Functions, for the queue's wake-ups (core/queue.py)

    def table(self, name: str) -> Any:
        return self.dynamodb.Table(name)

    def transact(self, items: list[dict[str, Any]]) -> None:
        """TransactWriteItems through the resource's client, which marshals Python values."""
        self.dynamodb.meta.client.transact_write_items(TransactItems=items)

    def drive(self, steps: Generator[Step, StepAnswer, T]) -> T:
        """Run a core sans-IO rule (core/steps.py) against DynamoDB (and Step Functions); its result."""
        rule = Driven(steps)
        step = rule.start()
        while step is not None:
            operation, request = step
            client = self.sfn if operation in STEP_FUNCTIONS_OPERATIONS else self.client
            if client is None:
                raise TypeError(f"{operation} needs a Step Functions client")
            try:
                answer: StepAnswer = getattr(client, operation)(**request)
            except ClientError as exc:
                answer = answer_to_error(exc, step)
            step = rule.send(answer)
        return rule.result

"""Drives core's sans-IO DynamoDB rules (core/steps.py) with the API's aioboto3 client."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from core.steps import STEP_FUNCTIONS_OPERATIONS, Driven, Step, StepAnswer, answer_to_error

T = TypeVar("T")


async def drive(dynamodb: Any, steps: Generator[Step, StepAnswer, T], sfn: Any = None) -> T:
    """Send each step to DynamoDB (a Step Functions step to `sfn`) and its answer back to the
    rule; return the rule's result."""
    rule = Driven(steps)
    step = rule.start()
    while step is not None:
        step = rule.send(await _answer(sfn if step[0] in STEP_FUNCTIONS_OPERATIONS else dynamodb, step))
    return rule.result


async def _answer(client: Any, step: Step) -> StepAnswer:
    operation, request = step
    if client is None:
        raise TypeError(f"{operation} needs a Step Functions client")
    try:
        answer: StepAnswer = await getattr(client, operation)(**request)
    except ClientError as exc:
        answer = answer_to_error(exc, step)
    return answer

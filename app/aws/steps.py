"""Drives core's sans-IO DynamoDB rules (core/steps.py) with the API's aioboto3 client."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from core.steps import Driven, Step, StepAnswer, answer_to_error

T = TypeVar("T")


async def drive(dynamodb: Any, steps: Generator[Step, StepAnswer, T]) -> T:
    """Send each step to DynamoDB and its answer back to the rule; return the rule's result."""
    rule = Driven(steps)
    step = rule.start()
    while step is not None:
        step = rule.send(await _answer(dynamodb, step))
    return rule.result


async def _answer(dynamodb: Any, step: Step) -> StepAnswer:
    operation, request = step
    try:
        answer: StepAnswer = await getattr(dynamodb, operation)(**request)
    except ClientError as exc:
        answer = answer_to_error(exc, step)
    return answer

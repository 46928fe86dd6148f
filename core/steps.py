"""Sans-IO DynamoDB rules: what the API (aioboto3) and the Lambdas (boto3) both apply is
written once, as a generator that yields steps and receives their answers.

A step is `(operation, request)`: the low-level DynamoDB client method (`query`,
`get_item`, `update_item`, `put_item`, `transact_write_items`) and its keyword arguments,
or the one Step Functions call a rule makes (`send_task_success`, waking a queued
validation: drivers send it to their Step Functions client). The answer is the client's
response, or `Cancelled` when a transaction lost its conditions or a task token was no
longer waiting (expected outcomes the rule decides on); any other error is raised by the
driver. Each side
drives every rule with one small loop (`app/aws/steps.py`, `lambdas/common/stores/base.py`).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from botocore.exceptions import ClientError

from core.dynamo import from_item

QUERY, UPDATE, PUT, TRANSACT = "query", "update_item", "put_item", "transact_write_items"
GET = "get_item"
# A Step Functions step (core/queue.py): drivers send it to Step Functions, not DynamoDB.
SEND_TASK_SUCCESS = "send_task_success"
STEP_FUNCTIONS_OPERATIONS = frozenset({SEND_TASK_SUCCESS})
# The token's task is not waiting any more (woken already, timed out, execution ended).
_SPENT_TOKEN_CODES = frozenset({"InvalidToken", "TaskTimedOut", "TaskDoesNotExist"})


@dataclass(frozen=True)
class Cancelled:
    """A transaction cancelled by its conditions: one reason per item, in order."""

    reasons: list[dict[str, Any]]


# What a rule yields: (client method, its keyword arguments).
Step = tuple[str, dict[str, Any]]
# What it is sent back: the response, or Cancelled for a transaction that lost.
StepAnswer = dict[str, Any] | Cancelled


T = TypeVar("T")


class Driven(Generic[T]):
    """A rule being driven: the generator protocol, so a driver only answers steps.

    rule = Driven(steps)
    step = rule.start()
    while step is not None:
        step = rule.send(<the answer to step>)
    return rule.result
    """

    result: T

    def __init__(self, steps: Generator[Step, StepAnswer, T]) -> None:
        self._steps = steps

    def start(self) -> Step | None:
        try:
            return next(self._steps)
        except StopIteration as done:
            self.result = done.value
            return None

    def send(self, answer: StepAnswer) -> Step | None:
        """The next step, or None once the rule has its result."""
        try:
            return self._steps.send(answer)
        except StopIteration as done:
            self.result = done.value
            return None


def transact(items: list[dict[str, Any]]) -> Step:
    return TRANSACT, {"TransactItems": items}


def response(answer: StepAnswer) -> dict[str, Any]:
    """The response of a step that cannot be cancelled (every step but a transaction)."""
    if isinstance(answer, Cancelled):
        raise TypeError("only a transaction can be cancelled")
    return answer


def query_all(request: dict[str, Any]) -> Generator[Step, StepAnswer, list[dict[str, Any]]]:
    """Every item a Query matches, page after page (a page stops at 1 MB), as plain records."""
    items: list[dict[str, Any]] = []
    while True:
        page = response((yield (QUERY, request)))
        items.extend(from_item(i) for i in page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        request = {**request, "ExclusiveStartKey": page["LastEvaluatedKey"]}


def cancellation_reasons(error_response: dict[str, Any], items: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """A cancelled transaction's reasons (without them in the error, every item counts as lost);
    None when the error is something else."""
    if error_response["Error"]["Code"] != "TransactionCanceledException":
        return None
    return error_response.get("CancellationReasons") or [{"Code": "ConditionalCheckFailed"}] * len(items)


def cancelled(error_response: dict[str, Any], step: Step) -> Cancelled | None:
    """The answer to a step that failed: Cancelled for a lost transaction or a spent task
    token, None (raise) otherwise."""
    operation, request = step
    if operation == SEND_TASK_SUCCESS:
        code = error_response["Error"]["Code"]
        return Cancelled([{"Code": code}]) if code in _SPENT_TOKEN_CODES else None
    if operation != TRANSACT:
        return None
    reasons = cancellation_reasons(error_response, request["TransactItems"])
    return None if reasons is None else Cancelled(reasons)


def answer_to_error(exc: ClientError, step: Step) -> Cancelled:
    """A driver's answer when a step's call raised: Cancelled for a lost transaction; any other
    error goes up unchanged."""
    answer = cancelled(exc.response, step)
    if answer is None:
        raise exc
    return answer

"""Step Functions calls the API makes, with AWS errors translated once, here."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from app.aws.errors import aws_failure, error_code
from app.errors import AppError, BadRequest, NotFound, UpstreamError


def _failed(exc: ClientError) -> AppError:
    """503 with Retry-After when Step Functions throttled or was unavailable, else 502 (app/aws/errors.py)."""
    return aws_failure(exc) or UpstreamError(f"A Step Functions call failed: {error_code(exc)}")


class Executions:
    def __init__(self, sfn: Any, state_machine_arn: str) -> None:
        self._sfn = sfn
        self._machine = state_machine_arn

    def arn_of(self, name: str) -> str:
        """The ARN StartExecution will give an execution of this name (arn:...:execution:<machine>:<name>)."""
        return f"{self._machine.replace(':stateMachine:', ':execution:', 1)}:{name}"

    async def start(self, name: str, payload: dict[str, Any]) -> str:
        try:
            answer = await self._sfn.start_execution(
                stateMachineArn=self._machine, name=name, input=json.dumps(payload)
            )
        except ClientError as exc:
            raise _failed(exc) from exc
        return str(answer["executionArn"])

    async def start_once(self, name: str, payload: dict[str, Any]) -> bool:
        """StartExecution under a name that stands for one event: False when it was started before
        (ExecutionAlreadyExists, or the same running execution answered again)."""
        try:
            await self._sfn.start_execution(stateMachineArn=self._machine, name=name, input=json.dumps(payload))
        except ClientError as exc:
            if error_code(exc) == "ExecutionAlreadyExists":
                return False
            raise _failed(exc) from exc
        return True

    async def stop(self, execution_arn: str, cause: str) -> None:
        try:
            await self._sfn.stop_execution(executionArn=execution_arn, error="Cancelled", cause=cause)
        except ClientError as exc:
            if error_code(exc) != "ExecutionDoesNotExist":
                raise _failed(exc) from exc

    async def status(self, execution_arn: str) -> str | None:
        """The execution's status; None when it does not exist (never started, or expired)."""
        try:
            return str((await self._sfn.describe_execution(executionArn=execution_arn))["status"])
        except ClientError as exc:
            if error_code(exc) == "ExecutionDoesNotExist":
                return None
            raise _failed(exc) from exc

    async def history(
        self, execution_arn: str, limit: int, token: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": limit}
        if token:
            kwargs["nextToken"] = token
        try:
            page = await self._sfn.get_execution_history(**kwargs)
        except ClientError as exc:
            code = error_code(exc)
            if code == "ExecutionDoesNotExist":
                raise NotFound("The execution's history is no longer available.") from exc
            if code in {"InvalidToken", "ValidationException"}:
                raise BadRequest("The history cursor is not valid.", field="cursor") from exc
            raise _failed(exc) from exc
        return page["events"], page.get("nextToken")

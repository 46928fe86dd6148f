"""Lambda invocations the API makes (the reconciler), with AWS errors translated once, here."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from app.aws.errors import error_code
from app.errors import UpstreamError


class Functions:
    def __init__(self, lambda_client: Any) -> None:
        self._lambda = lambda_client

    async def invoke(self, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Run the function and return its JSON answer; a function error is an UpstreamError
        naming its type only (never its message or stack: they may carry internals)."""
        try:
            answer = await self._lambda.invoke(FunctionName=name, Payload=json.dumps(payload).encode())
        except ClientError as exc:
            raise UpstreamError(f"Lambda refused to run {name}: {error_code(exc)}") from exc
        body = json.loads(await answer["Payload"].read() or b"null")
        if answer.get("FunctionError"):
            kind = body.get("errorType", "error") if isinstance(body, dict) else "error"
            raise UpstreamError(f"{name} failed: {kind}")
        if not isinstance(body, dict):
            raise UpstreamError(f"{name} answered something other than a JSON object")
        return body

    async def copy_live_parameters(self, reconciler: str) -> list[str]:
        """Copy the live parameters from SSM onto the validators' mirror now (the reconciler's
        Lambda does it, `{"source": "parameters"}`: one writer); the parameters copied. After an
        admin's SSM write: the error says the change is saved and when it arrives anyway."""
        try:
            answer = await self.invoke(reconciler, {"source": "parameters"})
        except UpstreamError as exc:
            raise UpstreamError(
                f"The change is saved in SSM, but running validations were not told ({exc.detail}): they follow "
                "it after the reconciler's next pass, or PATCH the same values again."
            ) from exc
        return [str(name) for name in answer.get("parameters", [])]

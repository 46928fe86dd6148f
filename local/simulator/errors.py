"""OpenAI's error answers: `{"error": {"message", "type", "param", "code"}}` with an HTTP status.

The Files and Batches modules raise `OpenAIError`; the app renders it once, in its exception
handler, so a route never builds an error body itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

INVALID_REQUEST = "invalid_request_error"


class OpenAIError(Exception):
    """An error OpenAI answers with its error body."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        error_type: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.error_type = error_type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}}


def invalid_value(param: str, value: object, supported: Iterable[str]) -> OpenAIError:
    """OpenAI's 400 for a parameter outside its values."""
    values = ", ".join(f"'{v}'" for v in supported)
    return OpenAIError(
        400, f"Invalid value: '{value}'. Supported values are: {values}.", param=param, code="invalid_value"
    )


def missing(param: str) -> OpenAIError:
    """OpenAI's 400 for a required parameter left out."""
    return OpenAIError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def not_found(kind: str, object_id: str) -> OpenAIError:
    """OpenAI's 404 for an id it does not hold ("No such File object: file-…")."""
    return OpenAIError(404, f"No such {kind} object: {object_id}", param="id")


# The simulator's injected 500 (`error_rate`, `batch_failure_rate`).
INJECTED_SERVER_ERROR = OpenAIError(500, "injected server error", error_type="server_error")

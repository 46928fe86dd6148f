"""What an AWS error means for the API, decided in one place (botocore's ClientError codes)."""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from app.errors import AppError, ServiceUnavailable, UpstreamError
from core.aws_codes import CONDITION_CODES, TRANSIENT_CODES

_UNREACHABLE = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError)
RETRY_AFTER_SECONDS = 1


def error_code(exc: ClientError) -> str:
    return str(exc.response["Error"]["Code"])


def condition_failed(exc: ClientError) -> bool:
    """A conditional write (or a transaction) lost: an expected outcome, not a failure."""
    return error_code(exc) in CONDITION_CODES


def aws_failure(exc: BaseException) -> AppError | None:
    """The problem to answer for an AWS call that failed unexpectedly: 503 (with Retry-After) when it
    was throttled or AWS was unavailable, else 502; None when `exc` is not an AWS error.

    The detail names the operation and the error code only: AWS messages carry ARNs, account
    ids and role names, which stay in the log."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        operation = getattr(exc, "operation_name", "") or "an AWS call"
        if code in TRANSIENT_CODES or status >= 500:
            return ServiceUnavailable(
                f"AWS is throttling or unavailable ({operation}: {code}); retry shortly.",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                aws_error=code,
            )
        return UpstreamError(f"An AWS call failed ({operation}: {code}).", aws_error=code)
    if isinstance(exc, _UNREACHABLE):
        return ServiceUnavailable(
            f"AWS is unreachable ({type(exc).__name__}); retry shortly.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            aws_error=type(exc).__name__,
        )
    if isinstance(exc, BotoCoreError):
        return UpstreamError(f"An AWS call failed ({type(exc).__name__}).", aws_error=type(exc).__name__)
    return None

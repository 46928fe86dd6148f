"""Errors the state machine tells apart by class name (ASL Retry/Catch `ErrorEquals`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from core.aws_codes import CONDITION_CODES, TRANSIENT_CODES


class RateLimited(Exception):
    """The model API answered 429. Retried with backoff and jitter."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FlexUnavailable(Exception):
    """Flex had no capacity (429 "resource unavailable") past the validation's flex deadline, and
    the validation chose to fail rather than fall back to the standard tier: the part fails."""


class UpstreamTimeout(Exception):
    """The model API did not answer in time. Retried."""


class ModelUnavailable(Exception):
    """The model API failed (5xx, connection, unreadable answer). Retried."""


class BatchIncomplete(Exception):
    """The invocation ran low on time; parts left are done by the retry (done ones are skipped)."""


class FileChanged(Exception):
    """An uploaded file's object is not the one read before (S3's 412 on `If-Match` its ETag), or
    is gone (`gone`). The plan step refuses the file; a validator fails the part with
    `file_changed`, not retried (it records it and goes on with the invocation's other parts)."""

    def __init__(self, gone: bool = False) -> None:
        super().__init__("is no longer stored" if gone else "was overwritten")
        self.gone = gone


class ModelRejected(Exception):
    """The model API refused the request (4xx other than 429). Not retried: the part fails."""


class CapacityUnavailable(Exception):
    """No call slot or no tokens in the global budget within the wait. Retried with backoff."""


class StoreUnavailable(Exception):
    """DynamoDB/S3 throttled, timed out or failed on their side. Retried with backoff."""


class InvalidAnswer(Exception):
    """The model's answer broke the schema or its rules (core/prompt.py).

    Retried; after the retries the part fails with the reason."""


class AnswerTooLong(Exception):
    """The answer was cut (finish_reason length) even at completion_max_tokens_cap. Not retried: the part fails."""


def failure_reason(error: dict[str, Any]) -> dict[str, str]:
    """Step Functions' caught error ({Error, Cause}) as a short reason for a part or a file."""
    kind = str(error.get("Error") or "Error")
    cause = error.get("Cause") or ""
    try:
        message = json.loads(cause).get("errorMessage", cause)
    except (ValueError, AttributeError):
        message = cause
    return {"type": kind, "message": str(message)[:1000]}


def aws_error_code(exc: ClientError) -> str:
    return str(exc.response["Error"]["Code"])


def is_condition_failure(exc: ClientError) -> bool:
    """The write's condition (or one of a transaction's) did not hold."""
    return aws_error_code(exc) in CONDITION_CODES


@contextmanager
def transient_aws_errors_retried() -> Iterator[None]:
    """Throttled, timed-out or failing AWS calls become StoreUnavailable, which the state machine retries."""
    try:
        yield
    except ClientError as exc:
        if aws_error_code(exc) in TRANSIENT_CODES:
            raise StoreUnavailable(str(exc)[:500]) from exc
        raise
    except BotoCoreError as exc:  # connection and read timeouts to AWS
        raise StoreUnavailable(f"{type(exc).__name__}: {exc}"[:500]) from exc


class DeliveryFailed(Exception):
    """A webhook delivery got no 2xx answer (an HTTP status, a timeout, a connection error).
    The notify state's Retry tries again with backoff."""


class TargetRefused(Exception):
    """The webhook's URL may not be called (scheme, or an address that is not public). Not retried."""


class WebhookGone(Exception):
    """The webhook's receiver answered 410 Gone: it wants no more deliveries. Not retried."""


class FilesRejected(Exception):
    """Every file of the validation failed the plan step's checks (core/text.py): nothing to
    validate. Not retried: the validation ends FAILED with each file's reason."""


class OverCapacity(Exception):
    """The planned files cost more tokens than the owner's quota capacity: the validation could
    never be admitted. Not retried: it ends FAILED naming both numbers."""

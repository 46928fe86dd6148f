"""What an AWS error means for the API, decided in one place (botocore's ClientError codes)."""

from __future__ import annotations

from botocore.exceptions import ClientError

_CONDITION_CODES = frozenset({"ConditionalCheckFailedException", "TransactionCanceledException"})


def error_code(exc: ClientError) -> str:
    return str(exc.response["Error"]["Code"])


def condition_failed(exc: ClientError) -> bool:
    """A conditional write (or a transaction) lost: an expected outcome, not a failure."""
    return error_code(exc) in _CONDITION_CODES

"""What AWS error codes mean, in one place for the API (aioboto3) and the Lambdas (boto3).

Plain data: botocore's `ClientError.response["Error"]["Code"]` values, no boto import.
"""

from __future__ import annotations

# A conditional write (or a transaction) that lost: an expected outcome, not a failure.
CONDITION_CODES = frozenset({"ConditionalCheckFailedException", "TransactionCanceledException"})

# Throttled or briefly unavailable: the same call may succeed shortly. The API answers 503 with
# Retry-After; a Lambda raises StoreUnavailable, which the state machine retries.
TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "TransactionConflictException",
        "TransactionInProgressException",
        "SlowDown",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalServerError",
        "InternalFailure",
        "InternalError",
    }
)

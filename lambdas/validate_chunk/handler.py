"""State `ValidateChunk`: validate one batch (a range of chunk ids) of a validation."""

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from lambdas.common.config import load_config
from lambdas.common.errors import StoreUnavailable
from lambdas.common.store import store_for
from lambdas.validate_chunk.validator import validate_batch

# AWS error codes that say "try again later", not "your request is wrong".
TRANSIENT = {
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
    "SlowDown",
}


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config = load_config()
    try:
        return validate_batch(
            store_for(config),
            config,
            event["validation_id"],
            int(event["run"]),
            event["chunks"],
            context.get_remaining_time_in_millis,
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] in TRANSIENT:
            raise StoreUnavailable(str(exc)[:500]) from exc
        raise
    except BotoCoreError as exc:  # connection and read timeouts to AWS
        raise StoreUnavailable(f"{type(exc).__name__}: {exc}"[:500]) from exc

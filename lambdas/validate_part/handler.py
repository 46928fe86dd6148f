"""State `ValidatePart`: validate one batch (a range of part ids) of a validation."""

from typing import Any

from lambdas.common.config import load_config
from lambdas.common.errors import transient_aws_errors_retried
from lambdas.common.observability import observed
from lambdas.common.stores import store_for
from lambdas.validate_part.validator import validate_batch


@observed
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config = load_config()
    with transient_aws_errors_retried():
        return validate_batch(
            store_for(config),
            config,
            event["validation_id"],
            int(event["run"]),
            event["parts"],
            context.get_remaining_time_in_millis,
        )

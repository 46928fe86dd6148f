"""State `CombineFile`: decide the rules for a range of multi-part files (lambdas/combine_file/combiner.py)."""

from typing import Any

from lambdas.combine_file.combiner import combine_files
from lambdas.common.config import load_config
from lambdas.common.errors import transient_aws_errors_retried
from lambdas.common.observability import observed
from lambdas.common.stores import store_for


@observed
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config = load_config()
    with transient_aws_errors_retried():
        return combine_files(
            store_for(config),
            config,
            event["validation_id"],
            int(event["run"]),
            event["files"],
            context.get_remaining_time_in_millis,
        )

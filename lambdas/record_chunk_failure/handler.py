"""State `RecordChunkFailure`: after retries ran out, mark the batch's unsettled chunks FAILED
with the reason, so the validation goes on and the chunks can be retried later."""

from typing import Any

from core.records import ChunkStatus
from lambdas.common.config import load_config
from lambdas.common.store import store_for
from lambdas.validate_chunk.validator import failure_reason


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    store = store_for(load_config())
    reason = failure_reason(event.get("error") or {})
    chunks = event["chunks"]
    failed = 0
    for chunk in store.chunks(event["validation_id"], chunks["first"], chunks["last"]):
        if chunk["status"] == ChunkStatus.PENDING and store.record_failure(event["validation_id"], chunk, reason):
            failed += 1
            store.after_chunk(event["validation_id"], int(event["run"]), chunk)
    return {"failed": failed, "reason": reason}

"""State `RecordPartFailure` (and `RecordCombineFailure`): once retries ran out, record why.

For a batch of parts (`parts`): its unsettled parts become FAILED with the reason. For a
range of files (`files`, from the combine step): each multi-part file still without a
verdict gets a FAILED verdict with the reason. Either way the validation goes on, ends
FAILED, and `retry` reruns just those.
"""

from typing import Any

from core.records import PartStatus
from lambdas.common.config import load_config
from lambdas.common.errors import failure_reason
from lambdas.common.observability import observed
from lambdas.common.stores import Store, store_for


def record_part_failures(
    store: Store, validation_id: str, run: int, parts: dict[str, str], reason: dict[str, str]
) -> int:
    record = store.validations.get(validation_id, "files", "rules")
    rule_ids = [r["id"] for r in record["rules"]]
    failed = 0
    for part in store.parts.in_range(validation_id, parts["first"], parts["last"]):
        if part["status"] == PartStatus.PENDING and store.parts.record_failure(validation_id, part, reason):
            failed += 1
            store.events.after_part(validation_id, run, part, record["files"][part["file_index"]], rule_ids)
    return failed


def record_combine_failures(
    store: Store, validation_id: str, run: int, files: dict[str, int], reason: dict[str, str]
) -> int:
    record = store.validations.get(validation_id, "files", "rules")
    failed = 0
    for index in range(int(files["first"]), int(files["last"]) + 1):
        if int(record["files"][index]["parts"]) <= 1 or store.parts.verdict(validation_id, index) is not None:
            continue
        if store.parts.record_verdict(validation_id, index, run, {"error": reason}, failed=True):
            failed += 1
        store.events.report_file(validation_id, run, index, record)
    return failed


@observed
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    store = store_for(load_config())
    reason = failure_reason(event.get("error") or {})
    validation_id, run = event["validation_id"], int(event["run"])
    if "files" in event:
        return {"failed": record_combine_failures(store, validation_id, run, event["files"], reason), "reason": reason}
    return {"failed": record_part_failures(store, validation_id, run, event["parts"], reason), "reason": reason}

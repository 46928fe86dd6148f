"""States `PlanFile` (one per uploaded file, in the `PlanFiles` Map) and `Planned`: the plan
step of a validation with files uploaded straight to S3 (app/uploads).

The API never reads an uploaded file: it stores the validation with the file's size, and a
reservation guessed from it (core/planning.size_guess). Before admission, the execution plans
each uploaded file here, with the code that plans inline files at submission:

- `PlanFile` reads the object (exactly the bytes confirmed at upload: GetObject IfMatch its
  ETag), checks the SHA-256 declared for a multipart upload (S3 checked only its parts),
  checks it is text (core/text.py: the inline path's rules), splits it into parts (the
  inline path's split) and writes their records, PENDING. A file that fails a check gets no
  parts; it answers why, and its result says it (FAILED, with `error`). A line-oriented file
  (text, JSONL, CSV, TSV) is read in ranges, over as many invocations as it takes
  (lambdas/plan_files/ranges.py): an invocation that stops early answers `more` with its
  cursor, and `PlanMore` invokes it again with it. A JSON or Markdown file is read whole
  (core/planning.plan_file), up to `plan_whole_file_max_bytes`; a bigger one is refused.
- `Planned` gathers the files' answers in one transaction (core/quota.plan_correction): the
  files' records, the parts' count, the estimate, and the reservation corrected from the
  guess (refunded or charged). It answers the execution's input with the new parts' id
  ranges added, and the execution goes on to `Admit`. When every file was rejected it
  raises FilesRejected, and when the plan costs more than the owner's capacity OverCapacity:
  the validation ends FAILED with the reasons (`MarkFailed`).

Both are safe to run again: part ids are the file's index and the part's position, and the
correction's condition (`unplanned` still on the record) makes it once.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from core import text
from core.detail import set_files
from core.parts import WHOLE_FILE_KINDS, suffix_kind
from core.planning import plan_file
from core.quota import plan_correction
from core.records import MAX_MAP_ITEMS, batches, file_batches, part_id
from lambdas.common.config import LambdaConfig, load_config
from lambdas.common.errors import FileChanged, FilesRejected, OverCapacity, aws_error_code, is_condition_failure
from lambdas.common.observability import count, observed
from lambdas.common.stores import Store, store_for
from lambdas.plan_files.ranges import MIB, new_cursor, plan_in_ranges

log = logging.getLogger(__name__)


def _rejected(kind: str, detail: str) -> dict[str, Any]:
    return {"rejected": {"type": kind, "detail": detail}}


def plan_one(
    store: Store,
    config: LambdaConfig,
    validation_id: str,
    run: int,
    index: int,
    cursor: dict[str, Any] | None = None,
    remaining_millis: Callable[[], int] = lambda: 900_000,
) -> dict[str, Any]:
    """Plan the uploaded file at `index` (further, from `cursor`): its parts written, and what
    `Planned` needs of it; or `more` with the cursor the next invocation goes on from."""
    v = store.validations.get(validation_id, "run", "status", "files", "rules", "expires_at")
    answer: dict[str, Any] = {"file_index": index}
    if v["run"] != run or v["status"] not in ("QUEUED", "RUNNING"):
        return {**answer, "gone": True}
    file = v["files"][index]
    rules = [{"id": r["id"], "text": r["text"]} for r in v["rules"]]
    if suffix_kind(file["name"]) in WHOLE_FILE_KINDS:
        return {**answer, **_plan_whole(store, config, validation_id, index, file, rules, int(v["expires_at"]))}
    planned = plan_in_ranges(
        store,
        config,
        validation_id,
        index,
        file,
        rules,
        int(v["expires_at"]),
        cursor or new_cursor(config),
        remaining_millis,
    )
    if planned.get("more"):  # the next PlanFile invocation's input (PlanMore)
        return {"validation_id": validation_id, "run": run, **answer, **planned}
    return {**answer, **planned}


def _plan_whole(
    store: Store,
    config: LambdaConfig,
    validation_id: str,
    index: int,
    file: dict[str, Any],
    rules: list[dict[str, str]],
    expires_at: int,
) -> dict[str, Any]:
    """A JSON or Markdown file, whose units need the whole document: read and planned in memory,
    up to `plan_whole_file_max_bytes` (the function's memory and time bound it)."""
    limit = config.plan_whole_file_max_bytes
    if int(file["size"]) > limit:
        return _rejected(
            "too_large",
            f"File {file['name']!r} is {int(file['size']) / MIB:.0f} MiB: a JSON or Markdown file is planned "
            f"whole, up to {limit / MIB:.0f} MiB. Split it, or upload its records as JSON Lines.",
        )
    try:
        content = store.files.whole(file["key"], file.get("etag"))
    except FileChanged as changed:
        after = "" if changed.gone else " after it was uploaded"
        return _rejected("file_changed", f"File {file['name']!r} {changed}{after}.")
    if len(content) != int(file["size"]):
        return _rejected("file_changed", f"File {file['name']!r} does not hold the bytes uploaded.")
    if file.get("sha256") and hashlib.sha256(content).hexdigest() != file["sha256"]:
        # A multipart upload's parts are checked by S3 one by one, the whole file only here.
        return _rejected("sha256_mismatch", f"File {file['name']!r} does not match its declared SHA-256.")
    try:
        text.check(file["name"], content)
    except text.NotText as refused:
        return _rejected("not_text", str(refused))
    if text.blank(content):
        return _rejected("empty", f"File {file['name']!r} is empty: nothing to validate.")
    planned = plan_file(
        validation_id,
        index,
        file["name"],
        file["key"],
        content,
        rules,
        config.part_max_tokens,
        config.completion_max_tokens,
    )
    del content
    store.parts.put_planned(planned.parts, expires_at)
    f = planned.file
    return {
        "parts": f["parts"],
        "kind": f["kind"],
        "last_line": f["last_line"],
        "combine_estimate": f["combine_estimate"],
        "estimate": planned.estimate,
    }


def _routes(validation_id: str, run: int, files: list[dict[str, Any]]) -> dict[str, Any]:
    """The execution's input once every file is planned: every part's id range, every multi-part file."""
    ids = [part_id(i, p) for i, f in enumerate(files) for p in range(int(f.get("parts", 0)))]
    return {
        "validation_id": validation_id,
        "run": run,
        "batches": batches(ids, MAX_MAP_ITEMS),
        "combine": file_batches([i for i, f in enumerate(files) if int(f.get("parts", 0)) > 1]),
        "gone": False,
    }


def gather(
    store: Store, config: LambdaConfig, validation_id: str, run: int, answers: list[dict[str, Any]]
) -> dict[str, Any]:
    """`Planned`: the files' plans onto the validation and the reservation corrected, in one transaction."""
    v = store.validations.get(
        validation_id,
        "id",
        "run",
        "status",
        "owner",
        "files",
        "rules",
        "unplanned",
        "inline_estimate",
        "total_parts",
        "reserved",
        "reserved_run",
        "settled_run",
    )
    if v["run"] != run or v["status"] not in ("QUEUED", "RUNNING"):
        return {"validation_id": validation_id, "run": run, "gone": True, "batches": [], "combine": []}
    files = [dict(f) for f in v["files"]]
    if not v.get("unplanned"):  # planned already (this state retried after its transaction)
        return _routes(validation_id, run, files)
    rejected = []
    added_parts, estimate = 0, int(v.get("inline_estimate") or 0)
    for answer in answers:
        index = int(answer["file_index"])
        if answer.get("gone"):
            return {"validation_id": validation_id, "run": run, "gone": True, "batches": [], "combine": []}
        file = files[index]
        file.pop("guess", None)
        if "rejected" in answer:
            file.update(parts=0, error=answer["rejected"])
            rejected.append(index)
            continue
        file.update(
            parts=answer["parts"],
            kind=answer["kind"],
            last_line=answer["last_line"],
            combine_estimate=answer["combine_estimate"],
        )
        added_parts += int(answer["parts"])
        estimate += int(answer["estimate"])
    if len(rejected) == len(files):  # no inline file, and every uploaded one refused
        reasons = "; ".join(files[i]["error"]["detail"] for i in rejected)
        raise FilesRejected(f"Every file was rejected: {reasons}"[:4000])
    quota, _ = store.users.limits_of(v["owner"])
    if quota is not None and estimate > quota.capacity_tokens:
        raise OverCapacity(
            f"The files need {estimate} tokens; the owner's quota capacity is {quota.capacity_tokens}. "
            "Split the batch or ask an admin for a larger quota."
        )
    sets = {
        "total_parts": int(v.get("total_parts", 0)) + added_parts,
        "total_combines": sum(int(f.get("parts", 0)) > 1 for f in files),
    }
    items = plan_correction(config.validations_table, config.buckets_table, v, quota, estimate, sets)
    items.append({"Update": set_files(config.parts_table, validation_id, files)})  # with the record
    try:
        store.clients.client.transact_write_items(TransactItems=items)
    except ClientError as exc:
        if aws_error_code(exc) != "TransactionCanceledException" and not is_condition_failure(exc):
            raise
        now = store.validations.get(validation_id, "run", "status", "files", "unplanned")
        if now["run"] == run and not now.get("unplanned"):  # another attempt of this state made it
            return _routes(validation_id, run, [dict(f) for f in now["files"]])
        return {"validation_id": validation_id, "run": run, "gone": True, "batches": [], "combine": []}
    count("FilesRejected", len(rejected))
    for index in rejected:  # their results are final: say so on the stream
        store.events.report_file(validation_id, run, index)
    store.events.emit_status(validation_id)  # the totals moved
    log.info(
        "validation %s planned: %d parts from %d uploaded files (%d rejected), estimate %d",
        validation_id,
        added_parts,
        len(answers),
        len(rejected),
        estimate,
    )
    return _routes(validation_id, run, files)


@observed
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config = load_config()
    store = store_for(config)
    validation_id, run = event["validation_id"], int(event["run"])
    if "file_index" in event:
        index, cursor = int(event["file_index"]), event.get("cursor")
        return plan_one(store, config, validation_id, run, index, cursor, context.get_remaining_time_in_millis)
    return gather(store, config, validation_id, run, event["planned"])

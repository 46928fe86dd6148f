"""Decide each rule for a whole multi-part file from its parts' reports.

A rule's verdict is about the file: "must contain X" passes when any part holds X, while
a line-level rule keeps every part's violations. The parts' answers alone cannot say
which, so one combine call per file decides: it sees each part's per-rule report
(passed, how many findings, one example, evidence) and answers per rule whether the
file passes, which reports' findings stand (kept by number, so their lines are the ones
the parts stored) and any whole-file finding. What it adds is held to the reports' grounded
quotes (core/grounding.py), and a pass of a rule that some part did not pass must rest on
grounded evidence: otherwise the rule is asked once more, then undecided.

Bounded tree: reports are grouped so that no combine prompt's reports exceed the part
budget (`part_max_tokens`, estimated from bytes: the Lambdas have no tokenizer); when a
file's reports need more than one call, each group's answer is a report of its own
(stored as an intermediate node) and the next level combines those, until one remains:
the file's verdict. Every node is stored once, so a retried invocation resumes where the
last stopped; every call goes through the TPM governor like a part call.

A tree larger than one invocation finishes (a gigabyte file's tree is tens of thousands of
calls): when time runs short after this invocation stored some of it, the answer says `more`
and the state machine invokes again (CombineMore), for as many invocations as the tree needs;
an invocation that stored nothing raises BatchIncomplete, which the Retry limits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core import grounding, prompt
from core.records import PartStatus, combine_node_id
from lambdas.common.config import LambdaConfig
from lambdas.common.errors import BatchIncomplete, InvalidAnswer
from lambdas.common.governor import Governor
from lambdas.common.model import Asker, Stopped, ask_grounded, asker_for, prompt_estimate_without_tokenizer
from lambdas.common.stores import Store


class TreeIncomplete(BatchIncomplete):
    """Time ran short in a file's tree after `calls` calls of this invocation (their nodes stored)."""

    def __init__(self, message: str, calls: int) -> None:
        super().__init__(message)
        self.calls = calls


def _report(item: dict[str, Any]) -> prompt.Report:
    return prompt.Report(int(item["first_line"]), int(item["last_line"]), list(item.get("rules") or []))


def combine_files(
    store: Store,
    config: LambdaConfig,
    validation_id: str,
    run: int,
    files: dict[str, int],
    remaining_millis: Callable[[], int],
    governor: Governor | None = None,
) -> dict[str, Any]:
    current = store.validations.get(validation_id, "rules", "files", "reuse")
    rules, file_records = current["rules"], current["files"]
    reuse = bool(current.get("reuse", True)) and bool(config.reuse_table)
    asker = asker_for(store, config, validation_id, run, remaining_millis, governor)
    combined = skipped = calls = 0
    try:
        for index in range(int(files["first"]), int(files["last"]) + 1):
            file = file_records[index]
            if int(file["parts"]) <= 1:
                continue
            if store.parts.verdict(validation_id, index) is not None:
                skipped += 1
                store.events.report_file(validation_id, run, index, current)
                continue
            parts = store.parts.of_file(validation_id, index)
            if any(p["status"] != PartStatus.SUCCEEDED for p in parts):
                store.events.report_file(
                    validation_id, run, index, current
                )  # FAILED: some part has no result; retry reruns it
                continue
            checks = {"relocated": 0, "ungrounded": 0, "reasked": 0}
            try:
                verdict, made = _combine_file(
                    store, config, asker, validation_id, index, file, parts, rules, remaining_millis, checks, reuse
                )
            except Stopped:
                return {"combined": combined, "skipped": skipped, "calls": calls, "stopped": True, "more": False}
            except TreeIncomplete as short:
                if not (combined or calls or short.calls):
                    raise  # nothing stored by this invocation: the Retry's business
                calls += short.calls
                return {"combined": combined, "skipped": skipped, "calls": calls, "stopped": False, "more": True}
            calls += made
            fields = {
                "rules": verdict.verdicts,
                "first_line": verdict.first_line,
                "last_line": verdict.last_line,
                "combine_calls": made,
            }
            if store.parts.record_verdict(validation_id, index, run, fields, failed=False, checks=checks):
                combined += 1
            store.events.report_file(validation_id, run, index, current)
    finally:
        asker.lease.close()
    return {"combined": combined, "skipped": skipped, "calls": calls, "stopped": False, "more": False}


def _ask_combine(
    asker: Asker,
    messages: list[dict[str, str]],
    rules: list[dict[str, str]],
    group: list[prompt.Report],
    file: dict[str, Any],
    level: int,
    last_line: int,
    checks: dict[str, int],
) -> tuple[prompt.Report, int]:
    """One combine node's report, its added findings and evidence held to the reports' grounded
    quotes (core/grounding.py); a rule left unbacked is asked once more, then undecided."""
    span = (group[0].first_line, group[-1].last_line)
    what = f"file {file['name']!r}, combine level {level}"

    def ground(content: str) -> grounding.Grounded:
        try:
            verdicts, kept = prompt.parse_combine_answer(content, rules, group)
        except prompt.InvalidAnswer as exc:
            raise InvalidAnswer(f"{what}: {exc}") from exc
        return grounding.ground_combine(verdicts, [r.verdicts for r in group], kept, span, last_line)

    estimate = prompt_estimate_without_tokenizer(messages)
    judged = ask_grounded(asker, messages, prompt.COMBINE_RESPONSE_FORMAT, estimate, ground, what)
    for key, value in judged.counters().items():
        checks[key] += value
    return prompt.Report(span[0], span[1], judged.grounded.verdicts), judged.calls


def _combine_file(
    store: Store,
    config: LambdaConfig,
    asker: Asker,
    validation_id: str,
    index: int,
    file: dict[str, Any],
    parts: list[dict[str, Any]],
    rules: list[dict[str, str]],
    remaining_millis: Callable[[], int],
    checks: dict[str, int],
    reuse: bool = False,
) -> tuple[prompt.Report, int]:
    """The file's verdict through the tree; (verdict, calls made by this invocation)."""
    last_line = int(file.get("last_line") or parts[-1]["last_line"])
    reports = [_report(p) for p in parts]
    level, calls = 1, 0
    while True:
        grouped = prompt.combine_groups(reports, config.part_max_tokens)
        next_level: list[prompt.Report] = []
        for position, group in enumerate(grouped):
            node = combine_node_id(index, level, position)
            stored = store.parts.combine_node(validation_id, node) if len(grouped) > 1 else None
            if stored is not None:
                next_level.append(_report(stored))
                continue
            if remaining_millis() < config.reserve_millis:
                raise TreeIncomplete(f"file {index}: time running out during the combine step", calls)
            digest = (
                prompt.question_digest(
                    prompt.combine_messages(file["name"], last_line, group, rules, prompt.ESTIMATE_NONCE),
                    asker.model_name,
                )
                if reuse
                else None
            )
            kept = store.answers.stored(digest) if digest else None
            if kept is not None:  # the same reports were combined before: that answer, no call
                report = prompt.Report(int(kept["first_line"]), int(kept["last_line"]), list(kept["rules"]))
            else:
                messages = prompt.combine_messages(file["name"], last_line, group, rules, prompt.new_nonce())
                report, made = _ask_combine(asker, messages, rules, group, file, level, last_line, checks)
                calls += made
                if digest and report.verdicts and not any(v.get("passed") is None for v in report.verdicts):
                    store.answers.store(  # only grounded answers are reused
                        digest,
                        {"rules": report.verdicts, "first_line": report.first_line, "last_line": report.last_line},
                    )
            if len(grouped) == 1:
                return report, calls
            item = {"rules": report.verdicts, "first_line": report.first_line, "last_line": report.last_line}
            next_level.append(_report(store.parts.put_combine_node(validation_id, node, index, item)))
        reports, level = next_level, level + 1

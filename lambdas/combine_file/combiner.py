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

A level's groups not stored yet are asked side by side, up to k at once (the plan's
`calls_per_invocation`, core/headroom.py), exactly as the validator asks its parts
(lambdas/common/calls.py): each worker with an Asker of its own (its own call slot below the
validation's live parallelism, its own grants), the live cap read again as they go, each
group's node stored as soon as it is answered; the first error stops new calls, and is
raised once the calls in flight are answered and stored. The next level is built only when
every group of this one is stored. The combine Map often runs fewer invocations than its
width (a gigabyte file is one item), so a combine invocation's part of the live cap is
counted over the invocations that run at once (`headroom.workers` with the plan's
`combine_items`). With k = 1 the groups are asked one at a time in the invocation's own
thread, with one Asker for the whole invocation.

A tree larger than one invocation finishes (a gigabyte file's tree is tens of thousands of
calls): when time runs short after this invocation stored some of it, the answer says `more`
and the state machine invokes again (CombineMore), for as many invocations as the tree needs;
an invocation that stored nothing raises BatchIncomplete, which the Retry limits. A wait for a
call slot or tokens that gives up (CapacityUnavailable) is treated alike: with nodes stored by
this invocation it answers `more` (the next round waits again, whole), without it raises.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core import grounding, headroom, prompt
from core.records import PartStatus, combine_node_id
from lambdas.common import calls as calls_at_once
from lambdas.common.config import LambdaConfig
from lambdas.common.errors import BatchIncomplete, CapacityUnavailable, InvalidAnswer
from lambdas.common.governor import Governor
from lambdas.common.model import Asker, Askers, Stopped, ask_grounded, askers_for, prompt_estimate_without_tokenizer
from lambdas.common.stores import Store


class TreeIncomplete(BatchIncomplete):
    """Time ran short in a file's tree after `calls` calls of this invocation (their nodes stored)."""

    def __init__(self, message: str, calls: int) -> None:
        super().__init__(message)
        self.calls = calls


class _OutOfTime(Exception):
    """A group found too little time left to be asked (TreeIncomplete once the calls in flight ended)."""


def _report(item: dict[str, Any]) -> prompt.Report:
    return prompt.Report(int(item["first_line"]), int(item["last_line"]), list(item.get("rules") or []))


@dataclass(frozen=True)
class CombineAskers(Askers):
    """The invocation's Askers, its workers counted as a combine invocation's part of the live cap:
    over the combine Map's invocations that run at once (its width, or its items when fewer)."""

    def workers(self) -> int:
        return headroom.workers(self.cap(), self.plan, self.plan.get("combine_items"))


class _Callers:
    """How one invocation asks a level's groups: up to k at once (calls.handle_all), or with k = 1
    one at a time in the invocation's thread, with one Asker for the whole invocation."""

    def __init__(self, askers: Askers) -> None:
        self.askers = askers
        self._one = askers.new() if askers.limit <= 1 else None

    def each(self, items: Sequence[int], handle: Callable[[Asker, int], None]) -> None:
        """`handle(asker, item)` for every item; raises Stopped, or the first error (after the calls in flight)."""
        if self._one is not None:
            for item in items:
                handle(self._one, item)
        elif calls_at_once.handle_all(items, handle, self.askers):
            raise Stopped()

    def close(self) -> None:
        if self._one is not None:
            self._one.lease.close()


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
    askers = askers_for(store, config, validation_id, run, remaining_millis, governor)
    callers = _Callers(CombineAskers(askers.new, askers.cap, askers.plan, askers.model))
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
                    store, config, callers, validation_id, index, file, parts, rules, remaining_millis, checks, reuse
                )
            except Stopped:
                return {"combined": combined, "skipped": skipped, "calls": calls, "stopped": True, "more": False}
            except CapacityUnavailable:
                if not (combined or calls):
                    raise  # nothing stored by this invocation: the Retry's backoff
                return {"combined": combined, "skipped": skipped, "calls": calls, "stopped": False, "more": True}
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
        callers.close()
    return {"combined": combined, "skipped": skipped, "calls": calls, "stopped": False, "more": False}


def _ask_combine(
    asker: Asker,
    messages: list[dict[str, str]],
    rules: list[dict[str, str]],
    group: list[prompt.Report],
    file: dict[str, Any],
    level: int,
    last_line: int,
) -> tuple[prompt.Report, int, dict[str, int]]:
    """One combine node's report, its added findings and evidence held to the reports' grounded
    quotes (core/grounding.py); a rule left unbacked is asked once more, then undecided.
    (report, calls made, what the check did: relocated, ungrounded, reasked)."""
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
    return prompt.Report(span[0], span[1], judged.grounded.verdicts), judged.calls, judged.counters()


@dataclass
class _Tree:
    """One file's tree in one invocation: its levels' groups asked (or found stored), and what
    this invocation's calls made and their checks counted (from every worker, under `lock`)."""

    store: Store
    config: LambdaConfig
    callers: _Callers
    validation_id: str
    index: int
    file: dict[str, Any]
    rules: list[dict[str, str]]
    remaining_millis: Callable[[], int]
    checks: dict[str, int]
    reuse: bool
    last_line: int
    calls: int = 0

    def __post_init__(self) -> None:
        self.lock = threading.Lock()

    def level(self, level: int, grouped: list[list[prompt.Report]]) -> list[prompt.Report]:
        """The level's reports, in the groups' order: stored ones read, the others asked (up to k at
        once) and stored as each is answered. A single group is the file's verdict, not stored."""
        answered: dict[int, prompt.Report] = {}

        def combine(asker: Asker, position: int) -> None:
            report = self._group(asker, level, position, grouped)
            with self.lock:
                answered[position] = report

        try:
            self.callers.each(range(len(grouped)), combine)
        except _OutOfTime:
            raise TreeIncomplete(f"file {self.index}: time running out during the combine step", self.calls) from None
        except CapacityUnavailable:
            if not self.calls:
                raise
            # A wait is bounded by the invocation's time left: the next round waits again, whole.
            raise TreeIncomplete(f"file {self.index}: no capacity within the wait left", self.calls) from None
        return [answered[position] for position in range(len(grouped))]

    def _group(self, asker: Asker, level: int, position: int, grouped: list[list[prompt.Report]]) -> prompt.Report:
        group, top = grouped[position], len(grouped) == 1
        node = combine_node_id(self.index, level, position)
        stored = None if top else self.store.parts.combine_node(self.validation_id, node)
        if stored is not None:
            return _report(stored)
        if self.remaining_millis() < self.config.reserve_millis:
            raise _OutOfTime()
        name, rules = self.file["name"], self.rules
        digest = (
            prompt.question_digest(
                prompt.combine_messages(name, self.last_line, group, rules, prompt.ESTIMATE_NONCE),
                self.callers.askers.model,
            )
            if self.reuse
            else None
        )
        kept = self.store.answers.stored(digest) if digest else None
        if kept is not None:  # the same reports were combined before: that answer, no call
            report = prompt.Report(int(kept["first_line"]), int(kept["last_line"]), list(kept["rules"]))
        else:
            messages = prompt.combine_messages(name, self.last_line, group, rules, prompt.new_nonce())
            report, made, counters = _ask_combine(asker, messages, rules, group, self.file, level, self.last_line)
            with self.lock:
                self.calls += made
                for key, value in counters.items():
                    self.checks[key] += value
            if digest and report.verdicts and not any(v.get("passed") is None for v in report.verdicts):
                self.store.answers.store(  # only grounded answers are reused
                    digest,
                    {"rules": report.verdicts, "first_line": report.first_line, "last_line": report.last_line},
                )
        if top:
            return report
        item = {"rules": report.verdicts, "first_line": report.first_line, "last_line": report.last_line}
        return _report(self.store.parts.put_combine_node(self.validation_id, node, self.index, item))


def _combine_file(
    store: Store,
    config: LambdaConfig,
    callers: _Callers,
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
    tree = _Tree(store, config, callers, validation_id, index, file, rules, remaining_millis, checks, reuse, last_line)
    reports, level = [_report(p) for p in parts], 1
    while True:
        grouped = prompt.combine_groups(reports, config.part_max_tokens)
        reports = tree.level(level, grouped)
        if len(grouped) == 1:
            return reports[0], tree.calls
        level += 1

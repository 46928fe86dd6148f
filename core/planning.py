"""A file's plan: its parts (byte and line ranges within a token budget) and what they are
estimated to cost, in tokens. The same code plans files sent inline (the API, at submission)
and files uploaded straight to S3 (the plan step in the state machine, lambdas/plan_files).

A part's estimate is what the governor and the quota reserve for its call: the prompt
(instructions, rules, the file's name, a header row or JSON path where the part needs one,
the part's numbered lines) plus the completion allowance. A multi-part file adds its combine
step's calls: a bounded tree over its parts' reports, estimated from typical report sizes (the
Lambda measures the real ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core import prompt
from core.bounds import line_count
from core.parts import PartSpan, split_file
from core.records import PartStatus, part_id
from core.tokens import count_tokens

# A combine prompt's report per part, for estimates only: a few dozen tokens per rule.
REPORT_TOKENS_PER_RULE = 60
REPORT_TOKENS_BASE = 40
# What a file of unknown text costs per byte before it is planned: about four bytes a token
# (English prose and CSV), for the reservation an uploaded file gets until the plan step counts it.
BYTES_PER_TOKEN_GUESS = 4


def combine_calls(parts: int, fan_in: int) -> int:
    """Calls of a bounded combine tree over `parts` reports, `fan_in` reports per call."""
    calls, level = 0, parts
    while level > 1:
        level = -(-level // fan_in)
        calls += level
    return calls


def combine_plan(name: str, parts: int, rules: list[dict[str, str]], budget: int) -> tuple[int, int]:
    """(calls, prompt tokens) of a file's combine step, estimated: the reports do not exist yet."""
    if parts <= 1:
        return 0, 0
    report = REPORT_TOKENS_BASE + REPORT_TOKENS_PER_RULE * len(rules)
    fan_in = max(2, budget // report)
    per_call = prompt.combine_overhead_tokens(name, rules) + min(budget, fan_in * report, parts * report)
    calls = combine_calls(parts, fan_in)
    return calls, calls * per_call


@dataclass(frozen=True)
class FilePlan:
    """One file planned: its record on the validation (`file`), its parts' records, and the
    tokens they are estimated at (every part call and combine call, prompt and completion)."""

    file: dict[str, Any]
    parts: list[dict[str, Any]]
    estimate: int


@dataclass(frozen=True)
class PartCosts:
    """What a file's parts are estimated at: the same for a file split whole and one split range
    by range (lambdas/plan_files), which knows whether it has several parts once it has two."""

    validation_id: str
    index: int
    name: str
    key: str
    rules: list[dict[str, str]]
    completion_tokens: int
    _overheads: dict[tuple[bool, bool], int] = field(default_factory=dict, compare=False, repr=False)

    def _overhead(self, multi: bool, header: bool) -> int:
        key = (multi, header)
        if key not in self._overheads:  # a prompt's tokens, counted once per file, not once per part
            self._overheads[key] = prompt.part_overhead_tokens(self.name, self.rules, multi=multi, header=header)
        return self._overheads[key]

    def record(self, position: int, span: PartSpan, multi: bool) -> dict[str, Any]:
        """The part's record, PENDING, with its estimate."""
        overhead = self._overhead(multi, span.header is not None)
        context = (span.header.tokens if span.header else 0) + (
            count_tokens(span.json_path) + 8 if span.json_path else 0
        )
        record: dict[str, Any] = {
            "validation_id": self.validation_id,
            "part_id": part_id(self.index, position),
            "file_index": self.index,
            "key": self.key,
            "start_byte": span.start_byte,
            "end_byte": span.end_byte,
            "first_line": span.first_line,
            "last_line": span.last_line,
            "tokens": span.tokens,
            "estimate": overhead + context + span.tokens + self.completion_tokens,
            "status": PartStatus.PENDING.value,
        }
        if span.header is not None:
            h = span.header
            record["header"] = {
                "start_byte": h.start_byte,
                "end_byte": h.end_byte,
                "first_line": h.first_line,
                "last_line": h.last_line,
            }
        if span.json_path:
            record["json_path"] = span.json_path
        return record

    def combine(self, parts: int, budget: int) -> tuple[int, int]:
        """(calls, tokens) of the file's combine step, completions included."""
        calls, prompt_tokens = combine_plan(self.name, parts, self.rules, budget)
        return calls, prompt_tokens + calls * self.completion_tokens


def plan_file(
    validation_id: str,
    index: int,
    name: str,
    key: str,
    content: bytes,
    rules: list[dict[str, str]],
    budget: int,
    completion_tokens: int,
) -> FilePlan:
    spans = split_file(name, content, budget)
    costs = PartCosts(validation_id, index, name, key, rules, completion_tokens)
    combine_count, combine = costs.combine(len(spans), budget)
    file = {
        "name": name,
        "key": key,
        "size": len(content),
        "parts": len(spans),
        "kind": spans[0].kind,
        "last_line": max(1, line_count(content)),  # a BOM holds no line break
        "combine_estimate": combine,
        "combine_calls": combine_count,  # not stored: the dry run and the budget read it
    }
    parts = [costs.record(position, span, len(spans) > 1) for position, span in enumerate(spans)]
    return FilePlan(file, parts, combine + sum(int(p["estimate"]) for p in parts))


def size_guess(
    name: str, size: int, rules: list[dict[str, str]], budget: int, completion_tokens: int
) -> tuple[int, int]:
    """(tokens, calls) a file of `size` bytes is guessed at before its text is read: the
    reservation of an uploaded file until the plan step counts it (and corrects the reservation)."""
    text = -(-size // BYTES_PER_TOKEN_GUESS)
    parts = max(1, -(-text // budget))
    overhead = prompt.part_overhead_tokens(name, rules, multi=parts > 1)
    combine_count, combine_prompt = combine_plan(name, parts, rules, budget)
    tokens = text + parts * (overhead + completion_tokens) + combine_prompt + combine_count * completion_tokens
    return tokens, parts + combine_count

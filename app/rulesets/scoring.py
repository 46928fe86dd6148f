"""A rule test's report, from the test validation's results: pure, no I/O.

A test validation judges every example of a version (one file each, `example_file`) against
every rule of the version. Each example is scored only against its own rule; the verdicts of
the other rules on it are ignored. Per rule, each of its examples is one of:

- **TP** (true positive): it violates the rule and the rule failed (`passed: false`);
- **FN** (false negative): it violates the rule and the rule passed;
- **FP** (false positive): it does not violate the rule and the rule failed;
- **TN** (true negative): it does not violate the rule and the rule passed;
- **undecided**: the rule has no verdict for it (`passed: null`: the model never backed a
  failure with a quote found in the text, or the file failed, or the test ended before it
  was judged). Counted apart, in none of the four, and left out of every ratio.

precision = TP / (TP + FP) and recall = TP / (TP + FN); each is null (never a made-up
number) when its denominator is 0: no example was flagged, or no example violates.

**Line-exact**: an example that violates the rule and gives `lines` is line-exact when the
rule failed on it and the lines its findings cite, each finding `line`..`end_line` inclusive,
all together, are exactly the example's `lines` (no line missing, no other line). Line
accuracy = line-exact / the decided violating examples that give `lines`; null when there are none.

**Failing examples**: every example not judged as expected: FP, FN, undecided, or a TP that
gives `lines` and is not line-exact (`wrong_lines`), each with the model's findings on it
(the first MAX_FINDINGS_SHOWN, their messages cut to MESSAGE_CHARS).

The overall precision and recall of a report add up the rules' counts (micro-average).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from app.rulesets.records import StoredRule

MAX_FINDINGS_SHOWN = 5  # per failing example: the report is stored on the version (DynamoDB: 400 KB an item)
MESSAGE_CHARS = 200

Outcome = Literal["tp", "fp", "fn", "tn", "undecided"]
Failure = Literal["false_positive", "false_negative", "wrong_lines", "undecided"]


def example_file(rule_id: str, n: int) -> str:
    """The file name of a rule's `n`-th example (1-based) in its test validation (no path separator:
    the service names files by their base name)."""
    return f"{rule_id}.example-{n}.txt"


def ratio(numerator: int, denominator: int) -> float | None:
    """numerator / denominator; None when the denominator is 0 (undefined, never a made-up number)."""
    return numerator / denominator if denominator else None


def outcome(violates: bool, passed: bool | None) -> Outcome:
    if passed is None:
        return "undecided"
    if violates:
        return "fn" if passed else "tp"
    return "tn" if passed else "fp"


def cited_lines(findings: Iterable[Mapping[str, Any]]) -> frozenset[int]:
    """Every line the findings cite, each `line`..`end_line` inclusive (a finding without a line cites none)."""
    lines: set[int] = set()
    for finding in findings:
        first = finding.get("line")
        if not isinstance(first, int) or isinstance(first, bool):
            continue
        last = finding.get("end_line")
        last = last if isinstance(last, int) and not isinstance(last, bool) and last >= first else first
        lines.update(range(first, last + 1))
    return frozenset(lines)


def line_exact(expected: Sequence[int], passed: bool | None, findings: Iterable[Mapping[str, Any]]) -> bool:
    """A violating example's verdict is line-exact: failed, citing exactly the `expected` lines."""
    return passed is False and cited_lines(findings) == frozenset(expected)


@dataclass(frozen=True)
class FindingShown:
    line: int | None
    end_line: int | None
    message: str

    @classmethod
    def of(cls, item: Mapping[str, Any]) -> FindingShown:
        line, end_line = item.get("line"), item.get("end_line")
        return cls(
            int(line) if line is not None else None,
            int(end_line) if end_line is not None else None,
            str(item.get("message", ""))[:MESSAGE_CHARS],
        )

    def to_item(self) -> dict[str, Any]:
        return {"line": self.line, "end_line": self.end_line, "message": self.message}


@dataclass(frozen=True)
class FailingExample:
    example: int  # 1-based, within its rule
    file: str
    violates: bool
    lines: tuple[int, ...]
    failure: Failure
    passed: bool | None
    undecided: str | None
    findings: tuple[FindingShown, ...]
    more_findings: int = 0  # findings beyond those shown

    @classmethod
    def of(cls, item: Mapping[str, Any]) -> FailingExample:
        return cls(
            example=int(item["example"]),
            file=str(item["file"]),
            violates=bool(item["violates"]),
            lines=tuple(int(n) for n in item.get("lines") or ()),
            failure=item["failure"],
            passed=item.get("passed"),
            undecided=item.get("undecided"),
            findings=tuple(FindingShown.of(f) for f in item.get("findings") or ()),
            more_findings=int(item.get("more_findings", 0)),
        )

    def to_item(self) -> dict[str, Any]:
        return {
            "example": self.example,
            "file": self.file,
            "violates": self.violates,
            "lines": list(self.lines),
            "failure": self.failure,
            "passed": self.passed,
            "undecided": self.undecided,
            "findings": [f.to_item() for f in self.findings],
            "more_findings": self.more_findings,
        }


@dataclass(frozen=True)
class RuleScore:
    rule_id: str
    examples: int
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    undecided: int = 0
    lines_checked: int = 0  # decided violating examples that give `lines`
    lines_exact: int = 0  # of those, the line-exact ones
    failing: tuple[FailingExample, ...] = ()

    @property
    def precision(self) -> float | None:
        return ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float | None:
        return ratio(self.tp, self.tp + self.fn)

    @property
    def line_accuracy(self) -> float | None:
        return ratio(self.lines_exact, self.lines_checked)

    @classmethod
    def of(cls, item: Mapping[str, Any]) -> RuleScore:
        counts = {k: int(item.get(k, 0)) for k in ("tp", "fp", "fn", "tn", "undecided", "lines_checked", "lines_exact")}
        failing = tuple(FailingExample.of(f) for f in item.get("failing") or ())
        return cls(rule_id=str(item["rule_id"]), examples=int(item["examples"]), failing=failing, **counts)

    def to_item(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "examples": self.examples,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
            "undecided": self.undecided,
            "lines_checked": self.lines_checked,
            "lines_exact": self.lines_exact,
            "failing": [f.to_item() for f in self.failing],
        }


@dataclass(frozen=True)
class Report:
    """A version's test report: computed once, after the test validation ended, and stored on the version."""

    validation_id: str
    status: str  # the test validation's final status
    computed_at: str
    rules: tuple[RuleScore, ...]

    @property
    def precision(self) -> float | None:
        return ratio(sum(r.tp for r in self.rules), sum(r.tp + r.fp for r in self.rules))

    @property
    def recall(self) -> float | None:
        return ratio(sum(r.tp for r in self.rules), sum(r.tp + r.fn for r in self.rules))

    @classmethod
    def of(cls, item: Mapping[str, Any]) -> Report:
        return cls(
            validation_id=str(item["validation_id"]),
            status=str(item["status"]),
            computed_at=str(item["computed_at"]),
            rules=tuple(RuleScore.of(r) for r in item["rules"]),
        )

    def to_item(self) -> dict[str, Any]:
        return {
            "validation_id": self.validation_id,
            "status": self.status,
            "computed_at": self.computed_at,
            "rules": [r.to_item() for r in self.rules],
        }


_FAILURES: dict[Outcome, Failure] = {"fp": "false_positive", "fn": "false_negative", "undecided": "undecided"}


def _undecided_reason(verdict: Mapping[str, Any]) -> str | None:
    """Why a rule has no verdict: the result's `undecided` ("ungrounded", "error"); "missing" when the
    results hold no verdict for it at all; None while the file had not ended (a cancelled test)."""
    if not verdict:
        return "missing"
    reason = verdict.get("undecided")
    return str(reason) if reason else None


def _verdict(result: Mapping[str, Any] | None, rule_id: str) -> Mapping[str, Any]:
    """The rule's verdict in a file's result ({} when the file or the rule is missing: undecided)."""
    for verdict in (result or {}).get("rules") or ():
        if verdict.get("id") == rule_id:
            return verdict
    return {}


def score_rule(rule: StoredRule, results: Mapping[str, Mapping[str, Any]]) -> RuleScore:
    """One rule's score over its own examples; `results` maps a file name to its FileResult."""
    counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0, "undecided": 0}
    checked = exact = 0
    failing: list[FailingExample] = []
    for n, example in enumerate(rule.examples, start=1):
        file = example_file(rule.id, n)
        verdict = _verdict(results.get(file), rule.id)
        passed = verdict.get("passed")
        passed = passed if isinstance(passed, bool) else None
        findings = list(verdict.get("findings") or ())
        kind = outcome(example.violates, passed)
        counts[kind] += 1
        failure = _FAILURES.get(kind)
        if example.violates and example.lines and passed is not None:
            checked += 1
            if line_exact(example.lines, passed, findings):
                exact += 1
            elif kind == "tp":
                failure = "wrong_lines"
        if failure is not None:
            failing.append(
                FailingExample(
                    example=n,
                    file=file,
                    violates=example.violates,
                    lines=example.lines,
                    failure=failure,
                    passed=passed,
                    undecided=_undecided_reason(verdict) if passed is None else None,
                    findings=tuple(FindingShown.of(f) for f in findings[:MAX_FINDINGS_SHOWN]),
                    more_findings=max(0, len(findings) - MAX_FINDINGS_SHOWN),
                )
            )
    return RuleScore(
        rule.id, len(rule.examples), lines_checked=checked, lines_exact=exact, failing=tuple(failing), **counts
    )


def score(
    rules: Sequence[StoredRule],
    results: Iterable[Mapping[str, Any]],
    *,
    validation_id: str,
    status: str,
    computed_at: str,
) -> Report:
    """The report of a test validation from its results (FileResult shapes, any order)."""
    by_file = {str(r.get("file")): r for r in results}
    return Report(validation_id, status, computed_at, tuple(score_rule(rule, by_file) for rule in rules))

"""A rule test's report (app/rulesets/scoring.py), checked against tables worked out by hand."""

from __future__ import annotations

from typing import Any

import pytest

from app.rulesets.records import Example, StoredRule
from app.rulesets.scoring import (
    MAX_FINDINGS_SHOWN,
    Report,
    cited_lines,
    example_file,
    line_exact,
    outcome,
    ratio,
    score,
)
from core.dynamo import from_item, to_item


def finding(line: int | None, end_line: int | None = None, message: str = "m") -> dict[str, Any]:
    return {"line": line, "end_line": end_line if end_line is not None else line, "message": message}


def verdict(
    rule_id: str, passed: bool | None, *findings: dict[str, Any], undecided: str | None = None
) -> dict[str, Any]:
    return {"id": rule_id, "passed": passed, "findings": list(findings), "undecided": undecided}


def result(file: str, *verdicts: dict[str, Any]) -> dict[str, Any]:
    return {"file": file, "status": "SUCCEEDED", "rules": list(verdicts), "parts": {"total": 1}}


SECRET = StoredRule(
    "no-secret",
    'The file must not contain "secret".',
    (
        Example("id\nthe secret\n", True, (2,)),  # 1: failed at line 2 → TP, line-exact
        Example("secret\nx\nsecret\n", True, (1, 3)),  # 2: failed at line 1 only → TP, wrong lines
        Example("a secret\n", True),  # 3: passed → FN
        Example("clean\n", False),  # 4: failed → FP
        Example("clean too\n", False),  # 5: passed → TN
        Example("x\nsecret\n", True, (2,)),  # 6: no verdict (ungrounded) → undecided
    ),
)
TOTAL = StoredRule(
    "has-total",
    'The file must contain "total".',
    (
        Example("a\nb\nc\n", True, (1, 2, 3)),  # 1: failed, an absence finding over lines 1-3 → TP, line-exact
        Example("total 3\n", False),  # 2: passed → TN
    ),
)
EMPTY = StoredRule("polite", "Be polite.")  # no examples: nothing measured


def results() -> list[dict[str, Any]]:
    """The test validation's results: every example judged by every rule; each other rule's verdict is
    wrong on purpose (it must not count)."""
    s, t = SECRET.id, TOTAL.id
    return [
        result(example_file(s, 1), verdict(s, False, finding(2)), verdict(t, True), verdict("polite", False)),
        result(example_file(s, 2), verdict(s, False, finding(1)), verdict(t, True)),
        result(example_file(s, 3), verdict(s, True), verdict(t, False, finding(1))),
        result(example_file(s, 4), verdict(s, False, finding(1, message="looks secret")), verdict(t, True)),
        result(example_file(s, 5), verdict(s, True), verdict(t, False, finding(1))),
        result(example_file(s, 6), verdict(s, None, undecided="ungrounded"), verdict(t, True)),
        result(example_file(t, 1), verdict(s, False, finding(3)), verdict(t, False, finding(1, 3))),
        result(example_file(t, 2), verdict(s, False, finding(1)), verdict(t, True)),
    ]


def test_the_report_matches_the_table_worked_out_by_hand() -> None:
    report = score([SECRET, TOTAL, EMPTY], reversed(results()), validation_id="v1", status="SUCCEEDED",
                   computed_at="2025-01-01T00:00:00.000Z")  # fmt: skip
    secret, total, empty = report.rules

    #                     examples TP FP FN TN undecided lines-checked lines-exact
    assert (secret.examples, secret.tp, secret.fp, secret.fn, secret.tn, secret.undecided) == (6, 2, 1, 1, 1, 1)
    assert (secret.lines_checked, secret.lines_exact) == (2, 1)  # examples 1 and 2 (6 is undecided)
    assert secret.precision == pytest.approx(2 / 3) and secret.recall == pytest.approx(2 / 3)
    assert secret.line_accuracy == 0.5
    assert [(f.example, f.failure, f.passed, f.undecided) for f in secret.failing] == [
        (2, "wrong_lines", False, None),
        (3, "false_negative", True, None),
        (4, "false_positive", False, None),
        (6, "undecided", None, "ungrounded"),
    ]
    wrong_lines = secret.failing[0]
    assert (wrong_lines.file, wrong_lines.lines, [(f.line, f.end_line) for f in wrong_lines.findings]) == (
        "no-secret.example-2.txt",
        (1, 3),
        [(1, 1)],
    )
    assert secret.failing[2].findings[0].message == "looks secret"

    assert (total.tp, total.fp, total.fn, total.tn, total.undecided) == (1, 0, 0, 1, 0)
    assert (total.precision, total.recall, total.line_accuracy) == (1.0, 1.0, 1.0)
    assert total.failing == ()

    # A rule without examples measures nothing: every ratio undefined, not 0 and not 1.
    assert (empty.examples, empty.precision, empty.recall, empty.line_accuracy) == (0, None, None, None)

    # Overall: the rules' counts added up (TP 3, FP 1, FN 1).
    assert report.precision == 0.75 and report.recall == 0.75


def test_undefined_ratios_are_null_never_a_made_up_number() -> None:
    clean_only = StoredRule("r", "x", (Example("a\n", False), Example("b\n", False)))
    never_flagged = StoredRule("v", "x", (Example("a\n", True),))
    report = score(
        [clean_only, never_flagged],
        [result(example_file("r", 1), verdict("r", True)), result(example_file("r", 2), verdict("r", True)),
         result(example_file("v", 1), verdict("v", True))],
        validation_id="v", status="SUCCEEDED", computed_at="t",
    )  # fmt: skip
    clean, missed = report.rules
    assert (clean.tn, clean.precision, clean.recall) == (2, None, None)  # nothing flagged, nothing to find
    assert (missed.fn, missed.precision, missed.recall) == (1, None, 0.0)  # nothing flagged, one missed
    assert (ratio(0, 0), ratio(0, 3), ratio(3, 4)) == (None, 0.0, 0.75)


def test_a_missing_result_or_verdict_is_undecided_and_says_so() -> None:
    rule = StoredRule("r", "x", (Example("a\n", True, (1,)), Example("b\n", False)))
    report = score([rule], [result(example_file("r", 2), verdict("other", False))], validation_id="v",
                   status="CANCELLED", computed_at="t")  # fmt: skip
    (scored,) = report.rules
    assert (scored.undecided, scored.lines_checked, scored.tp + scored.fp + scored.fn + scored.tn) == (2, 0, 0)
    assert [(f.example, f.failure, f.undecided) for f in scored.failing] == [(1, "undecided", "missing"),
                                                                              (2, "undecided", "missing")]  # fmt: skip


@pytest.mark.parametrize(
    ("violates", "passed", "expected"),
    [(True, False, "tp"), (True, True, "fn"), (False, False, "fp"), (False, True, "tn"), (True, None, "undecided"),
     (False, None, "undecided")],
)  # fmt: skip
def test_each_verdict_is_one_outcome(violates: bool, passed: bool | None, expected: str) -> None:
    assert outcome(violates, passed) == expected


def test_line_exact_means_the_cited_lines_are_exactly_the_examples_lines() -> None:
    assert cited_lines([finding(2), finding(4, 6), finding(None), {"line": 9, "end_line": None}]) == {2, 4, 5, 6, 9}
    assert cited_lines([{"line": True}, {"line": 3, "end_line": 1}]) == {3}  # a bool is no line; end before start: one
    assert line_exact((4, 5, 6), False, [finding(4, 6)])
    assert line_exact((2, 4), False, [finding(2), finding(4), finding(2)])  # duplicates cite no other line
    assert not line_exact((2, 4), False, [finding(2)])  # a line missing
    assert not line_exact((2,), False, [finding(2), finding(3)])  # another line cited too
    assert not line_exact((2,), True, [])  # passed: nothing cited
    assert not line_exact((2,), None, [finding(2)])  # undecided


def test_failing_examples_show_the_first_findings_with_short_messages_and_count_the_rest() -> None:
    rule = StoredRule("r", "x", (Example("a\n", False),))
    many = [finding(n, message="m" * 500) for n in range(1, MAX_FINDINGS_SHOWN + 4)]
    report = score([rule], [result(example_file("r", 1), verdict("r", False, *many))], validation_id="v",
                   status="SUCCEEDED", computed_at="t")  # fmt: skip
    (failing,) = report.rules[0].failing
    assert len(failing.findings) == MAX_FINDINGS_SHOWN and failing.more_findings == 3
    assert all(len(f.message) == 200 for f in failing.findings)


def test_a_report_is_stored_and_read_back_unchanged() -> None:
    report = score([SECRET, TOTAL, EMPTY], results(), validation_id="v1", status="SUCCEEDED", computed_at="t")
    stored = from_item(to_item({"report": report.to_item()}))["report"]  # through DynamoDB's marshalling

    assert Report.of(stored) == report
    assert Report.of(stored).precision == report.precision

"""What the CLI shows (cli/display.py): the live view fed events by hand (per-file bars from
`file_parts_settled`, lines for results), and the results table with snippets and undecided rules."""

from __future__ import annotations

import io
import re

from rich.console import Console

from cli.display import (
    LiveView,
    failing_examples,
    file_summary,
    report_line,
    results_table,
    rule_test_table,
    verdict_line,
)
from cli.follow import Event

VALIDATION = {
    "id": "0123456789abcdef",
    "status": "RUNNING",
    "run": 1,
    "files": [{"name": "big.csv", "parts": 2}, {"name": "small.md", "parts": 1}],
}


def states(view: LiveView) -> list[tuple[str, float, str, bool]]:
    assert view.progress is not None
    return [(t.description.strip(), t.completed, t.fields["state"], t.visible) for t in view.progress.tasks[1:]]


def test_file_bars_follow_parts_settled_then_give_way_to_the_files_result_line() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, color_system=None, width=120)

    with LiveView(console, VALIDATION) as view:
        view.handle(Event("progress", "2", {"total": 3, "succeeded": 1, "failed": 0, "file_parts_settled": {"0": 1}}))
        assert states(view) == [("big.csv", 1, "running", True), ("small.md", 0, "waiting", True)]
        view.handle(
            Event("progress", "3", {"total": 3, "succeeded": 2, "failed": 0, "file_parts_settled": {"0": 2, "1": 0}})
        )
        assert states(view)[0] == ("big.csv", 2, "combining", True)  # all parts in: its combine step decides
        result = {
            "file": "big.csv",
            "status": "SUCCEEDED",
            "rules": [{"id": "r1", "passed": False, "findings": [{"line": 9, "message": "secret"}]}],
        }
        view.handle(Event("result", "4", result))
        assert states(view)[0][3] is False  # the finished file's bar is hidden...
        assert view.progress is not None and view.progress.tasks[0].completed == 2

    assert "FAIL  big.csv: r1 (1 finding)" in screen.getvalue()  # ...and its line printed above the bars


def test_outside_a_terminal_only_lines_are_printed_and_earlier_runs_stay_quiet() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=False, width=120)

    with LiveView(console, {**VALIDATION, "run": 2}, quiet_before_run=2) as view:
        view.handle(Event("status", "1", {"status": "RUNNING", "run": 1}))
        view.handle(Event("result", "2", {"file": "small.md", "status": "SUCCEEDED", "rules": []}))
        view.handle(Event("status", "5", {"status": "RUNNING", "run": 2}))
        view.handle(Event("result", "6", {"file": "big.csv", "status": "FAILED", "rules": [],
                                          "error": {"type": "InvalidAnswer", "message": "no verdict"}}))  # fmt: skip

    assert view.progress is None
    assert screen.getvalue().splitlines() == [
        "Validation 0123456789abcdef: 2 files, 3 parts",
        "Status RUNNING (run 2)",
        "ERROR big.csv: InvalidAnswer: no verdict",
    ]


# --- the results table and the lines: grounded findings, undecided rules, untrusted text ----------------------
def shown(*renderables: object) -> str:
    """What a reader sees (no colour), wide enough that nothing folds."""
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=False, color_system=None, width=240)
    for renderable in renderables:
        console.print(renderable, highlight=False)
    return screen.getvalue()


GROUNDED = {
    "file": "app.env",
    "status": "SUCCEEDED",
    "rules": [
        {
            "id": "no-secret",
            "passed": False,
            "findings": [
                {"line": 4, "end_line": 4, "location": "line 4", "message": "a token", "kind": "text",
                 "quote": "tok_live", "snippet": "API_TOKEN=tok_live_" + "x" * 100},
                {"line": 9, "end_line": 10, "location": "lines 9-10", "message": "a password", "kind": "text",
                 "quote": "hunter2", "snippet": "user=root\npassword=hunter2", "cited_line": 7},
                {"line": 1, "end_line": 12, "location": "lines 1-12", "message": "no header", "kind": "absence",
                 "quote": "", "snippet": ""},
            ],
        },
        {
            "id": "ids",
            "passed": None,
            "findings": [],
            "ungrounded": [{"line": 2, "end_line": 2, "quote": "x", "message": "m", "source": "finding"}] * 2,
            "undecided": "ungrounded",
        },
    ],
}  # fmt: skip
VALIDATION_DONE = {"id": "v1", "status": "SUCCEEDED", "rules": [{"id": "no-secret"}, {"id": "ids"}]}


def test_the_table_shows_each_findings_snippet_where_it_was_moved_from_and_undecided_rules() -> None:
    text = shown(results_table(VALIDATION_DONE, [GROUNDED]), verdict_line(VALIDATION_DONE, [GROUNDED]))

    assert "line 4: a token" in text
    assert "> API_TOKEN=tok_live_" + "x" * 60 + "…" in text  # the first line, cut to 80 characters
    assert "lines 9-10: a password (model said line 7)" in text  # relocated by the service
    assert "> user=root …" in text  # the first line of two
    assert "lines 1-12: no header (absence)" in text  # nothing to quote: no snippet line
    assert text.count("> ") == 2
    assert "UNDECIDED (ungrounded)" in text
    assert "the model's findings could not be found in the text (2 claims not found)" in text
    assert "1 failed, 1 undecided." in text


def test_a_file_with_no_failure_but_an_undecided_rule_is_undecided_not_passed() -> None:
    undecided = {**GROUNDED, "rules": [{"id": "no-secret", "passed": True, "findings": []}, GROUNDED["rules"][1]]}
    old = {**GROUNDED, "rules": [{"id": "ids", "passed": None, "findings": []}]}  # stored before reasons

    assert file_summary(undecided) == "[yellow]UNDECIDED[/] app.env: ids (ungrounded)"
    assert file_summary(old) == "[yellow]UNDECIDED[/] app.env: ids"
    assert file_summary(GROUNDED).startswith("[red]FAIL[/]  app.env: no-secret (3 findings)")  # a failure wins


def test_a_rule_not_decided_yet_is_pending_and_a_failed_files_rule_an_error() -> None:
    validation = {"id": "v2", "status": "RUNNING", "rules": [{"id": "no-secret"}]}
    running = {
        "file": "big.log",
        "status": "RUNNING",
        "rules": [{"id": "no-secret", "passed": None, "findings": [{"location": "line 3", "message": "s"}]}],
    }
    failed = {"file": "cut.log", "status": "FAILED", "error": {"type": "Timeout", "message": "part 2"},
              "rules": [{"id": "no-secret", "passed": None, "findings": [], "undecided": "error"}]}  # fmt: skip

    text = shown(results_table(validation, [running, failed]), verdict_line(validation, [running, failed]))

    assert re.search(r"big\.log .* pending .* line 3: s", text)
    assert re.search(r"cut\.log .* error .* Timeout: part 2", text)
    assert "0 passed, 0 failed, 1 undecided, 1 pending." in text


def test_text_from_files_and_models_is_shown_as_text_never_as_markup() -> None:
    hostile = "[bold red]PASS[/] [link=https://evil.example]x[/link] \\"
    result = {
        "file": "[b]f.txt",
        "status": "SUCCEEDED",
        "rules": [
            {"id": "r[1]", "passed": False, "findings": [{"location": "line 1", "message": hostile, "cited_line": 2,
                                                          "snippet": hostile, "quote": "q"}]},
            {"id": "r2", "passed": None, "findings": [], "undecided": "[/]"},
        ],
    }  # fmt: skip
    validation = {"id": "v3", "status": "SUCCEEDED", "rules": [{"id": "r[1]"}, {"id": "r2"}]}

    text = shown(results_table(validation, [result]), file_summary(result))

    assert "line 1: [bold red]PASS[/] [link=https://evil.example]x[/link]" in text
    assert "> [bold red]PASS[/] [link=https://evil.example]x[/link]" in text
    assert "[b]f.txt" in text and "r[1]" in text and "UNDECIDED ([/])" in text


def test_a_validation_by_a_stored_rule_set_names_its_version_and_a_rule_test_shows_its_table() -> None:
    by_version = {**VALIDATION_DONE, "ruleset": {"owner": "admin", "name": "pii", "version": 3, "reference": "pii@3"}}
    assert "2 rules (rule set pii@3): 0 passed, 1 failed, 1 undecided." in shown(verdict_line(by_version, [GROUNDED]))
    assert "(rule set" not in shown(verdict_line(VALIDATION_DONE, [GROUNDED]))

    report = {
        "validation_id": "t1",
        "status": "SUCCEEDED",
        "precision": 0.75,
        "recall": None,
        "rules": [
            {"id": "no-secret", "examples": 3, "tp": 1, "fp": 1, "fn": 0, "tn": 1, "undecided": 0, "precision": 0.5,
             "recall": 1.0, "line_exact": {"exact": 0, "checked": 1, "accuracy": 0.0},
             "failing": [
                 {"example": 2, "failure": "wrong_lines", "lines": [2], "undecided": None, "more_findings": 2,
                  "findings": [{"line": 4, "end_line": 5, "message": "[bold]x[/]"}]},
                 {"example": 3, "failure": "undecided", "lines": None, "undecided": "ungrounded", "more_findings": 0,
                  "findings": []},
             ]},
            {"id": "polite", "examples": 0, "tp": 0, "fp": 0, "fn": 0, "tn": 0, "undecided": 0, "precision": None,
             "recall": None, "line_exact": {"exact": 0, "checked": 0, "accuracy": None}, "failing": []},
        ],
    }  # fmt: skip
    text = shown(rule_test_table(report), *failing_examples(report), report_line(report))

    assert re.search(
        r"no-secret\s*│\s*3\s*│\s*1\s*│\s*1\s*│\s*0\s*│\s*1\s*│\s*0\s*│\s*0\.50\s*│\s*1\.00\s*│\s*0/1", text
    )
    assert re.search(r"polite\s*│\s*0(\s*│\s*0){5}\s*│\s*—\s*│\s*—\s*│\s*—", text)
    assert "no-secret example 2: flagged at other lines than its `lines` (expected 2)" in text
    assert "    line 4-5: [bold]x[/]" in text and "    … 2 more" in text  # model text stays text
    assert "no-secret example 3: no verdict (ungrounded)" in text
    assert "Overall: precision 0.75, recall —." in text

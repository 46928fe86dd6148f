"""The live view (cli/display.py) fed events by hand: per-file bars from `file_parts_settled`, lines for results."""

from __future__ import annotations

import io

from rich.console import Console

from cli.display import LiveView
from cli.follow import Event

VALIDATION = {
    "id": "0123456789abcdef",
    "status": "RUNNING",
    "run": 1,
    "files": [{"name": "big.csv", "chunks": 2}, {"name": "small.md", "chunks": 1}],
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

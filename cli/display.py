"""What the CLI shows: live progress fed by the event stream (rich), results as a table.

In a terminal, `LiveView` draws a bar for the validation (parts settled of all parts) and one
per file still running (its parts settled), and prints a line above the bars as each file's
result arrives. Elsewhere (a CI log, a pipe) it prints the lines only.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.follow import Event

MAX_FINDINGS_SHOWN = 5
_STATUS_STYLE = {
    "SUCCEEDED": "green",
    "FAILED": "red",
    "CANCELLED": "yellow",
    "CANCELLING": "yellow",
    "QUEUED": "cyan",
    "RUNNING": "blue",
}


def file_summary(result: dict[str, Any]) -> str:
    """One line (rich markup) for a file's result: its verdict and the rules it failed."""
    name = escape(result["file"])
    rules = result.get("rules") or []
    if result.get("status") == "FAILED":
        error = result.get("error") or {}
        reason = escape(f"{error.get('type', 'Error')}: {error.get('message', '')}".strip(": "))
        return f"[red]ERROR[/] {name}: {reason}"
    failed = [r for r in rules if r.get("passed") is False]
    if failed:
        parts = ", ".join(f"{escape(r['id'])} ({_count(len(r['findings']), 'finding')})" for r in failed)
        return f"[red]FAIL[/]  {name}: {parts}"
    return f"[green]PASS[/]  {name} ({_count(len(rules), 'rule')})"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class LiveView:
    """Consumes events (cli/follow.py) and keeps the display current."""

    def __init__(self, console: Console, validation: dict[str, Any], quiet_before_run: int = 1) -> None:
        self.console = console
        self.validation_id = str(validation["id"])
        self.files = [str(f["name"]) for f in validation.get("files", [])]
        self.parts = [int(f.get("chunks", 1)) for f in validation.get("files", [])]
        self.quiet_before_run = quiet_before_run
        self.run = int(validation.get("run", 1))
        self.status = str(validation.get("status", ""))
        self.progress: Progress | None = None
        self.overall: TaskID | None = None
        self.file_tasks: dict[int, TaskID] = {}

    # --- the live display ---------------------------------------------------------------------
    def __enter__(self) -> LiveView:
        if self.console.is_terminal:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[state]}"),
                TimeElapsedColumn(),
                console=self.console,
                refresh_per_second=8,
            )
            self.overall = self.progress.add_task(
                f"validation {self.validation_id[:8]}", total=sum(self.parts) or None, state=self._state()
            )
            for index, (name, parts) in enumerate(zip(self.files, self.parts, strict=True)):
                self.file_tasks[index] = self.progress.add_task(f"  {escape(name)}", total=parts, state="waiting")
            self.progress.start()
        self.line(f"Validation {self.validation_id}: {len(self.files)} files, {sum(self.parts)} parts")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.progress is not None:
            self.progress.stop()

    def line(self, text: str) -> None:
        """A line above the bars (or the line alone, outside a terminal)."""
        (self.progress.console if self.progress is not None else self.console).print(text, highlight=False)

    def _state(self) -> str:
        return f"[{_STATUS_STYLE.get(self.status, 'white')}]{self.status}[/]"

    def _loud(self) -> bool:
        return self.run >= self.quiet_before_run

    # --- events -------------------------------------------------------------------------------
    def handle(self, event: Event) -> None:
        data = event.data
        if event.kind == "status":
            self.status = str(data.get("status"))
            self.run = int(data.get("run") or self.run)
            if self._loud():
                error = data.get("error") or {}
                why = f": {escape(str(error.get('detail', '')))}" if error else ""
                run = f" (run {self.run})" if self.run > 1 else ""
                self.line(f"Status {self._state()}{run}{why}")
        elif event.kind == "progress":
            self._update_progress(data)
        elif event.kind == "result":
            self._finish_file(data)
        if self.progress is not None and self.overall is not None:
            self.progress.update(self.overall, state=self._state())

    def _update_progress(self, data: dict[str, Any]) -> None:
        if self.progress is None or self.overall is None:
            return
        done = int(data.get("succeeded", 0)) + int(data.get("failed", 0))
        self.progress.update(self.overall, completed=done, total=int(data.get("total", 0)) or None)
        for index, settled in (data.get("file_parts_settled") or {}).items():
            task = self.file_tasks.get(int(index))
            if task is not None:
                state = _file_state(int(settled), self.parts[int(index)])
                self.progress.update(task, completed=int(settled), state=state)

    def _finish_file(self, result: dict[str, Any]) -> None:
        if self.progress is not None:
            index = self.files.index(result["file"]) if result.get("file") in self.files else -1
            task = self.file_tasks.get(index)
            if task is not None:  # done: its line replaces its bar
                self.progress.update(task, visible=False)
        if self._loud():
            self.line(file_summary(result))


def _file_state(settled: int, parts: int) -> str:
    if not settled:
        return "waiting"
    if settled < parts:
        return "running"
    # All parts in: a file of several is decided by its combine step; a one-part file's result is next.
    return "combining" if parts > 1 else "settled"


def _findings_text(findings: list[dict[str, Any]]) -> str:
    shown = [f"{f.get('location') or ''}: {f.get('message', '')}".strip(": ") for f in findings[:MAX_FINDINGS_SHOWN]]
    if len(findings) > MAX_FINDINGS_SHOWN:
        shown.append(f"… and {len(findings) - MAX_FINDINGS_SHOWN} more")
    return "\n".join(shown)


def results_table(validation: dict[str, Any], results: list[dict[str, Any]]) -> Table:
    """One row per (file, rule): the verdict and the findings at their lines."""
    table = Table()
    for column in ("File", "Rule", "Verdict", "Findings"):
        table.add_column(column, overflow="fold")
    rule_ids = [r["id"] for r in validation.get("rules", [])]
    for result in results:
        by_id = {r["id"]: r for r in result.get("rules") or []}
        for rule in rule_ids:
            verdict = by_id.get(rule)
            if verdict is not None and verdict.get("passed") is not None:
                word = "[green]passed[/]" if verdict["passed"] else "[red]failed[/]"
            elif result.get("status") == "FAILED":
                word = "[red]error[/]"
            else:
                word = "[yellow]undecided[/]"
            findings = verdict.get("findings", []) if verdict else []
            if not findings and result.get("status") == "FAILED":
                error = result.get("error") or {}
                text = f"{error.get('type', 'Error')}: {error.get('message', '')}"
            else:
                text = _findings_text(findings)
            table.add_row(escape(result["file"]), escape(rule), word, escape(text))
    return table


def verdict_line(validation: dict[str, Any], results: list[dict[str, Any]]) -> str:
    """`N files × M rules: P passed, F failed, …` and the validation's status."""
    counts: dict[str, int] = {"passed": 0, "failed": 0, "undecided": 0}
    for result in results:
        for rule in result.get("rules") or []:
            key = {True: "passed", False: "failed"}.get(rule.get("passed"), "undecided")
            counts[key] += 1
    shown = ", ".join(f"{n} {k}" for k, n in counts.items() if n or k != "undecided")
    status = str(validation["status"])
    return (
        f"Validation {validation['id']} [{_STATUS_STYLE.get(status, 'white')}]{status}[/]: "
        f"{_count(len(results), 'file')} × {_count(len(validation.get('rules', [])), 'rule')}: {shown}."
    )

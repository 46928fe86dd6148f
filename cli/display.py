"""What the CLI shows: uploads straight to S3 and live progress (rich), results as a table, and cost (a
validation's, an estimate's, the caller's spend per period).

In a terminal, `UploadView` draws a bar per file going straight to S3 (bytes sent, speed, time
left), and `LiveView` a bar for the validation (parts settled of all parts) and one per file
still running (its parts settled); each prints a line above its bars as a file is done (uploaded,
or its result arrived). Elsewhere (a CI log, a pipe) they print the lines only.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from cli.follow import Event

MAX_FINDINGS_SHOWN = 5
MAX_SNIPPET_SHOWN = 80  # characters of a finding's snippet's first line in the table
# Why an ended file's rule has no verdict (`undecided`), as the table says it.
UNDECIDED_WHY = {
    "ungrounded": "the model's findings could not be found in the text",
    "error": "the file failed before the rule was decided",
}
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
    # A result is of an ended file: a rule without a verdict is undecided (never a pass).
    undecided = [r for r in rules if r.get("passed") is None]
    if undecided:
        return f"[yellow]UNDECIDED[/] {name}: {', '.join(_undecided_rule(r) for r in undecided)}"
    return f"[green]PASS[/]  {name} ({_count(len(rules), 'rule')})"


def _undecided_rule(rule: dict[str, Any]) -> str:
    """`rule-id (reason)`, or the id alone for results stored before the service gave reasons."""
    reason = rule.get("undecided")
    return escape(str(rule["id"])) + (f" ({escape(str(reason))})" if reason else "")


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def size_text(size: int) -> str:
    """`512 B`, `1.5 KiB`, `12.0 MiB`, `1.2 GiB`."""
    if size < 1024:
        return f"{size} B"
    value, unit = size / 1024, "KiB"
    for larger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{value:.1f} {unit}"


class UploadView:
    """Shows files going straight to S3 (cli/uploads.py reports to it, `advance` from the threads that PUT)."""

    def __init__(self, console: Console, files: list[tuple[str, int]]) -> None:
        self.console = console
        self.files = files  # (name, size) of each file, in the order declared
        self.progress: Progress | None = None
        self.tasks: dict[int, TaskID] = {}

    def __enter__(self) -> UploadView:
        total = sum(size for _, size in self.files)
        self.console.print(
            f"Uploading {_count(len(self.files), 'file')} ({size_text(total)}) straight to S3", highlight=False
        )
        if self.console.is_terminal:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                refresh_per_second=8,
            )
            for index, (name, size) in enumerate(self.files):
                self.tasks[index] = self.progress.add_task(f"  {escape(name)}", total=size)
            self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.progress is not None:
            self.progress.stop()

    def advance(self, index: int, sent: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.tasks[index], sent)

    def done(self, index: int, ticket: dict[str, Any]) -> None:
        """The upload is complete: its line replaces its bar."""
        name, size = self.files[index]
        parts = f", {_count(len(ticket['parts']), 'part')}" if ticket.get("kind") == "multipart" else ""
        text = f"Uploaded {escape(name)} ({size_text(size)}{parts}): upload {escape(str(ticket['upload_id']))}"
        if self.progress is not None:
            self.progress.update(self.tasks[index], visible=False)
            self.progress.console.print(text, highlight=False)
        else:
            self.console.print(text, highlight=False)


class LiveView:
    """Consumes events (cli/follow.py) and keeps the display current."""

    def __init__(self, console: Console, validation: dict[str, Any], quiet_before_run: int = 1) -> None:
        self.console = console
        self.validation_id = str(validation["id"])
        self.files = [str(f["name"]) for f in validation.get("files", [])]
        # None: an uploaded file the run has not split into parts yet (`planned: false`).
        self.parts = [int(f.get("parts", 1)) if f.get("planned", True) else None for f in validation.get("files", [])]
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
                f"validation {self.validation_id[:8]}", total=self._known_parts() or None, state=self._state()
            )
            for index, (name, parts) in enumerate(zip(self.files, self.parts, strict=True)):
                self.file_tasks[index] = self.progress.add_task(f"  {escape(name)}", total=parts, state="waiting")
            self.progress.start()
        unplanned = self.parts.count(None)
        later = f" (and those of {_count(unplanned, 'uploaded file')}, counted as the run starts)" if unplanned else ""
        self.line(f"Validation {self.validation_id}: {len(self.files)} files, {self._known_parts()} parts{later}")
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

    def _known_parts(self) -> int:
        return sum(p for p in self.parts if p is not None)

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


def _file_state(settled: int, parts: int | None) -> str:
    if not settled:
        return "waiting"
    if parts is None or settled < parts:  # None: an uploaded file's parts, not known here
        return "running"
    # All parts in: a file of several is decided by its combine step; a one-part file's result is next.
    return "combining" if parts > 1 else "settled"


def _snippet_line(snippet: str) -> str:
    """The snippet's first line, cut to MAX_SNIPPET_SHOWN, `…` when anything is left out."""
    first, _, rest = snippet.partition("\n")
    if len(first) > MAX_SNIPPET_SHOWN:
        return first[: MAX_SNIPPET_SHOWN - 1] + "…"
    return first + " …" if rest else first


def _finding_text(finding: dict[str, Any]) -> str:
    """Markup: `location: message`, notes, and beneath it the text of the cited line (what was flagged)."""
    text = escape(f"{finding.get('location') or ''}: {finding.get('message', '')}".strip(": "))
    if finding.get("cited_line") is not None:  # the service moved it to where the model's quote is
        text += f" [dim](model said line {escape(str(finding['cited_line']))})[/]"
    if finding.get("kind") == "absence":
        text += " [dim](absence)[/]"
    if finding.get("snippet"):
        text += f"\n  [dim]> {escape(_snippet_line(str(finding['snippet'])))}[/]"
    return text


def _findings_text(findings: list[dict[str, Any]]) -> str:
    shown = [_finding_text(f) for f in findings[:MAX_FINDINGS_SHOWN]]
    if len(findings) > MAX_FINDINGS_SHOWN:
        shown.append(f"… and {len(findings) - MAX_FINDINGS_SHOWN} more")
    return "\n".join(shown)


def _verdict_cell(result: dict[str, Any], verdict: dict[str, Any] | None) -> tuple[str, str]:
    """(verdict, findings) markup for one (file, rule); file and model text escaped."""
    findings = verdict.get("findings", []) if verdict else []
    reason = (verdict or {}).get("undecided")
    if verdict is not None and verdict.get("passed") is not None:
        word = "[green]passed[/]" if verdict["passed"] else "[red]failed[/]"
    elif result.get("status") == "FAILED" or reason == "error":
        word = "[red]error[/]"
        if not findings:
            error = result.get("error") or {}
            return word, escape(f"{error.get('type', 'Error')}: {error.get('message', '')}")
    elif reason or result.get("status") == "SUCCEEDED":  # ended without a verdict: never a pass
        return _undecided_cell(verdict or {}, findings)
    else:
        word = "[blue]pending[/]"  # not decided yet (a file still running): unlike UNDECIDED, an answer will come
    return word, _findings_text(findings)


def _undecided_cell(verdict: dict[str, Any], findings: list[dict[str, Any]]) -> tuple[str, str]:
    reason = verdict.get("undecided")
    claims = len(verdict.get("ungrounded") or [])
    why = UNDECIDED_WHY.get(str(reason), "no verdict") + (f" ({_count(claims, 'claim')} not found)" if claims else "")
    text = escape(why) + ("\n" + _findings_text(findings) if findings else "")
    return "[yellow]UNDECIDED[/]" + (f" ({escape(str(reason))})" if reason else ""), text


def results_table(validation: dict[str, Any], results: list[dict[str, Any]]) -> Table:
    """One row per (file, rule): the verdict and the findings at their lines, each with its snippet."""
    table = Table()
    for column in ("File", "Rule", "Verdict", "Findings"):
        table.add_column(column, overflow="fold")
    rule_ids = [r["id"] for r in validation.get("rules", [])]
    for result in results:
        by_id = {r["id"]: r for r in result.get("rules") or []}
        for rule in rule_ids:
            word, text = _verdict_cell(result, by_id.get(rule))
            table.add_row(escape(result["file"]), escape(rule), word, text)
    return table


def verdict_line(validation: dict[str, Any], results: list[dict[str, Any]]) -> str:
    """`N files × M rules: P passed, F failed, U undecided, …` and the validation's status.

    A rule without a verdict is undecided once its file has ended, and pending while it runs.
    """
    counts: dict[str, int] = {"passed": 0, "failed": 0, "undecided": 0, "pending": 0}
    for result in results:
        ended = result.get("status") in ("SUCCEEDED", "FAILED")
        for rule in result.get("rules") or []:
            key = {True: "passed", False: "failed"}.get(rule.get("passed"), "undecided" if ended else "pending")
            counts[key] += 1
    shown = ", ".join(f"{n} {k}" for k, n in counts.items() if n or k in ("passed", "failed"))
    status = str(validation["status"])
    ruleset = ruleset_reference(validation)
    return (
        f"Validation {validation['id']} [{_STATUS_STYLE.get(status, 'white')}]{status}[/]: "
        f"{_count(len(results), 'file')} × {_count(len(validation.get('rules', [])), 'rule')}"
        + (f" (rule set {escape(ruleset)})" if ruleset else "")
        + f": {shown}."
    )


def ruleset_reference(validation: dict[str, Any]) -> str | None:
    """`name@version` of the stored rule set the validation used (its owner's when not the caller's)."""
    ruleset = validation.get("ruleset")
    if not isinstance(ruleset, dict):
        return None
    return str(ruleset.get("reference") or f"{ruleset.get('name')}@{ruleset.get('version')}")


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def rule_test_table(report: dict[str, Any]) -> Table:
    """Per rule: examples, TP FP FN TN, undecided, precision, recall, line-exact (exact/checked)."""
    table = Table(title=f"Rule test of validation {escape(str(report['validation_id']))} ({report['status']})")
    for column in ("Rule", "Examples", "TP", "FP", "FN", "TN", "Undecided", "Precision", "Recall", "Line-exact"):
        table.add_column(column, justify="left" if column == "Rule" else "right")
    for rule in report["rules"]:
        lines = rule["line_exact"]
        table.add_row(
            escape(str(rule["id"])),
            *(str(rule[k]) for k in ("examples", "tp", "fp", "fn", "tn", "undecided")),
            _ratio(rule["precision"]),
            _ratio(rule["recall"]),
            f"{lines['exact']}/{lines['checked']}" if lines["checked"] else "—",
        )
    return table


_FAILURE_WORDS = {
    "false_positive": "flagged, but it does not violate the rule",
    "false_negative": "passed, but it violates the rule",
    "wrong_lines": "flagged at other lines than its `lines`",
    "undecided": "no verdict",
}


def failing_examples(report: dict[str, Any]) -> list[str]:
    """One line (rich markup) per failing example, then its findings' lines."""
    lines = []
    for rule in report["rules"]:
        for failing in rule["failing"]:
            why = _FAILURE_WORDS.get(failing["failure"], failing["failure"])
            if failing["failure"] == "undecided" and failing.get("undecided"):
                why += f" ({failing['undecided']})"
            if failing["failure"] == "wrong_lines":
                why += f" (expected {', '.join(str(n) for n in failing['lines'] or [])})"
            lines.append(f"[yellow]{escape(str(rule['id']))}[/] example {failing['example']}: {escape(why)}")
            for finding in failing["findings"]:
                where = (
                    finding["line"]
                    if finding["line"] == finding["end_line"]
                    else (f"{finding['line']}-{finding['end_line']}")
                )
                lines.append(f"    line {where}: {escape(str(finding['message']))}")
            if failing.get("more_findings"):
                lines.append(f"    … {failing['more_findings']} more")
    return lines


def report_line(report: dict[str, Any]) -> str:
    return f"Overall: precision {_ratio(report['precision'])}, recall {_ratio(report['recall'])}."


def status_table(v: dict[str, Any]) -> Table:
    """`validate status`: a validation's state, progress, tokens and cost."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    progress, usage = v["progress"], v["usage"]
    rows = [
        ("id", v["id"]),
        ("status", f"{v['status']}" + (f" (run {v['run']})" if v.get("run", 1) > 1 else "")),
        ("parts", f"{progress['succeeded']} succeeded, {progress['failed']} failed, {progress['pending']} pending "
                  f"of {progress['total']}"),
        ("files", ", ".join(f["name"] for f in v["files"][:10]) + (" …" if len(v["files"]) > 10 else "")),
        ("rules", ", ".join(r["id"] for r in v["rules"])),
        *([("rule set", ruleset_reference(v))] if ruleset_reference(v) else []),
        ("tokens", f"{usage['prompt_tokens'] + usage['completion_tokens']} used of ~{v['estimated_tokens']} estimated, "
                   f"{usage.get('cached_prompt_tokens') or 0} prompt tokens cached"),
        ("cost", usd(usage.get("cost_usd")) + (f" ({usage['model']})" if usage.get("model") else "")),
        ("created", v["created_at"]),
    ]  # fmt: skip
    if v.get("finished_at"):
        rows.append(("finished", v["finished_at"]))
    if v.get("queue"):
        rows.append(("queue", f"position {v['queue']['position']}, start ~{v['queue'].get('estimated_start')}"))
    if v.get("error"):
        rows.append(("error", f"{v['error']['type']}: {v['error']['detail']}"))
    for name, value in rows:
        table.add_row(name, escape(str(value)))
    return table


# --- cost: a validation's, an estimate's, the caller's spend ------------------------------------------------
def usd(amount: float | None) -> str:
    """`$0.001234` (to the millionth the API gives, trailing zeros dropped to cents), `no price` for null."""
    if amount is None:
        return "no price"
    whole, _, fraction = f"{amount:.6f}".rstrip("0").partition(".")
    return f"${whole}.{fraction.ljust(2, '0')}"


def usage_line(validation: dict[str, Any]) -> str:
    """Beneath the verdict line: `Tokens: N used, C prompt tokens cached; cost $X.`"""
    usage = validation.get("usage") or {}
    used = int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0))
    return (
        f"Tokens: {used} used, {usage.get('cached_prompt_tokens') or 0} prompt tokens cached; "
        f"cost {usd(usage.get('cost_usd'))}."
    )


# What the quota would do and why (an estimate's `would.reason`), in the user's words.
QUOTA_WHY = {
    "max_queued": "your queue of waiting validations is full",
    "queue": "your validations already queued go first",
    "max_running": "you have max-running validations running",
    "tokens": "your token bucket must refill first",
}
_RATIO_SOURCE = {
    "history": "from this deployment's ended runs of the model",
    "prior": "the prior: no ended run of the model yet",
}


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:g} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _quota_outlook(would: dict[str, Any]) -> str:
    verdict, reason = str(would["quota"]), would.get("reason")
    word = {"admit": "admit", "queue": "queue", "refuse": "refuse (429)"}.get(verdict, verdict)
    return word + (f": {QUOTA_WHY.get(str(reason), str(reason))}" if reason else "")


def _budget_outlook(budget: dict[str, Any] | None) -> str:
    if budget is None:
        return "no budget"
    resets = f"resets {budget['resets_at']}"
    if budget["estimate_usd"] is None:
        return f"refuse (422): the model has no price, so no budget can hold it; {resets}"
    if budget["verdict"] == "admit":
        return f"admit: reserves {usd(budget['estimate_usd'])} of {usd(budget['remaining_usd'])} left; {resets}"
    return f"refuse (429): needs {usd(budget['estimate_usd'])}, {usd(budget['remaining_usd'])} left; {resets}"


def estimate_table(e: dict[str, Any]) -> Table:
    """`validate estimate`: parts, calls, tokens, completions and the ratio's source, cost per tier
    (p50–p90), what the quota and the budget would do now, and how long it would take."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    calls, prompt, completion = e["model_calls"], e["prompt_tokens"], e["completion_tokens"]
    ratio = completion["ratio"]
    reused = int(e.get("reused_parts") or 0)
    rows = [
        ("model", e["model"] + (f" at the {e['tier']} tier" if e.get("tier") else "")
                  + (f", rule set {e['ruleset']}" if e.get("ruleset") else "")),
        ("parts", f"{e['parts']} in {_count(int(e['files']), 'file')}"
                  + (f", {reused} answered by the reuse cache (no call)" if reused else "")),
        ("calls", f"{calls['total']}: {calls['parts']} for parts, {calls['combine']} to combine"),
        ("prompt tokens", f"{prompt['total']:,}: {prompt['parts']:,} for parts (exact), {prompt['combine']:,} to "
                          f"combine (estimated); {prompt['cached']:,} cached"),
        ("completion tokens", f"p50 {completion['p50']:,}, p90 {completion['p90']:,} (completion ÷ prompt "
                              f"{ratio['p50']:.2f} / {ratio['p90']:.2f}, "
                              f"{_RATIO_SOURCE.get(str(ratio['source']), str(ratio['source']))})"),
    ]  # fmt: skip
    costs = e.get("cost_usd")
    if not costs:
        rows.append(("cost", f"no price for {e['model']}"))
    for i, (tier, cost) in enumerate((costs or {}).items()):
        rows.append(("cost p50–p90" if i == 0 else "", f"{tier} {usd(cost['p50'])} – {usd(cost['p90'])}"))
    would, duration = e["would"], e["duration_seconds"]
    start_in = float(duration["start_in"])
    run = duration.get("run")
    rows += [
        ("quota", _quota_outlook(would)),
        ("budget", _budget_outlook(would.get("budget"))),
        ("time", ("starts now" if start_in <= 0 else f"starts in ~{_duration(start_in)}")
                 + (f", runs ~{_duration(float(run))} at the deployment's whole target TPM" if run is not None
                    else "")),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, escape(str(value)))
    return table


def spend_table(usage: dict[str, Any], period: str) -> Table:
    """`validate usage`: the caller's spend per UTC day or month, newest first."""
    # No rules between columns, one space apart: eight whole columns fit in an 80-character terminal.
    table = Table(
        title=f"Spend of {escape(str(usage['user_id']))} per UTC {period}, newest first",
        caption="Tokens: prompt, of them cached, completion.",
        box=box.SIMPLE_HEAD,
        padding=(0, 0),
    )
    for column in ("Period", "Spent", "Reserved", "Runs", "Unpriced", "Prompt", "Cached", "Completion"):
        table.add_column(column, justify="left" if column == "Period" else "right", no_wrap=True)
    for item in usage["items"]:
        table.add_row(
            escape(str(item["period"]).partition("#")[2] or str(item["period"])),
            usd(item["spent_usd"]),
            usd(item["reserved_usd"]),
            str(item["runs"]),
            str(item["unpriced_runs"]),
            f"{item['prompt_tokens']:,}",
            f"{item['cached_prompt_tokens']:,}",
            f"{item['completion_tokens']:,}",
        )
    return table


def budget_line(budget: dict[str, Any] | None) -> str:
    """The spend budget's state: max per period, what is left, when it resets, whether the 80% alert went."""
    if budget is None:
        return "No spend budget."
    alerted = "sent" if budget["threshold_alerted"] else "not sent"
    return (
        f"Budget {usd(budget['max_spend_usd'])} per {budget['spend_period']}: {usd(budget['remaining_usd'])} left, "
        f"resets {budget['resets_at']}; 80% alert {alerted} this period."
    )

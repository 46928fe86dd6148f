"""Exports of a validation's results: JSON Lines, CSV and SARIF 2.1.0.

Findings are grounded in the text: each carries the model's `quote`, the `snippet` of the cited
lines from the stored file (control characters already escaped), its `kind` (`absence` findings
quote nothing) and, when the service moved it to where the quote really is, the `cited_line` the
model gave. A rule whose failure the model never backed with a quote found in the text is
undecided (`passed: null` with `undecided: "ungrounded"`): never a pass, never a failure.
Fields are read as optional: results stored before grounding lack them.

Pure rendering, one file's result at a time (the shape of `GET /validations/{id}/results`
items), so the route streams a report page by page and never holds it whole. Each format
is a `Report`: `head()`, then `file(result)` per file in order, then `tail()`; the pieces
joined are the document.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import quote

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
TOOL_NAME = "validation-service"
CSV_COLUMNS = (
    "file",
    "file_status",
    "rule",
    "verdict",
    "undecided",
    "line",
    "end_line",
    "location",
    "message",
    "quote",
    "snippet",
    "cited_line",
    "ruleset",
)
# OWASP "CSV injection": a spreadsheet runs a cell starting with one of these as a formula.
# Messages come from a model that read untrusted files, so such cells get a leading quote.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class ReportFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"
    SARIF = "sarif"


MEDIA_TYPES = {
    ReportFormat.JSONL: "application/x-ndjson",
    ReportFormat.CSV: "text/csv; charset=utf-8",
    ReportFormat.SARIF: "application/sarif+json",
}
SUFFIXES = {ReportFormat.JSONL: "jsonl", ReportFormat.CSV: "csv", ReportFormat.SARIF: "sarif"}


class Report(Protocol):
    def head(self) -> str: ...
    def file(self, result: dict[str, Any]) -> str: ...
    def tail(self) -> str: ...


def _pairs(result: dict[str, Any], rule_ids: list[str]) -> list[tuple[str, dict[str, Any] | None]]:
    """(rule id, its verdict for this file or None when there is none yet), every rule in the validation's order."""
    by_id = {v["id"]: v for v in result.get("rules") or []}
    return [(rule, by_id.get(rule)) for rule in rule_ids]


def verdict_word(result: dict[str, Any], verdict: dict[str, Any] | None) -> str:
    """passed, failed, undecided (not decided yet, or never backed by the text), or error (the file
    failed before this rule was decided)."""
    if verdict is not None and verdict.get("passed") is not None:
        return "passed" if verdict["passed"] else "failed"
    if result.get("status") == "FAILED" or (verdict or {}).get("undecided") == "error":
        return "error"
    return "undecided"


def undecided_reason(result: dict[str, Any], verdict: dict[str, Any] | None) -> str | None:
    """Why an ended file's rule has no verdict (`ungrounded`, `error`); None when decided or still running.

    A failed file's rule without a verdict (results stored before the service said why) is `error`,
    as the service says it now, so a reader filters on one value.
    """
    if verdict is not None and verdict.get("passed") is not None:
        return None
    reason = (verdict or {}).get("undecided")
    if reason:
        return str(reason)
    return "error" if result.get("status") == "FAILED" else None


def _error_text(result: dict[str, Any]) -> str:
    error = result.get("error") or {}
    return f"{error.get('type', 'Error')}: {error.get('message', '')}".strip() if error else ""


@dataclass(frozen=True)
class Facts:
    """What every row of a report names about the validation as a whole."""

    ruleset: str | None = None  # `name@version` of the stored rule set it used
    model: str | None = None  # the model asked
    usage: dict[str, Any] | None = None  # tokens and cost_usd as GET shows them (SARIF's run properties)


class JsonLinesReport:
    """One object per (file, rule): the verdict, its findings, and the file's status and error."""

    def __init__(self, validation_id: str, rules: list[dict[str, str]], facts: Facts = Facts()) -> None:
        self.validation_id = validation_id
        self.rule_ids = [r["id"] for r in rules]
        self.facts = facts

    def head(self) -> str:
        return ""

    def file(self, result: dict[str, Any]) -> str:
        lines = []
        for rule, verdict in _pairs(result, self.rule_ids):
            record = {
                "validation_id": self.validation_id,
                "file": result["file"],
                "file_status": result["status"],
                "rule": rule,
                "verdict": verdict_word(result, verdict),
                "passed": verdict["passed"] if verdict is not None else None,
                "undecided": undecided_reason(result, verdict),
                "findings": verdict["findings"] if verdict is not None else [],  # whole: quote, snippet, kind…
                "ungrounded": (verdict or {}).get("ungrounded") or [],
                "error": result.get("error"),
            }
            if self.facts.ruleset is not None:
                record["ruleset"] = self.facts.ruleset
            if self.facts.model is not None:
                record["model"] = self.facts.model
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        return "".join(lines)

    def tail(self) -> str:
        return ""


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return "" if value is None else value


class CsvReport:
    """One row per (file, rule, finding); a (file, rule) without findings (passed, undecided, error) gets one row."""

    def __init__(self, rules: list[dict[str, str]], facts: Facts = Facts()) -> None:
        self.rule_ids = [r["id"] for r in rules]
        self.ruleset = facts.ruleset

    @staticmethod
    def _rows(rows: list[tuple[Any, ...]]) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\r\n").writerows([[_cell(v) for v in row] for row in rows])  # RFC 4180
        return buffer.getvalue()

    def head(self) -> str:
        return self._rows([CSV_COLUMNS])

    def file(self, result: dict[str, Any]) -> str:
        rows: list[tuple[Any, ...]] = []
        name, status = result["file"], result["status"]
        for rule, verdict in _pairs(result, self.rule_ids):
            word, reason = verdict_word(result, verdict), undecided_reason(result, verdict)
            findings = verdict["findings"] if verdict is not None else []
            for f in findings:
                where = (f.get("line"), f.get("end_line"), f.get("location"), f.get("message"))
                quoted = (f.get("quote"), f.get("snippet"), f.get("cited_line"))
                rows.append((name, status, rule, word, reason, *where, *quoted, self.ruleset))
            if not findings:
                message = _error_text(result) if word == "error" else ""
                empty = (None, None, None, message, None, None, None)
                rows.append((name, status, rule, word, reason, *empty, self.ruleset))
        return self._rows(rows)

    def tail(self) -> str:
        return ""


# The note an undecided rule of an ended file becomes, by its reason.
_UNDECIDED_WHY = {
    "ungrounded": "the model's findings could not be found in the text (ungrounded)",
    "error": "the file failed before the rule was decided (error)",
}


def _short(text: str, limit: int = 120) -> str:
    first = text.strip().splitlines()[0] if text.strip() else text
    return first if len(first) <= limit else first[: limit - 1] + "…"


class SarifReport:
    """SARIF 2.1.0: the rules under tool.driver.rules; one result per finding, at the file and its lines.

    A failed rule's findings are `error`s, their region carrying the snippet of the cited lines;
    findings of a rule not decided yet (a multi-part file still running) are `warning`s with
    `properties.provisional`. An undecided rule of an ended file is one `note` at the file with
    `properties.undecided` (its reason), so a reader sees it was neither passed nor failed (findings
    its parts made before the file failed follow it as provisional warnings). Files
    that failed to be judged are tool execution notifications of the run's invocation, so a report
    never passes them silently.
    """

    def __init__(self, validation_id: str, status: str, rules: list[dict[str, str]], facts: Facts = Facts()) -> None:
        self.validation_id = validation_id
        self.facts = facts
        self.status = status
        self.rules = rules
        self.rule_index = {r["id"]: i for i, r in enumerate(rules)}
        self.written = 0
        self.notifications: list[dict[str, Any]] = []  # one per failed file: few, kept to the end

    def head(self) -> str:
        driver = {
            "name": TOOL_NAME,
            "rules": [
                {"id": r["id"], "shortDescription": {"text": _short(r["text"])}, "fullDescription": {"text": r["text"]}}
                for r in self.rules
            ],
        }
        opening = json.dumps({"$schema": SARIF_SCHEMA, "version": "2.1.0"}, ensure_ascii=False)[:-1]
        return opening + ', "runs": [{"tool": ' + json.dumps({"driver": driver}, ensure_ascii=False) + ', "results": ['

    @staticmethod
    def _location(name: str, finding: dict[str, Any] | None = None) -> dict[str, Any]:
        physical: dict[str, Any] = {"artifactLocation": {"uri": quote(name)}}
        line = (finding or {}).get("line")
        if isinstance(line, int) and line >= 1:
            end = finding.get("end_line") if finding else None
            physical["region"] = {"startLine": line, "endLine": end if isinstance(end, int) and end >= line else line}
            snippet = (finding or {}).get("snippet")
            if snippet:  # absence findings have none: they span the lines that lack something
                physical["region"]["snippet"] = {"text": snippet}
        return {"physicalLocation": physical}

    def _finding(self, name: str, rule: str, decided: bool, finding: dict[str, Any]) -> dict[str, Any]:
        item: dict[str, Any] = {
            "ruleId": rule,
            "ruleIndex": self.rule_index[rule],
            "level": "error" if decided else "warning",
            "message": {"text": finding.get("message") or f"Rule {rule} is not met."},
            "locations": [self._location(name, finding)],
        }
        properties: dict[str, Any] = {} if decided else {"provisional": True}
        if finding.get("kind") == "absence":
            properties["kind"] = "absence"
        if finding.get("cited_line") is not None:  # the service moved it to where the quote is: the model's line
            properties["cited_line"] = finding["cited_line"]
        if properties:
            item["properties"] = properties
        return item

    def _undecided(self, name: str, rule: str, reason: str) -> dict[str, Any]:
        why = _UNDECIDED_WHY.get(reason, f"no verdict ({reason})")
        return {
            "ruleId": rule,
            "ruleIndex": self.rule_index[rule],
            "level": "note",
            "message": {"text": f"Rule {rule} is undecided: {why}"},
            "locations": [self._location(name)],
            "properties": {"undecided": reason},
        }

    def _items(self, name: str, rule: str, verdict: dict[str, Any]) -> list[dict[str, Any]]:
        if verdict.get("passed") is True:
            return []
        decided = verdict.get("passed") is False
        findings = [self._finding(name, rule, decided, f) for f in verdict.get("findings") or []]
        if verdict.get("passed") is None and verdict.get("undecided"):
            # What parts found before the file failed stays visible, provisional, after the note.
            return [self._undecided(name, rule, str(verdict["undecided"])), *findings]
        return findings

    def file(self, result: dict[str, Any]) -> str:
        name = result["file"]
        pieces = []
        for rule, verdict in _pairs(result, list(self.rule_index)):
            for item in self._items(name, rule, verdict) if verdict is not None else []:
                pieces.append(("," if self.written else "") + "\n" + json.dumps(item, ensure_ascii=False))
                self.written += 1
        if result.get("status") == "FAILED":
            self.notifications.append(
                {
                    "level": "error",
                    "message": {"text": f"{name} was not fully judged: {_error_text(result) or 'failed'}"},
                    "locations": [self._location(name)],
                }
            )
        return "".join(pieces)

    def tail(self) -> str:
        invocation = {
            "executionSuccessful": self.status == "SUCCEEDED",
            "toolExecutionNotifications": self.notifications,
        }
        properties: dict[str, Any] = {"validation_id": self.validation_id, "status": self.status}
        if self.facts.ruleset is not None:
            properties["ruleset"] = self.facts.ruleset
        if self.facts.model is not None:
            properties["model"] = self.facts.model
        if self.facts.usage is not None:
            properties["usage"] = self.facts.usage
        return "\n], " + json.dumps({"invocations": [invocation], "properties": properties})[1:] + "]}\n"


def report_for(
    report_format: ReportFormat,
    validation_id: str,
    status: str,
    rules: list[dict[str, str]],
    facts: Facts = Facts(),
) -> Report:
    makers: dict[ReportFormat, Callable[[], Report]] = {
        ReportFormat.JSONL: lambda: JsonLinesReport(validation_id, rules, facts),
        ReportFormat.CSV: lambda: CsvReport(rules, facts),
        ReportFormat.SARIF: lambda: SarifReport(validation_id, status, rules, facts),
    }
    return makers[report_format]()


def render(report: Report, results: list[dict[str, Any]]) -> str:
    """The whole document at once (tests, small reports)."""
    return report.head() + "".join(report.file(r) for r in results) + report.tail()


async def stream(report: Report, pages: AsyncIterable[list[dict[str, Any]]]) -> AsyncIterator[str]:
    """The document piece by piece, one page of results in memory at a time."""
    yield report.head()
    async for page in pages:
        for result in page:
            piece = report.file(result)
            if piece:
                yield piece
    yield report.tail()

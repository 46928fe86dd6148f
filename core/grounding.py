"""Findings held to the stored text: every delivered line is backed by a quote found there.

Real models copy text well and count lines badly: they cite a neighbouring line, or report
a violation that is not in the text at all. So a finding that points at text carries a
`quote` copied from its lines, and before anything is stored the quote is looked up in
the part's own lines as the part showed them (the decoded stored bytes, never the model's
echo of them, never a context block such as a CSV header row):

- the check ignores only whitespace (every run of it, line breaks included) and the
  "N| " line-number prefixes a model may copy along with a line;
- the quote must occur within the cited lines; a quote spanning lines matches across the
  line breaks of the cited range only;
- otherwise the part's lines are searched: one match moves the finding there, several
  move it to the match nearest the cited line (the model's line is kept as `cited_line`);
  a match may span at most as many lines as the quote or the cited range has, so it never
  runs across a line break the model did not cite;
- no match: the finding is **ungrounded**. It never counts: it goes to the verdict's
  `ungrounded` list, escaped, for audit.

**Absence** findings ("this part lacks X") have nothing to quote: they carry
`kind: "absence"`, an empty quote, and must span the whole part (or the whole file), which
is all that can be checked of them. Evidence (`{line, quote, note}`, what a part shows that
bears on the whole file) is checked like a finding; ungrounded evidence is dropped.

A combine call sees reports, never text: a finding or evidence it adds must quote a
report's grounded quote (or part of one), and lands on that quote's lines. Since those
quotes were found in the stored bytes, so is theirs.

A failing verdict left without a grounded finding is asked again (`Grounded.reask`); a
second answer no better leaves the rule **undecided** (`passed: None`, `undecided:
"ungrounded"`): never a pass, never a failure at invented lines.

Pure and stdlib-only: the Lambdas import this module.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.lines import line_contents

QUOTE_CHARS = 200  # a quote as stored and shown (the prompt asks for at most about 200 characters)
SNIPPET_CHARS = 240  # the cited lines' text shown beside a finding
TEXT, ABSENCE = "text", "absence"
UNGROUNDED = "ungrounded"  # the `undecided` reason of a rule whose failure no quote backed, twice
ERROR = "error"  # the `undecided` reason of a rule whose file failed before it was decided

_WHITESPACE = re.compile(r"\s+")
_PREFIX = re.compile(r"^[ \t]*[0-9]+\|[ ]?", re.MULTILINE)
_QUOTE_LINES = re.compile(r"\r\n|\r|\n")


def squeeze(text: str) -> str:
    """`text` without any whitespace: what the check compares."""
    return _WHITESPACE.sub("", text)


def bare_quote(quote: str) -> str:
    """A model's quote as compared: without "N| " prefixes at line starts, without whitespace."""
    return squeeze(_PREFIX.sub("", quote))


def quote_lines(quote: str) -> int:
    """How many lines a quote spans as written (at least 1)."""
    return len(_QUOTE_LINES.findall(quote.strip())) + 1


def printable(text: str, limit: int) -> str:
    """Untrusted text made safe to show anywhere (a terminal, a CSV cell, a log line): control and
    line/paragraph separator characters as \\xNN / \\uNNNN escapes (the "\\n" between lines and tabs
    kept), cut to `limit` characters with "…"."""
    out = []
    for char in text:
        if char in "\n\t" or unicodedata.category(char) not in ("Cc", "Cf", "Zl", "Zp"):
            out.append(char)
        else:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    shown = "".join(out)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def location(line: int, end_line: int) -> str:
    return f"line {line}" if line == end_line else f"lines {line}-{end_line}"


@dataclass(frozen=True)
class Located:
    line: int
    end_line: int
    moved: bool


def _nearest(matches: Iterable[tuple[int, int]], line: int) -> tuple[int, int] | None:
    """The match nearest the cited line; the earlier one on a tie."""
    return min(matches, key=lambda m: (abs(m[0] - line), m[0]), default=None)


class PartLines:
    """A part's own lines as the part showed them, numbered from `first`, squeezed once."""

    def __init__(self, text: str, first: int) -> None:
        self.first = first
        self.contents = line_contents(text) or [""]
        self.last = first + len(self.contents) - 1
        squeezed = [squeeze(c) for c in self.contents]
        self._joined = "".join(squeezed)
        self._starts = [0]
        for piece in squeezed:
            self._starts.append(self._starts[-1] + len(piece))

    def _line_at(self, offset: int) -> int:
        """The number of the line holding squeezed character `offset` (empty lines hold none)."""
        return self.first + bisect_right(self._starts, offset) - 1

    def _holds(self, bare: str, line: int, end_line: int) -> bool:
        if not self.first <= line <= end_line <= self.last:
            return False
        start, stop = self._starts[line - self.first], self._starts[end_line - self.first + 1]
        return bare in self._joined[start:stop]

    def matches(self, bare: str, width: int) -> list[tuple[int, int]]:
        """(line, end_line) of every occurrence of `bare`, each the fewest lines holding it, at most `width` lines."""
        found: list[tuple[int, int]] = []
        at = self._joined.find(bare)
        while at >= 0:
            span = (self._line_at(at), self._line_at(at + len(bare) - 1))
            if span[1] - span[0] < width and (not found or found[-1] != span):
                found.append(span)
            at = self._joined.find(bare, at + 1)
        return found

    def locate(self, quote: str, line: int, end_line: int) -> Located | None:
        """Where `quote` is: the cited lines if they hold it, else the nearest match in the part; None if nowhere."""
        bare = bare_quote(quote)
        if not bare:
            return None
        if self._holds(bare, line, end_line):
            return Located(line, end_line, False)
        width = max(quote_lines(quote), end_line - line + 1)
        best = _nearest(self.matches(bare, width), line)
        return None if best is None else Located(best[0], best[1], True)

    def snippet(self, line: int, end_line: int) -> str:
        """The text of lines line..end_line as stored, made printable and cut to a readable length."""
        shown = self.contents[line - self.first : end_line - self.first + 1]
        return printable("\n".join(shown), SNIPPET_CHARS)


@dataclass(frozen=True)
class Source:
    """A grounded quote of a report (a finding's or evidence's): its lines, its text, its snippet."""

    line: int
    end_line: int
    bare: str
    snippet: str


class ReportQuotes:
    """The grounded quotes of the reports a combine call saw: what its own quotes must come from."""

    def __init__(self, verdicts: Iterable[Sequence[dict[str, Any]]]) -> None:
        self.sources: list[Source] = []
        for report in verdicts:
            for verdict in report:
                for f in verdict.get("findings") or []:
                    if f.get("kind", TEXT) == TEXT and f.get("quote"):
                        self._add(int(f["line"]), int(f["end_line"]), str(f["quote"]), str(f.get("snippet", "")))
                for e in evidence_items(verdict.get("evidence")):
                    self._add(int(e["line"]), int(e["line"]), str(e["quote"]), str(e.get("snippet", "")))

    def _add(self, line: int, end_line: int, quote: str, snippet: str) -> None:
        bare = bare_quote(quote)
        if bare:
            self.sources.append(Source(line, end_line, bare, snippet))

    def locate(self, quote: str, line: int, end_line: int) -> tuple[Located, str] | None:
        """The report quote holding `quote` (within the cited lines, else the nearest), with its snippet."""
        bare = bare_quote(quote)
        holding = [s for s in self.sources if bare and bare in s.bare]
        if not holding:
            return None
        inside = next((s for s in holding if line <= s.line and s.end_line <= end_line), None)
        if inside is not None:
            return Located(line, end_line, False), inside.snippet
        best = min(holding, key=lambda s: (abs(s.line - line), s.line))
        return Located(best.line, best.end_line, True), best.snippet


def evidence_items(evidence: Any) -> list[dict[str, Any]]:
    """Stored evidence as a list of {line, quote, note}; anything else (older free text) as none."""
    if not isinstance(evidence, list):
        return []
    return [e for e in evidence if isinstance(e, dict) and "line" in e and "quote" in e]


@dataclass
class Grounded:
    """Verdicts after the check, and what the check did."""

    verdicts: list[dict[str, Any]]
    relocated: int = 0
    ungrounded: int = 0
    checked: int = 0  # quotes looked up (findings of kind text, evidence)
    reask: list[str] = field(default_factory=list)  # rule ids: failing with no grounded finding, or a pass unbacked

    @property
    def undecided(self) -> bool:
        return any(v.get("passed") is None for v in self.verdicts)


class _Checker:
    """Grounds one answer's verdicts against a part's lines or a combine call's report quotes."""

    def __init__(self, part: PartLines | None, reports: ReportQuotes | None, spans: set[tuple[int, int]]) -> None:
        self.part, self.reports, self.spans = part, reports, spans
        self.relocated = self.ungrounded = self.checked = 0

    def _where(self, quote: str, line: int, end_line: int) -> tuple[Located, str] | None:
        if self.part is not None:
            found = self.part.locate(quote, line, end_line)
            return None if found is None else (found, self.part.snippet(found.line, found.end_line))
        assert self.reports is not None
        return self.reports.locate(quote, line, end_line)

    def finding(self, raw: dict[str, Any], ungrounded: list[dict[str, Any]]) -> dict[str, Any] | None:
        line, end_line, message = int(raw["line"]), int(raw["end_line"]), str(raw["message"])
        if raw.get("kind") == ABSENCE:
            if (line, end_line) in self.spans:
                return absence_finding(line, end_line, message)
            where = None  # an absence claim about some lines only cannot be checked: it does not count
        else:
            self.checked += 1
            where = self._where(str(raw.get("quote", "")), line, end_line)
        if where is None:
            self.ungrounded += 1
            ungrounded.append(_ungrounded(raw, "finding", message))
            return None
        found, snippet = where
        self.relocated += found.moved
        return text_finding(
            found.line, found.end_line, message, str(raw["quote"]), snippet, cited_line=line if found.moved else None
        )

    def evidence(self, raw: dict[str, Any], ungrounded: list[dict[str, Any]]) -> dict[str, Any] | None:
        line = int(raw["line"])
        self.checked += 1
        where = self._where(str(raw.get("quote", "")), line, line)
        if where is None:
            self.ungrounded += 1
            ungrounded.append(_ungrounded({**raw, "end_line": line}, "evidence", str(raw.get("note", ""))))
            return None
        found, snippet = where
        self.relocated += found.moved
        return {
            "line": found.line,
            "quote": printable(str(raw["quote"]), QUOTE_CHARS),
            "note": printable(str(raw.get("note", "")), QUOTE_CHARS),
            "snippet": snippet,
        }

    def verdict(self, raw: dict[str, Any], kept: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        ungrounded: list[dict[str, Any]] = []
        findings = [f for r in raw["findings"] if (f := self.finding(r, ungrounded)) is not None]
        evidence = [e for r in raw["evidence"] if (e := self.evidence(r, ungrounded)) is not None]
        findings = sorted((kept or []) + findings, key=lambda f: (f["line"], f["end_line"]))
        return {
            "id": raw["id"],
            "passed": raw["passed"],
            "findings": findings,
            "evidence": evidence,
            "ungrounded": ungrounded,
        }


def text_finding(
    line: int, end_line: int, message: str, quote: str, snippet: str, cited_line: int | None = None
) -> dict[str, Any]:
    found: dict[str, Any] = {
        "line": line,
        "end_line": end_line,
        "location": location(line, end_line),
        "message": message,
        "kind": TEXT,
        "quote": printable(quote, QUOTE_CHARS),
        "snippet": snippet,
    }
    if cited_line is not None:
        found["cited_line"] = cited_line
    return found


def absence_finding(line: int, end_line: int, message: str) -> dict[str, Any]:
    return {
        "line": line,
        "end_line": end_line,
        "location": location(line, end_line),
        "message": message,
        "kind": ABSENCE,
        "quote": "",
        "snippet": "",
    }


def _ungrounded(raw: dict[str, Any], source: str, message: str) -> dict[str, Any]:
    return {
        "line": int(raw["line"]),
        "end_line": int(raw["end_line"]),
        "quote": printable(str(raw.get("quote", "")), QUOTE_CHARS),
        "message": printable(message, QUOTE_CHARS),
        "source": source,
    }


def _needs_reask(verdict: dict[str, Any]) -> bool:
    return verdict["passed"] is False and not verdict["findings"]


def ground_part(raw: list[dict[str, Any]], text: str, first_line: int, last_line: int) -> Grounded:
    """A part answer's verdicts (core/prompt.parse_part_answer) checked against the part's text."""
    part = PartLines(text, first_line)
    checker = _Checker(part, None, {(first_line, last_line), (first_line, part.last)})
    verdicts = [checker.verdict(v) for v in raw]
    reask = [v["id"] for v in verdicts if _needs_reask(v)]
    return Grounded(verdicts, checker.relocated, checker.ungrounded, checker.checked, reask)


def ground_combine(
    raw: list[dict[str, Any]],
    reports: Sequence[Sequence[dict[str, Any]]],
    kept: list[list[dict[str, Any]]],
    span: tuple[int, int],
    file_last_line: int,
) -> Grounded:
    """A combine answer's verdicts (with each rule's findings kept from the reports) checked against
    the reports' grounded quotes. A pass of a rule that some report did not pass rests on evidence:
    without grounded evidence it is asked again."""
    checker = _Checker(None, ReportQuotes(reports), {span, (1, file_last_line)})
    verdicts = [checker.verdict(v, k) for v, k in zip(raw, kept, strict=True)]
    reask = []
    for verdict in verdicts:
        overrides = any(
            next((x.get("passed") for x in report if x["id"] == verdict["id"]), None) is not True for report in reports
        )
        if _needs_reask(verdict) or (verdict["passed"] is True and overrides and not verdict["evidence"]):
            reask.append(verdict["id"])
    return Grounded(verdicts, checker.relocated, checker.ungrounded, checker.checked, reask)


def settle(first: Grounded, second: Grounded | None) -> Grounded:
    """The first answer's verdicts, those asked again taken from the second answer; a rule the
    second answer still does not back is undecided. `second` None: the re-ask gave no usable
    answer, so those rules are undecided."""
    by_id = {v["id"]: v for v in second.verdicts} if second is not None else {}
    still = set(second.reask) if second is not None else set(first.reask)
    verdicts = []
    for verdict in first.verdicts:
        rule = verdict["id"]
        if rule not in first.reask:
            verdicts.append(verdict)
            continue
        again = by_id.get(rule)
        if again is not None and rule not in still:
            verdicts.append({**again, "ungrounded": verdict["ungrounded"] + again["ungrounded"]})
            continue
        claims = verdict["ungrounded"] + (again["ungrounded"] if again is not None else [])
        verdicts.append(
            {
                "id": rule,
                "passed": None,
                "undecided": UNGROUNDED,
                "findings": [],
                "evidence": verdict["evidence"],
                "ungrounded": claims,
            }
        )
    both = [first] if second is None else [first, second]
    return Grounded(
        verdicts,
        sum(g.relocated for g in both),
        sum(g.ungrounded for g in both),
        sum(g.checked for g in both),
        [],
    )


def reask_note(verdicts: list[dict[str, Any]], rules: list[str]) -> str:
    """What the second ask adds: which quotes (or passes) of the first answer could not be backed."""
    lines = [
        "Your previous answer could not be checked against the text for the rules below. A finding's quote must be "
        "copied exactly from the text lines it cites (without the line-number prefix); a pass of a rule that a report "
        "did not pass must cite evidence copied from a report. Answer every rule again. Report only violations you can "
        "quote, with the line numbers of the lines that hold the quote."
    ]
    for verdict in verdicts:
        if verdict["id"] not in rules:
            continue
        claims = verdict["ungrounded"] or []
        if not claims:
            lines.append(f"- rule {verdict['id']}: the pass cites no evidence found in the reports.")
        for claim in claims[:10]:
            lines.append(f"- rule {verdict['id']}: line {claim['line']}, quote {claim['quote']!r} was not found there.")
    return "\n".join(lines)

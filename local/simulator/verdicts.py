"""The simulator's deterministic verdicts: the model's side of core/prompt.py's format.

The simulator reads the prompt the way a careful model would, with its own parser (never
the product's), so a product bug in the format shows up as a wrong verdict:

- the call is a **combine** call when `response_format.json_schema.name` is
  "file_verdicts", a **part** call when it is "part_verdicts"; without that name, a
  combine call when the user message declares a REPORTS block, else a part call;
- only the first user message is read (a re-ask's later messages, the first answer and
  the note, change no verdict: only mistakes.py's draws);
- the rules come only from that message's first line, when it starts with
  `Rules (JSON): `;
- the nonce comes only from the declaration line, a whole line of the form
  `The text to check is between the lines TEXT-<nonce> and END-TEXT-<nonce>.` (part) or
  `The reports are between the lines REPORTS-<nonce> and END-REPORTS-<nonce>, one JSON
  object per line.` (combine); the first such line counts;
- only the lines strictly between the exact delimiter lines that follow the declaration
  are read: in a part call, lines of the form `<number>| <content>` (others are ignored);
  in a combine call, one JSON object per line (others are ignored). The CONTEXT block
  (a CSV header row) is never judged and its lines are never cited.

Part calls, per rule (WORD matches case-insensitively, as `re.IGNORECASE` matches;
messages quote WORD as the rule writes it; a line's "quote" is its content as shown,
without the "N| " prefix, or, when that content is longer than 200 characters, the 200
characters of it starting 80 characters before WORD's first match, moved to end at the
content's end when fewer follow, and later when WORD is longer than 120 characters):
- a rule whose text contains `must not contain "WORD"` gets one finding per shown line
  holding WORD, `{"line": n, "end_line": n, "kind": "text", "quote": <that line's
  quote>, "message": 'contains "WORD"'}`; it passes iff there is none; evidence [];
- a rule with `must contain "WORD"` passes when a shown line holds WORD, with evidence
  `[{"line": N, "quote": <line N's quote>, "note": 'holds "WORD"'}]` (N the first such
  line); otherwise it fails with one finding `{"line": <first shown>, "end_line": <last
  shown>, "kind": "absence", "quote": "", "message": 'does not contain "WORD"'}` and
  evidence [];
- any other rule passes, with findings [] and evidence [].

Combine calls, per rule:
- `must contain "WORD"` (and not `must not contain`) passes with keep [] when any report
  passed that rule (`"passed": true`), with evidence the first passing report's
  `evidence` items for it copied as shown (`line`, `quote`, `note`; an item without an
  integer line or a string quote is left out), findings []; otherwise it fails with keep
  [], evidence [] and one finding `{"line": <the first report's first line>, "end_line":
  <the last report's last line>, "kind": "absence", "quote": "", "message": 'the file
  does not contain "WORD"'}`;
- any other rule (`must not contain` included) keeps every report whose `findings` count
  for that rule is above 0, adds no finding, and passes iff it keeps none; evidence [].

When a prompt shows no text line (or no report), a span that needs one cites line 1.
Same input, same answer: these are the noiseless verdicts. mistakes.py then makes the
mistakes a real model makes, at the configured rates (none by default), and faults.py
the scripted faults.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

PART: Literal["part"] = "part"
COMBINE: Literal["combine"] = "combine"
CallKind = Literal["part", "combine"]
TEXT, ABSENCE = "text", "absence"
QUOTE_CHARS = 200  # the most a quote holds, as the prompt asks
QUOTE_LEAD = 80  # characters of a long line kept before WORD in its quote

_RULES_MARKER = "Rules (JSON): "  # written here, not imported: the model reads what it is shown
_SCHEMA_KINDS: dict[str, CallKind] = {"part_verdicts": PART, "file_verdicts": COMBINE}
_TEXT_DECLARATION = re.compile(r"The text to check is between the lines TEXT-(\w+) and END-TEXT-\1\.")
_REPORTS_DECLARATION = re.compile(
    r"The reports are between the lines REPORTS-(\w+) and END-REPORTS-\1, one JSON object per line\."
)
_NUMBERED = re.compile(r"(\d+)\| ?(.*)")
_MUST_NOT = re.compile(r'must not contain\s+"([^"]+)"', re.IGNORECASE)
_MUST = re.compile(r'must contain\s+"([^"]+)"', re.IGNORECASE)


@dataclass(frozen=True)
class Call:
    """What a chat completion request shows the model."""

    kind: CallKind
    rules: list[dict[str, str]]
    lines: list[tuple[int, str]] = field(default_factory=list)  # part: the text lines shown
    reports: list[dict[str, Any]] = field(default_factory=list)  # combine: the reports, in order
    later: tuple[str, ...] = ()  # the content of every message after the first user message (a re-ask's)

    @property
    def span(self) -> tuple[int, int]:
        """First and last line shown (part) or covered by the reports (combine)."""
        if self.kind == PART and self.lines:
            return self.lines[0][0], self.lines[-1][0]
        if self.kind == COMBINE and self.reports:
            return self.reports[0]["lines"][0], self.reports[-1]["lines"][1]
        return 1, 1


def read_call(body: dict[str, Any]) -> Call:
    """The call a chat completion request makes, read from its first user message."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    at = next((i for i, m in enumerate(messages) if m.get("role") == "user"), len(messages))
    user = str(messages[at].get("content", "")) if at < len(messages) else ""
    later = tuple(str(m.get("content", "")) for m in messages[at + 1 :])
    lines = user.split("\n")  # the builders join with "\n"; other separators are part of a line
    rules = _read_rules(lines[0])
    schema = str(((body.get("response_format") or {}).get("json_schema") or {}).get("name", ""))
    reports = _block(lines, _REPORTS_DECLARATION, "REPORTS")
    kind = _SCHEMA_KINDS.get(schema) or (PART if reports is None else COMBINE)
    if kind == COMBINE:
        return Call(kind, rules, reports=_read_reports(reports or []), later=later)
    return Call(kind, rules, lines=_read_numbered(_block(lines, _TEXT_DECLARATION, "TEXT") or []), later=later)


def _read_rules(first_line: str) -> list[dict[str, str]]:
    if not first_line.startswith(_RULES_MARKER):
        return []
    try:
        rules = json.loads(first_line[len(_RULES_MARKER) :])
    except ValueError:
        return []
    if not isinstance(rules, list):
        return []
    return [r for r in rules if isinstance(r, dict) and isinstance(r.get("id"), str)]


def _block(lines: list[str], declaration: re.Pattern[str], name: str) -> list[str] | None:
    """The lines strictly between the delimiters the first declaration line names."""
    for i, line in enumerate(lines):
        if m := declaration.fullmatch(line):
            opening, closing = f"{name}-{m.group(1)}", f"END-{name}-{m.group(1)}"
            try:
                start = lines.index(opening, i + 1) + 1
                return lines[start : lines.index(closing, start)]
            except ValueError:  # a delimiter is missing: nothing is shown
                return []
    return None


def _read_numbered(block: list[str]) -> list[tuple[int, str]]:
    return [(int(m.group(1)), m.group(2)) for line in block if (m := _NUMBERED.fullmatch(line))]


def _read_reports(block: list[str]) -> list[dict[str, Any]]:
    reports = []
    for line in block:
        try:
            report = json.loads(line)
        except ValueError:
            continue
        if (
            isinstance(report, dict)
            and isinstance(report.get("report"), int)
            and isinstance(report.get("lines"), list)
            and len(report["lines"]) == 2
            and all(isinstance(n, int) for n in report["lines"])
            and isinstance(report.get("rules"), dict)
        ):
            reports.append(report)
    return reports


# --- judging ----------------------------------------------------------------------------------------


def verdicts(call: Call) -> list[dict[str, Any]]:
    """The answer's `results`, one verdict per rule asked, in the rules' order: the noiseless verdicts."""
    judge = _judge_part if call.kind == PART else _judge_combine
    return [judge(rule, call) for rule in call.rules]


def text_finding(line: int, end_line: int, quote: str, message: str) -> dict[str, Any]:
    return {"line": line, "end_line": end_line, "kind": TEXT, "quote": quote, "message": message}


def absence_finding(span: tuple[int, int], message: str) -> dict[str, Any]:
    return {"line": span[0], "end_line": span[1], "kind": ABSENCE, "quote": "", "message": message}


def line_quote(content: str, at: int = 0, length: int = 0) -> str:
    """A shown line's quote: all of it when it fits in QUOTE_CHARS, else the QUOTE_CHARS characters
    from QUOTE_LEAD before the match at `at` (of `length` characters): never before the line's
    start, never past its end, and later when the match would not end inside."""
    if len(content) <= QUOTE_CHARS:
        return content
    start = max(0, at + length - QUOTE_CHARS, min(at - QUOTE_LEAD, len(content) - QUOTE_CHARS))
    return content[start : start + QUOTE_CHARS]


def _holding(word: str, lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """(line, quote) of every shown line holding `word`, case-insensitively."""
    pattern = re.compile(re.escape(word), re.IGNORECASE)
    return [
        (n, line_quote(content, m.start(), len(m.group()))) for n, content in lines if (m := pattern.search(content))
    ]


def _judge_part(rule: dict[str, str], call: Call) -> dict[str, Any]:
    text = str(rule.get("text", ""))
    findings: list[dict[str, Any]] = []
    evidence: list[dict[str, Any]] = []
    if m := _MUST_NOT.search(text):
        word = m.group(1)
        findings = [text_finding(n, n, quote, f'contains "{word}"') for n, quote in _holding(word, call.lines)]
    elif m := _MUST.search(text):
        word = m.group(1)
        holding = _holding(word, call.lines)
        if holding:
            evidence = [{"line": holding[0][0], "quote": holding[0][1], "note": f'holds "{word}"'}]
        else:
            findings = [absence_finding(call.span, f'does not contain "{word}"')]
    return {"rule_id": rule["id"], "passed": not findings, "findings": findings, "evidence": evidence}


def _result(report: dict[str, Any], rule_id: str) -> dict[str, Any]:
    result = report["rules"].get(rule_id)
    return result if isinstance(result, dict) else {}


def _shown_evidence(result: dict[str, Any]) -> list[dict[str, Any]]:
    """A report's evidence items for a rule, copied as shown: {line, quote, note}."""
    items = result.get("evidence")
    return [
        {"line": e["line"], "quote": e["quote"], "note": e["note"] if isinstance(e.get("note"), str) else ""}
        for e in (items if isinstance(items, list) else [])
        if isinstance(e, dict) and _is_int(e.get("line")) and isinstance(e.get("quote"), str)
    ]


def _judge_combine(rule: dict[str, str], call: Call) -> dict[str, Any]:
    text = str(rule.get("text", ""))
    rule_id = rule["id"]
    if (m := _MUST.search(text)) and not _MUST_NOT.search(text):
        passing = next((r for r in call.reports if _result(r, rule_id).get("passed") is True), None)
        if passing is not None:
            return _combined(rule_id, True, [], [], _shown_evidence(_result(passing, rule_id)))
        absent = absence_finding(call.span, f'the file does not contain "{m.group(1)}"')
        return _combined(rule_id, False, [], [absent], [])
    keep = [r["report"] for r in call.reports if _count(_result(r, rule_id).get("findings")) > 0]
    return _combined(rule_id, not keep, keep, [], [])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(findings: Any) -> int:
    return findings if _is_int(findings) else 0


def _combined(
    rule_id: str, passed: bool, keep: list[int], findings: list[dict[str, Any]], evidence: list[dict[str, Any]]
) -> dict[str, Any]:
    return {"rule_id": rule_id, "passed": passed, "keep": keep, "findings": findings, "evidence": evidence}

"""The simulator's deterministic verdicts.

A rule whose text contains `must not contain "WORD"` fails on every line holding WORD
(case-insensitive), with one finding per line. A rule with `must contain "WORD"` fails
when no line of the chunk holds WORD. Every other rule passes. Same input, same answer.
"""

from __future__ import annotations

import json
import re
from typing import Any

from core.prompt import RULES_MARKER, TEXT_CLOSE, TEXT_OPEN

_MUST_NOT = re.compile(r'must not contain\s+"([^"]+)"', re.IGNORECASE)
_MUST = re.compile(r'must contain\s+"([^"]+)"', re.IGNORECASE)
_NUMBERED = re.compile(r"^(\d+)\| ?(.*)$")


def read_prompt(user_message: str) -> tuple[list[dict[str, str]], list[tuple[int, str]]]:
    """The rules and the numbered lines of the prompt core/prompt.py builds."""
    rules: list[dict[str, str]] = []
    lines: list[tuple[int, str]] = []
    inside = False
    for raw in user_message.splitlines():
        if raw.startswith(RULES_MARKER):
            rules = json.loads(raw[len(RULES_MARKER) :])
        elif raw == TEXT_OPEN:
            inside = True
        elif raw == TEXT_CLOSE:
            inside = False
        elif inside and (m := _NUMBERED.match(raw)):
            lines.append((int(m.group(1)), m.group(2)))
    return rules, lines


def judge(rule: dict[str, str], lines: list[tuple[int, str]]) -> dict[str, Any]:
    text = rule.get("text", "")
    findings: list[dict[str, str]] = []
    if m := _MUST_NOT.search(text):
        word = m.group(1).lower()
        findings = [
            {"location": f"line {n}", "message": f'contains "{m.group(1)}"'} for n, line in lines if word in line.lower()
        ]
    elif m := _MUST.search(text):
        word = m.group(1).lower()
        if not any(word in line.lower() for _, line in lines):
            span = f"lines {lines[0][0]}-{lines[-1][0]}" if lines else "line 1"
            findings = [{"location": span, "message": f'does not contain "{m.group(1)}"'}]
    return {"rule_id": rule["id"], "passed": not findings, "findings": findings}


def answer(user_message: str) -> str:
    rules, lines = read_prompt(user_message)
    return json.dumps({"results": [judge(rule, lines) for rule in rules]})

"""A file's result (the results API and the `result` events), from its parts and its verdict.

A rule's verdict is about the file. A single-part file's verdict is its part's answer. A
multi-part file's verdict is its combine step's (the `verdict#` record); until that exists
the file is not decided: its rules show `passed: null` with the violations its parts have
found so far, so partial results are useful without claiming a whole-file answer.

An ended file's `passed: null` always comes with `undecided` and a reason: "ungrounded"
(the model's failures could not be found in the text, asked twice: core/grounding.py) or
"error" (the file failed before the rule was decided). Findings carry their quote, the
cited lines' text (`snippet`) and, when the service moved them, the model's `cited_line`;
claims that could not be found are listed under `ungrounded`, apart from the findings.
"""

from __future__ import annotations

from typing import Any

from core.grounding import ERROR
from core.records import PartStatus

_FINDING_KEYS = ("line", "end_line", "location", "message", "kind", "quote", "snippet", "cited_line")


def _status(parts: list[dict[str, Any]], verdict: dict[str, Any] | None) -> str:
    statuses = {p["status"] for p in parts}
    if PartStatus.FAILED in statuses or (verdict is not None and verdict.get("status") == PartStatus.FAILED):
        return "FAILED"
    decided = len(parts) == 1 or (verdict is not None and verdict.get("status") == PartStatus.SUCCEEDED)
    if statuses == {PartStatus.SUCCEEDED} and decided:
        return "SUCCEEDED"
    return "RUNNING" if PartStatus.SUCCEEDED in statuses else "PENDING"


def _sorted_unique(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """By line; the same finding twice (pieces of one long line in two parts) once."""
    seen, out = set(), []
    for f in sorted(findings, key=lambda f: (f.get("line") or 0, f.get("end_line") or 0)):
        key = (f.get("line"), f.get("end_line"), f.get("location"), f.get("message"))
        if key not in seen:
            seen.add(key)
            out.append({k: v for k, v in f.items() if k in _FINDING_KEYS})
    return out


def _verdict_rules(verdicts: list[dict[str, Any]], rule_ids: list[str]) -> list[dict[str, Any]]:
    by_id = {v["id"]: v for v in verdicts}
    rules = []
    for r in rule_ids:
        if r not in by_id:
            continue
        verdict = by_id[r]
        passed = verdict["passed"]
        rule: dict[str, Any] = {
            "id": r,
            "passed": None if passed is None else bool(passed),
            "findings": _sorted_unique(verdict["findings"]),
            "ungrounded": list(verdict.get("ungrounded") or []),
        }
        if passed is None:
            rule["undecided"] = verdict.get("undecided") or ERROR
        rules.append(rule)
    return rules


def _provisional(parts: list[dict[str, Any]], rule_ids: list[str], ended: bool) -> list[dict[str, Any]]:
    """Not decided: the parts' findings so far; once the file ended (failed), undecided for an error."""
    found: dict[str, list[dict[str, Any]]] = {}
    claims: dict[str, list[dict[str, Any]]] = {}
    for part in parts:
        for verdict in part.get("rules") or []:
            found.setdefault(verdict["id"], []).extend(verdict["findings"])
            claims.setdefault(verdict["id"], []).extend(verdict.get("ungrounded") or [])
    rules = []
    for r in rule_ids:
        if r in found or ended:
            rule = {
                "id": r,
                "passed": None,
                "findings": _sorted_unique(found.get(r, [])),
                "ungrounded": claims.get(r, []),
            }
            rules.append({**rule, "undecided": ERROR} if ended else rule)
    return rules


def file_result(
    name: str,
    parts: list[dict[str, Any]],
    rule_ids: list[str],
    verdict: dict[str, Any] | None = None,
    rejected: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One file's result: status, per-rule verdicts with findings at the file's lines, part counts.
    A file the plan step `rejected` (not text, empty: core/text.py) has no parts: FAILED, with why."""
    if rejected is not None:
        return {
            "file": name,
            "status": "FAILED",
            "rules": _provisional([], rule_ids, ended=True),
            "parts": {"total": 0, "succeeded": 0, "failed": 0},
            "error": rejected,
        }
    status = _status(parts, verdict)
    if len(parts) == 1 and parts[0]["status"] == PartStatus.SUCCEEDED:
        rules = _verdict_rules(parts[0].get("rules") or [], rule_ids)
    elif verdict is not None and verdict.get("status") == PartStatus.SUCCEEDED:
        rules = _verdict_rules(verdict.get("rules") or [], rule_ids)
    else:
        rules = _provisional(parts, rule_ids, ended=status == "FAILED")
    result: dict[str, Any] = {
        "file": name,
        "status": status,
        "rules": rules,
        "parts": {
            "total": len(parts),
            "succeeded": sum(p["status"] == PartStatus.SUCCEEDED for p in parts),
            "failed": sum(p["status"] == PartStatus.FAILED for p in parts),
        },
    }
    errors = [p["error"] for p in parts if p.get("error")] + (
        [verdict["error"]] if verdict and verdict.get("error") else []
    )
    if errors:
        result["error"] = errors[0]
    return result

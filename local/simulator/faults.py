"""Scripted faults: the ways a real model's answer goes wrong, on demand and in order.

`SimulatorConfig.faults` is a queue of entries, `"<fault>"` (the next answered call of
either kind) or `"part:<fault>"` / `"combine:<fault>"` (the next answered call of that
kind). Each answered call (admitted by the rate limits, not answered 429 or 500) takes
the first entry that applies to its kind, so a prefixed entry waits for its kind without
holding back the entries behind it. Reconfiguring `faults` replaces the queue.

- `malformed`: the content is not JSON (prose before the answer); finish_reason "stop";
- `cut`: the answer cut to half its tokens (or to max_tokens, if fewer), finish_reason
  "length", `completion_tokens` = the tokens returned;
- `repeat_rule`: the first verdict appears twice, the copy (right after it) with
  `passed` flipped;
- `drop_rule`: the last verdict is missing;
- `unknown_rule`: an extra verdict, passing (`findings: []`, `evidence: []`, and `keep:
  []` in a combine answer), for a rule id that was not asked;
- `string_passed`: every `passed` is the JSON string "true" / "false";
- `line_outside`: the first finding (of the first verdict that has one) moves to the line
  after the shown range (part) or after the reports' lines (combine), `line` and
  `end_line` both, its kind and quote unchanged: the service finds a text finding's quote
  and moves it back (an absence finding so moved spans the wrong lines and does not
  count). When no verdict has findings, the first verdict fails with one such finding,
  `{"kind": "text", "quote": ..., "message": "out of range"}`, its quote copied from the
  last shown line (part; its first 200 characters when it is longer) or the first quote the
  reports show, a finding's (`quote`) or an evidence item's, in the reports' order (combine;
  "" when they show none);
- `no_finding`: the first verdict fails with no finding (`passed: false`, `findings: []`,
  and `keep: []` in a combine answer), its evidence unchanged;
- `invent`: the first verdict fails with one more finding, invented as mistakes.py
  invents one (kind "text", a quote "value 0x<hex> out of range" found nowhere the call
  shows, message `contains "<that quote>"`), at the first shown line (part) or the
  reports' first line (combine; `keep` unchanged); its hex digits are drawn from the call's draws with
  mistake_seed 0 (mistakes.draws), so the same request gets the same invention. The
  service finds its quote nowhere: the finding never counts, and the rule is asked again
  when it has no other finding. Not counted among the mistakes (`Stats.mistakes`).

Faults apply to the verdicts as mistakes.py left them.

A fault that needs a verdict changes nothing in an answer without rules.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable
from typing import Any

from local.simulator import mistakes
from local.simulator.verdicts import COMBINE, PART, Call, CallKind, line_quote, text_finding

MALFORMED, CUT = "malformed", "cut"
FAULTS = frozenset(
    {
        MALFORMED,
        CUT,
        "repeat_rule",
        "drop_rule",
        "unknown_rule",
        "string_passed",
        "line_outside",
        "no_finding",
        "invent",
    }
)
_PREFIXES: dict[str, CallKind | None] = {"": None, PART: PART, COMBINE: COMBINE}
MALFORMED_PREFIX = "Here are the verdicts you asked for:\n"


def parse_entry(entry: str) -> tuple[CallKind | None, str]:
    """("part" | "combine" | None, fault) of a queue entry; ValueError for an unknown one."""
    prefix, _, fault = entry.rpartition(":")
    if fault not in FAULTS or prefix not in _PREFIXES:
        raise ValueError(
            f"unknown simulator fault {entry!r}: use one of {sorted(FAULTS)}, optionally after 'part:' or 'combine:'"
        )
    return _PREFIXES[prefix], fault


class FaultQueue:
    """The scripted faults still to inject; shared by the server's thread and the test's."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._entries: list[tuple[CallKind | None, str]] = []
        self.replace(entries)

    def replace(self, entries: Iterable[str]) -> None:
        parsed = [parse_entry(e) for e in entries]  # all checked before any replaces the queue
        with self._lock:
            self._entries = parsed

    def take(self, kind: CallKind) -> str | None:
        """The fault for the next answered call of this kind, if one is scripted."""
        with self._lock:
            for i, (wanted, fault) in enumerate(self._entries):
                if wanted in (None, kind):
                    del self._entries[i]
                    return fault
        return None


def apply(fault: str | None, call: Call, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The verdicts as the faulty answer states them (`malformed` and `cut` change the content instead)."""
    results = copy.deepcopy(results)
    if fault == "unknown_rule":
        asked = {r["id"] for r in call.rules}
        rule_id = next(f"not-asked-{i}" for i in range(len(asked) + 1) if f"not-asked-{i}" not in asked)
        extra: dict[str, Any] = {"rule_id": rule_id, "passed": True, "findings": [], "evidence": []}
        return results + [{**extra, "keep": []} if call.kind == COMBINE else extra]
    if fault == "string_passed":
        return [{**v, "passed": "true" if v["passed"] else "false"} for v in results]
    if not results:
        return results
    if fault == "repeat_rule":
        first = results[0]
        return [first, {**copy.deepcopy(first), "passed": not first["passed"]}, *results[1:]]
    if fault == "drop_rule":
        return results[:-1]
    if fault == "invent":
        results[0]["findings"].append(mistakes.invention(mistakes.draws(mistakes.Rates(), call), call, call.span[0]))
        results[0]["passed"] = False
    elif fault == "no_finding":
        results[0].update(passed=False, findings=[], **({"keep": []} if call.kind == COMBINE else {}))
    elif fault == "line_outside":
        outside = call.span[1] + 1
        holder = next((v for v in results if v["findings"]), None)
        if holder is None:
            created = text_finding(outside, outside, _shown_quote(call), "out of range")
            results[0].update(passed=False, findings=[created])
        else:
            holder["findings"][0].update(line=outside, end_line=outside)
    return results


def _shown_quote(call: Call) -> str:
    """A quote of what the call shows: its last text line's (part), the reports' first (combine)."""
    if call.kind == PART:
        return line_quote(call.lines[-1][1]) if call.lines else ""
    for report in call.reports:
        for result in report["rules"].values():
            if not isinstance(result, dict):
                continue
            if isinstance(result.get("quote"), str) and result["quote"]:  # the start of a finding's quote
                return str(result["quote"])
            evidence = result.get("evidence")
            for item in evidence if isinstance(evidence, list) else []:
                if isinstance(item, dict) and isinstance(item.get("quote"), str) and item["quote"]:
                    return str(item["quote"])
    return ""


def cut_point(answer_tokens: int) -> int:
    """Where the `cut` fault ends an answer of this many tokens: half of it, at least one token."""
    return max(1, answer_tokens // 2)

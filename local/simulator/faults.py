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

**A misunderstood rule** is a standing fault, not used up: the entry `"misunderstand:<rule id>"`
(or `"misunderstand/<N>:<rule id>"`; everything after the first `:` is the id, which may hold
`:` itself) makes the simulator misread that rule in every part call that asks it, until
`faults` is reconfigured. In a part call, the rule's verdict is flipped when the call's text is
selected: always without `/<N>`; with it, when the first 8 bytes (big endian) of the SHA-256 of
the shown lines' contents, joined with "\n" (UTF-8; without the "N| " prefixes, never the file
name, the nonce or the line numbers), are divisible by N (`misread`). So one text always gets
the same verdict, in a retry, a re-ask or another validation. A flipped verdict:

- that failed, passes: `passed: true`, findings [] and evidence [];
- that passed, fails with one finding `{"line": n, "end_line": n, "kind": "text", "quote":
  <line n's quote>, "message": "misunderstood"}`, n the first shown line with more than
  whitespace (its quote as verdicts.py quotes a line, from its start), or, when every shown line
  is blank, one absence finding over the shown lines; evidence [].

Both are found in the text: the product takes them as the model's verdict, never asks again.
Combine calls are not misread: they judge the part reports as given (a flipped part verdict
reaches them as such). The misreading applies before the scripted fault of the same call;
`Stats.faults_injected` counts every answered call while a misunderstanding is configured.
"""

from __future__ import annotations

import copy
import hashlib
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from local.simulator import mistakes
from local.simulator.verdicts import COMBINE, PART, Call, CallKind, absence_finding, line_quote, text_finding

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
MISUNDERSTAND = "misunderstand"  # a standing fault: `misunderstand:<rule id>` or `misunderstand/<N>:<rule id>`
MISUNDERSTOOD_MESSAGE = "misunderstood"


def parse_entry(entry: str) -> tuple[CallKind | None, str]:
    """("part" | "combine" | None, fault) of a queue entry; ValueError for an unknown one."""
    prefix, _, fault = entry.rpartition(":")
    if fault not in FAULTS or prefix not in _PREFIXES:
        raise ValueError(
            f"unknown simulator fault {entry!r}: use one of {sorted(FAULTS)}, optionally after 'part:' or "
            "'combine:', or misunderstand[/N]:<rule id>"
        )
    return _PREFIXES[prefix], fault


def parse_misunderstanding(entry: str) -> tuple[str, int] | None:
    """(rule id, N) of a `misunderstand[/N]:<rule id>` entry; None for any other entry; ValueError for a
    malformed one."""
    head, colon, rule_id = entry.partition(":")
    name, slash, every = head.partition("/")
    if name != MISUNDERSTAND:
        return None
    if not colon or not rule_id or (slash and not (every.isdigit() and int(every) >= 1)):
        raise ValueError(f"simulator fault {entry!r}: write misunderstand:<rule id> or misunderstand/<N>:<rule id>")
    return rule_id, int(every) if slash else 1


class Fault(str):
    """A fault as FaultQueue.take hands it out and `apply` takes it back (the simulator passes it on
    unchanged): the scripted fault's name, or MISUNDERSTAND when only standing faults apply, and
    the misunderstood rules (rule id -> N)."""

    misread: dict[str, int]

    def __new__(cls, name: str, misread: Mapping[str, int]) -> Fault:
        fault = super().__new__(cls, name)
        fault.misread = dict(misread)
        return fault


class FaultQueue:
    """The scripted faults still to inject, and the standing ones; shared by the server's thread and the test's."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._entries: list[tuple[CallKind | None, str]] = []
        self._misread: dict[str, int] = {}
        self.replace(entries)

    def replace(self, entries: Iterable[str]) -> None:
        scripted, misread = [], {}
        for entry in entries:  # all checked before any replaces the queue
            misunderstood = parse_misunderstanding(entry)
            if misunderstood is None:
                scripted.append(parse_entry(entry))
            else:
                misread[misunderstood[0]] = misunderstood[1]
        with self._lock:
            self._entries, self._misread = scripted, misread

    def take(self, kind: CallKind) -> str | None:
        """The fault for the next answered call of this kind: the first scripted entry for it (used up),
        with the misunderstood rules when any are configured."""
        with self._lock:
            scripted = next((i for i, (wanted, _) in enumerate(self._entries) if wanted in (None, kind)), None)
            fault = self._entries.pop(scripted)[1] if scripted is not None else None
            if not self._misread:
                return fault
            return Fault(fault or MISUNDERSTAND, self._misread)


def misread(lines: list[tuple[int, str]], every: int) -> bool:
    """Whether a misunderstood rule's verdict is flipped for the text these shown lines hold (1 in `every`)."""
    if every == 1:
        return True
    digest = hashlib.sha256("\n".join(content for _, content in lines).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % every == 0


def _misunderstood(call: Call, verdict: dict[str, Any]) -> None:
    """Flip a part verdict in place, with a finding found in the text when it now fails."""
    if verdict["passed"] is False:
        verdict.update(passed=True, findings=[], evidence=[])
        return
    shown = next(((n, content) for n, content in call.lines if content.strip()), None)
    finding = (
        text_finding(shown[0], shown[0], line_quote(shown[1]), MISUNDERSTOOD_MESSAGE)
        if shown is not None
        else absence_finding(call.span, MISUNDERSTOOD_MESSAGE)
    )
    verdict.update(passed=False, findings=[finding], evidence=[])


def apply(fault: str | None, call: Call, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The verdicts as the faulty answer states them (`malformed` and `cut` change the content instead)."""
    results = copy.deepcopy(results)
    if isinstance(fault, Fault):
        if call.kind == PART:
            for verdict in results:
                every = fault.misread.get(str(verdict.get("rule_id")))
                if every is not None and isinstance(verdict.get("passed"), bool) and misread(call.lines, every):
                    _misunderstood(call, verdict)
        fault = None if fault == MISUNDERSTAND else str(fault)
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

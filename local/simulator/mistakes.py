"""Mistakes on purpose: the simulator's verdicts wrong the way a real model's are.

Real models copy text well and count lines badly. At the rates `SimulatorConfig` sets
(all 0.0 by default: the answers are verdicts.py's, noiseless), this module changes a
call's verdicts after verdicts.py computes them and before faults.py applies a scripted
fault:

- **miss** (`miss_rate`): a text finding is dropped; a verdict left with no finding
  passes;
- **misnumber** (`misnumber_rate`): a kept text finding's `line` and `end_line` move by
  the same 1 to 3 lines, to smaller or larger numbers (larger when smaller would cite a
  line below 1); its quote stays right, and the move may leave the shown lines (real
  models do);
- **respace** (`respace_rate`): a kept text finding's quote gets one whitespace change:
  one space doubled, one space turned into a tab, one space dropped, or a space put
  between two non-whitespace characters (the change drawn among those the quote allows;
  a quote that allows none stays as it is, and is not counted); never a non-whitespace
  character;
- **invent** (`invent_rate`, drawn once per call): one rule, drawn uniformly, gets an
  extra text finding `{"line": n, "end_line": n, "kind": "text", "quote": "value 0x<8
  hex digits> out of range", "message": 'contains "<that quote>"'}` and fails (`keep` is
  unchanged in a combine answer). The quote is found nowhere the call shows, whitespace
  and case ignored, not even across two lines or strings (the hex digits are drawn again
  until so): not in the shown lines (part; `n` is a drawn shown line), not in any string
  of any report (combine; `n` is drawn from the reports' lines).

Part calls can get all four, combine calls only **invent**. Absence findings and evidence
are never changed.

**Determinism.** A call's draws come from `random.Random(n)`, `n` the first 8 bytes (big
endian) of the SHA-256 of `json.dumps([mistake_seed, call kind ("part" | "combine"), the
rules as read, the shown lines as [number, content] (part) or the reports as read
(combine), [the content of every message after the first user message]],
sort_keys=True)` (UTF-8), never of the per-call nonce nor the file name. So a
retried identical request gets the identical answer, a request with the same text and
rules (another file's, another nonce's) too, while a re-ask (which adds the first answer
and a note) draws anew. The draws, in order: per verdict in the rules' order, per text
finding in order, one for miss; if kept, one for misnumber (then its direction and size
when it applies) and one for respace (then the change and its place when it applies);
after all verdicts, one for invent (then the rule, the line and the hex digits when it
applies). With every rate 0.0 nothing is drawn.

**Tally.** `Made` says what a call's mistakes did; the simulator's `Stats` add up, over
answered calls, the mistakes of each kind (`misnumbered`, `invented`, `missed`,
`respaced`) and, over answered part calls, `truth_findings` (the noiseless verdicts'
findings), `emitted_findings` (the findings after mistakes) and `exact_findings` (the
emitted findings, not invented, whose (rule, line, end_line) equals a noiseless finding
of the call, each noiseless finding matching at most one): so exact/emitted is the raw
model's line-exact precision and exact/truth its recall. Absence findings count in all
three. All are counted before the scripted fault is applied.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from local.simulator.verdicts import PART, TEXT, Call, text_finding

MISNUMBERED, INVENTED, MISSED, RESPACED = "misnumbered", "invented", "missed", "respaced"
KINDS = (MISNUMBERED, INVENTED, MISSED, RESPACED)
MAX_SHIFT = 3
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Rates:
    """The chance of each mistake (0.0 to 1.0), and the seed mixed into every call's draws."""

    misnumber: float = 0.0
    invent: float = 0.0
    miss: float = 0.0
    respace: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("misnumber", "invent", "miss", "respace"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ValueError(f"simulator {name}_rate must be a number from 0.0 to 1.0, not {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"simulator mistake_seed must be an integer, not {self.seed!r}")

    @property
    def noiseless(self) -> bool:
        return not (self.misnumber or self.invent or self.miss or self.respace)


@dataclass
class Made:
    """A call's verdicts after its mistakes, and what the mistakes were."""

    results: list[dict[str, Any]]
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    invented: dict[str, Any] | None = None  # the invented finding itself (identity marks it)

    def scores(self, truth: list[dict[str, Any]]) -> tuple[int, int, int]:
        """(truth findings, emitted findings, exact findings) of the call, `truth` its noiseless verdicts."""
        expected = Counter(_keys(truth))
        emitted = exact = 0
        for verdict in self.results:
            for found in verdict["findings"]:
                emitted += 1
                key = (verdict["rule_id"], found["line"], found["end_line"])
                if found is not self.invented and expected[key] > 0:
                    expected[key] -= 1
                    exact += 1
        return sum(1 for _ in _keys(truth)), emitted, exact


def _keys(results: list[dict[str, Any]]) -> Iterator[tuple[str, int, int]]:
    for verdict in results:
        for found in verdict["findings"]:
            yield verdict["rule_id"], found["line"], found["end_line"]


def draws(rates: Rates, call: Call) -> random.Random:
    """The call's random draws: the same for the same request, anew when later messages differ."""
    shown: list[Any] = [list(pair) for pair in call.lines] if call.kind == PART else call.reports
    key = json.dumps([rates.seed, call.kind, call.rules, shown, list(call.later)], sort_keys=True)
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))


def make(rates: Rates, call: Call, results: list[dict[str, Any]]) -> Made:
    """`results` (the noiseless verdicts, left unchanged) with the call's mistakes."""
    made = Made(copy.deepcopy(results))
    if rates.noiseless:
        return made
    rng = draws(rates, call)
    if call.kind == PART:
        for verdict in made.results:
            _part_verdict(rates, rng, verdict, made.counts)
    if rng.random() < rates.invent and made.results:
        _invent(rng, call, made)
    return made


def _part_verdict(rates: Rates, rng: random.Random, verdict: dict[str, Any], counts: dict[str, int]) -> None:
    kept = []
    for found in verdict["findings"]:
        if found.get("kind") != TEXT:
            kept.append(found)
            continue
        if rng.random() < rates.miss:
            counts[MISSED] += 1
            continue
        if rng.random() < rates.misnumber:
            shift = rng.choice((-1, 1)) * rng.randint(1, MAX_SHIFT)
            if found["line"] + shift < 1:
                shift = -shift
            found = {**found, "line": found["line"] + shift, "end_line": found["end_line"] + shift}
            counts[MISNUMBERED] += 1
        if rng.random() < rates.respace:
            quote = respace(found["quote"], rng)
            if quote != found["quote"]:
                found = {**found, "quote": quote}
                counts[RESPACED] += 1
        kept.append(found)
    verdict["findings"] = kept
    if not kept:
        verdict["passed"] = True


def respace(quote: str, rng: random.Random) -> str:
    """`quote` with one whitespace change drawn among those it allows; `quote` itself when it allows none."""
    spaces = [i for i, char in enumerate(quote) if char == " "]
    joints = [i for i in range(1, len(quote)) if not quote[i - 1].isspace() and not quote[i].isspace()]
    changes = (["double", "tab", "drop"] if spaces else []) + (["split"] if joints else [])
    if not changes:
        return quote
    change = rng.choice(changes)
    if change == "split":
        at = rng.choice(joints)
        return f"{quote[:at]} {quote[at:]}"
    at = rng.choice(spaces)
    return quote[:at] + {"double": "  ", "tab": "\t", "drop": ""}[change] + quote[at + 1 :]


def squeeze(text: str) -> str:
    """`text` without whitespace, casefolded: how an invented quote is checked to be nowhere."""
    return _WHITESPACE.sub("", text).casefold()


def _strings(value: Any) -> Iterator[str]:
    """Every string in a report as read (keys and values)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _invent(rng: random.Random, call: Call, made: Made) -> None:
    verdict = made.results[rng.randrange(len(made.results))]
    if call.kind == PART:
        line = rng.choice(call.lines)[0] if call.lines else call.span[0]
    else:
        line = rng.randint(*call.span) if call.span[0] <= call.span[1] else call.span[0]
    made.invented = invention(rng, call, line)
    verdict["findings"].append(made.invented)
    verdict["passed"] = False
    made.counts[INVENTED] += 1


def invention(rng: random.Random, call: Call, line: int) -> dict[str, Any]:
    """A text finding at `line` whose quote, "value 0x<8 drawn hex digits> out of range", is nowhere
    the call shows (whitespace and case ignored): the hex digits are drawn again until so."""
    if call.kind == PART:
        shown = [squeeze(content) for _, content in call.lines]
    else:
        shown = [squeeze(s) for s in _strings(call.reports)]
    haystack = "".join(shown)  # joined: not even across two pieces
    while True:
        quote = f"value 0x{rng.getrandbits(32):08x} out of range"
        if squeeze(quote) not in haystack:
            return text_finding(line, line, quote, f'contains "{quote}"')

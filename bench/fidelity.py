"""Fidelity: are the findings the service reports the ones the files really hold, line for line?

A seeded corpus (no I/O) of CSV, TSV, JSON Lines, JSON (top-level arrays of objects and
`{"data": [...]}`), Markdown (headings, paragraphs, lists, fenced code) and log files,
with UTF-8 BOMs, CRLF, CR-only and mixed line endings, é/漢字/emoji in values, lines of
several hundred characters, other Unicode separators (U+2028, NEL, form feed: not line
breaks), files without a final newline, one-part and many-part files. Every file gets
the same rules; the simulator's verdicts are deterministic, so the truth is known:

- `no-secret`, `no-password` (`must not contain "WORD"`): one finding per line that holds
  the word, in any case. The generator plants the words on chosen lines (never in a
  CSV/TSV header row, never in a line longer than ~150 characters: a word cut across a
  long line's pieces is a documented limit, not what this measures).
- `copyright` (`must contain "Copyright"`): a whole-file rule. Most files hold it on
  exactly one line, so exactly one part satisfies it; ~10% hold it nowhere and must fail
  with one finding spanning lines 1..last.

Line numbers of the truth are counted from the generated text itself (`\\r\\n`, `\\r`,
`\\n` before the planted word; a BOM is not text), and tests recount them independently.

The corpus goes through the whole system (API, Step Functions, validator Lambdas, the
combine step, the simulator) in validations of at most 100 files, twice: with a model that
makes no mistakes, and with one that does (`NOISE`: the simulator misnumbers findings,
invents violations whose quote is nowhere in the text, misses findings and re-spaces
quotes, deterministically from a seed). Reported, side by side:
- the raw model's line-exact precision / recall, counted at the simulator over every part
  answer it gave (a misnumbered or invented finding is a wrong one, a missed one is lost);
- precision / recall of the findings the service delivers, line-exact: a reported finding
  matches an expected one when file, rule, line and end_line are equal (goals 1.00 / 1.00
  noiseless; ≥ 0.99 / ≥ 0.93 noisy);
- undecided (file, rule) pairs (goal ≤ 1%), relocated and ungrounded findings, re-asks;
- tokens ÷ the noiseless run's (goal ≤ 1.25: quotes are in both; re-asks only here);
- verdict accuracy over (file, rule) pairs (goal 1.00 noiseless);
- combine calls ÷ multi-part files (goal ≤ 1.1: one combine call per multi-part file);
- tokens charged to users ÷ tokens the simulator billed (goal 1.00);
- model calls, and wall time (for information only: this machine is shared and noisy).
"""

from __future__ import annotations

import json
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

RULES: list[dict[str, str]] = [
    {"id": "no-secret", "text": 'The file must not contain "secret".'},
    {"id": "no-password", "text": 'The file must not contain "password".'},
    {"id": "copyright", "text": 'The file must contain "Copyright".'},
]
FORBIDDEN = {"no-secret": "secret", "no-password": "password"}  # rule id -> word; one finding per line
REQUIRED = {"copyright": "copyright"}  # rule id -> word; one whole-file finding when absent
KINDS = ("csv", "tsv", "jsonl", "json_array", "json_data", "markdown", "log")
SUFFIX = {
    "csv": "csv",
    "tsv": "tsv",
    "jsonl": "jsonl",
    "json_array": "json",
    "json_data": "json",
    "markdown": "md",
    "log": "log",
}
VARIANTS = ("bom", "crlf", "cr", "mixed", "unicode", "long", "no_final_newline", "separators", "missing_copyright")
BATCH_FILES = 100  # the API's max_files per validation
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
LINE_BREAK = re.compile(r"\r\n|\r|\n")
BOM = "\ufeff"

# --- the corpus -------------------------------------------------------------------------------------

SLOT = "@@SLOT@@"  # where a line may take a planted phrase; never left in the output
MAX_SLOT_LINE = 150  # a planted word never sits in a longer line
MIN_GAP = 5  # lines between planted violations: a few findings per part, well inside the completion allowance
WORDS = (
    "alpha",
    "bravo",
    "delta",
    "echo",
    "foxtrot",
    "harbor",
    "island",
    "jungle",
    "kernel",
    "lemon",
    "matrix",
    "nectar",
    "orbit",
    "pepper",
    "quartz",
    "river",
    "summit",
    "timber",
    "umbra",
    "velvet",
    "walnut",
    "yonder",
    "zephyr",
    "amber",
    "basalt",
    "cobalt",
    "dune",
    "ember",
    "fjord",
    "glacier",
    "hazel",
    "indigo",
    "juniper",
    "kelp",
    "lagoon",
    "meadow",
    "nimbus",
    "opal",
    "prairie",
    "quill",
    "ridge",
    "sable",
    "tundra",
    "vapor",
    "willow",
)
UNICODE_WORDS = ("café", "naïve", "Zürich", "résumé", "漢字", "東京", "данные", "ñandú", "😀", "🚀", "🌍", "Ελλάδα")
NAMES = ("Ada", "Grace", "Linus", "Margaret", "Alan", "Barbara", "Ken", "Dennis", "Frances", "Edsger", "Radia", "Guido")
CITIES = ("Lisbon", "Oslo", "Quito", "Hanoi", "Dakar", "Lima", "Perth", "Tunis", "Riga", "Cusco")
UNICODE_CITIES = ("São-Paulo", "Zürich", "Kraków", "東京", "Москва", "Reykjavík")
# Not line breaks by the contract (only \r\n, \r, \n are); str.splitlines() would split on them.
SEPARATORS = ("\u2028", "\u2029", "\x85", "\x0c")
SECRET_FORMS = ("secret", "Secret", "SECRET", "sEcReT")
PASSWORD_FORMS = ("password", "Password", "PASSWORD")
SECRET_PHRASES = ("the {w} was rotated", "{w}_key=ab12cd", "leaked {w} token", "{w}s kept in vault")
PASSWORD_PHRASES = ("{w} reset requested", "user {w}=hunter2", "weak {w} rejected")
COPYRIGHT_PHRASES = (
    "Copyright (c) 2024 Acme Ltd.",
    "copyright 2023 Example GmbH",
    "COPYRIGHT Zeta Inc. all rights reserved",
)


JSON_KINDS = ("jsonl", "json_array", "json_data")
LONGEST_PHRASE = max(
    max(len(p.format(w="secret")) for p in SECRET_PHRASES)
    + len(" and ")
    + max(len(p.format(w="password")) for p in PASSWORD_PHRASES),
    max(map(len, COPYRIGHT_PHRASES)),
)


class Finding(NamedTuple):
    rule: str
    line: int
    end_line: int


@dataclass(frozen=True)
class CorpusFile:
    name: str
    content: str  # as uploaded (a BOM is the leading U+FEFF)
    kind: str
    variants: frozenset[str]
    lines: int  # the file's last line number
    verdicts: dict[str, bool]  # expected `passed` per rule id
    findings: tuple[Finding, ...]  # expected, sorted


@dataclass(frozen=True)
class Spec:
    kind: str
    many: bool  # a many-part file at the default part budget (1,500 tokens)
    variants: frozenset[str]


# Every kind and variant appears among the first files, whatever the seed (small corpora included).
COVERAGE = (
    Spec("csv", True, frozenset({"unicode"})),
    Spec("json_array", True, frozenset({"long"})),
    Spec("markdown", True, frozenset({"crlf"})),
    Spec("log", True, frozenset({"bom", "crlf"})),
    Spec("tsv", True, frozenset({"cr"})),
    Spec("jsonl", True, frozenset({"missing_copyright", "unicode"})),
    Spec("json_data", True, frozenset({"bom", "no_final_newline"})),
    Spec("csv", False, frozenset({"bom", "cr", "no_final_newline"})),
    Spec("markdown", False, frozenset({"missing_copyright", "unicode"})),
    Spec("log", True, frozenset({"separators", "long"})),
    Spec("json_array", False, frozenset({"crlf", "unicode"})),
    Spec("markdown", True, frozenset({"separators", "mixed", "long"})),
    Spec("tsv", False, frozenset({"long", "separators"})),
    Spec("json_data", True, frozenset({"unicode", "long", "crlf"})),
)


def _random_spec(rng: random.Random) -> Spec:
    variants = {
        name
        for name, p in (
            ("bom", 0.1),
            ("unicode", 0.3),
            ("long", 0.2),
            ("no_final_newline", 0.15),
            ("separators", 0.1),
            ("missing_copyright", 0.1),
        )
        if rng.random() < p
    }
    ending = rng.random()
    if ending < 0.15:
        variants.add("crlf")
    elif ending < 0.23:
        variants.add("cr")
    elif ending < 0.27:
        variants.add("mixed")
    return Spec(rng.choice(KINDS), rng.random() >= 0.35, frozenset(variants))


class _Text:
    """Values for one file: filler that never holds a marker word."""

    def __init__(self, rng: random.Random, spec: Spec) -> None:
        self.rng = rng
        self.unicode = "unicode" in spec.variants
        self.separators = "separators" in spec.variants

    def word(self) -> str:
        if self.unicode and self.rng.random() < 0.3:
            return self.rng.choice(UNICODE_WORDS)
        return self.rng.choice(WORDS)

    def words(self, low: int, high: int) -> str:
        return " ".join(self.word() for _ in range(self.rng.randint(low, high)))

    def filler(self) -> str:
        """What fills a slot that takes no planted phrase (a few hold a non-breaking separator)."""
        text = self.words(2, 5)
        if self.separators and self.rng.random() < 0.15:
            text = f"{text} {self.rng.choice(SEPARATORS)} {self.words(1, 2)}"
        return text

    def long(self) -> str:
        return self.words(45, 75)  # several hundred characters

    def name(self) -> str:
        return self.rng.choice(NAMES)

    def city(self) -> str:
        return self.rng.choice(UNICODE_CITIES if self.unicode and self.rng.random() < 0.4 else CITIES)


def _length(rng: random.Random, spec: Spec, max_lines: int, covering: bool) -> int:
    """Lines: 1-8 (one part), or 20-max_lines, skewed to the short end
    (the coverage files: at least half of max_lines, so they hold several parts)."""
    if not spec.many:
        return rng.randint(1, 8)
    if covering:
        return rng.randint(max(20, max_lines // 2), max(20, max_lines))
    return 20 + int(max(0, max_lines - 20) * rng.random() ** 3)


def _long_line(text: _Text, spec: Spec) -> bool:
    return "long" in spec.variants and text.rng.random() < 0.1


def _delimited(text: _Text, spec: Spec, lines: int, sep: str) -> list[str]:
    rows = [sep.join(("id", "name", "city", "amount", "note"))]  # the header row never takes a slot
    for i in range(1, max(lines, 2)):
        note = (f'"{text.long()}"' if sep == "," else text.long()) if _long_line(text, spec) else SLOT
        rows.append(sep.join((str(i), text.name(), text.city(), f"{text.rng.randint(1, 99999) / 100:.2f}", note)))
    return rows


def _record(text: _Text, spec: Spec, i: int) -> dict[str, Any]:
    record: dict[str, Any] = {"id": i, "user": text.name(), "city": text.city(), "score": text.rng.randint(0, 100)}
    if _long_line(text, spec):
        record["description"] = text.long()
    record["note"] = SLOT
    if text.rng.random() < 0.3:
        record["tags"] = [text.word() for _ in range(text.rng.randint(1, 3))]
    return record


def _jsonl(text: _Text, spec: Spec, lines: int) -> list[str]:
    out = []
    for i in range(1, lines + 1):
        record = _record(text, spec, i)
        if "description" in record:  # one JSON line: long, so no slot on it
            record["note"] = text.filler()
        out.append(json.dumps(record, ensure_ascii=False))
    return out


def _json(text: _Text, spec: Spec, lines: int, wrapped: bool) -> list[str]:
    records = [_record(text, spec, i) for i in range(1, max(1, lines // 8) + 1)]
    document: Any = {"data": records, "meta": {"source": text.word(), "count": len(records)}} if wrapped else records
    indent = text.rng.choice((2, 4))
    return json.dumps(document, ensure_ascii=False, indent=indent).split("\n")


def _markdown(text: _Text, spec: Spec, lines: int) -> list[str]:
    out = [f"# {text.words(1, 3).title()}", ""]
    while len(out) < lines:
        block = text.rng.random()
        if block < 0.2:
            out += [f"## {text.words(1, 3).title()}", ""]
        elif block < 0.45:
            out += [f"- {SLOT}" for _ in range(text.rng.randint(2, 5))] + [""]
        elif block < 0.65:
            language = text.rng.choice(("python", "sh", ""))
            code = [
                f"value_{k} = '{SLOT}'" if language == "python" else f"echo {SLOT}"
                for k in range(text.rng.randint(2, 6))
            ]
            out += [f"```{language}", *code, "```", ""]
        else:
            paragraph = [
                text.long() if _long_line(text, spec) else f"{text.words(2, 6)} {SLOT}"
                for _ in range(text.rng.randint(1, 4))
            ]
            out += [*paragraph, ""]
    out.append(f"{text.words(2, 4)} {SLOT}")  # ends on a line of text, never a blank one
    return out


def _log(text: _Text, spec: Spec, lines: int) -> list[str]:
    out = []
    for i in range(lines):
        stamp = f"2024-05-{1 + i // 2000:02d}T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z"
        level = text.rng.choice(("INFO", "INFO", "DEBUG", "WARN", "ERROR"))
        service = text.rng.choice(("api", "worker", "scheduler"))
        message = f"trace {text.long()}" if _long_line(text, spec) else f"{text.words(1, 3)} {SLOT}"
        out.append(f"{stamp} {level} {service}[{1000 + i % 50}]: {message}")
    return out


def _lines(text: _Text, spec: Spec, lines: int) -> list[str]:
    if spec.kind in ("csv", "tsv"):
        return _delimited(text, spec, lines, "," if spec.kind == "csv" else "\t")
    if spec.kind == "jsonl":
        return _jsonl(text, spec, lines)
    if spec.kind in ("json_array", "json_data"):
        return _json(text, spec, lines, wrapped=spec.kind == "json_data")
    if spec.kind == "markdown":
        return _markdown(text, spec, lines)
    return _log(text, spec, lines)


def _violation(rng: random.Random, rules: tuple[str, ...]) -> str:
    phrases = []
    if "no-secret" in rules:
        phrases.append(rng.choice(SECRET_PHRASES).format(w=rng.choice(SECRET_FORMS)))
    if "no-password" in rules:
        phrases.append(rng.choice(PASSWORD_PHRASES).format(w=rng.choice(PASSWORD_FORMS)))
    return " and ".join(phrases)


def _plant(rng: random.Random, slots: list[int], copyright: bool, clean: bool) -> dict[int, tuple[str, ...]]:
    """Line index -> rule ids planted there: `copyright` alone on one line, violations MIN_GAP apart."""
    plan: dict[int, tuple[str, ...]] = {}
    free = list(slots)
    if copyright and free:
        plan[free.pop(rng.randrange(len(free)))] = ("copyright",)
    if clean:
        return plan
    last = -MIN_GAP
    for index in free:
        if index - last >= MIN_GAP and rng.random() < 0.12:
            draw = rng.random()
            plan[index] = (
                ("no-secret", "no-password") if draw < 0.15 else ("no-secret",) if draw < 0.6 else ("no-password",)
            )
            last = index
    return plan


def _endings(rng: random.Random, spec: Spec, lines: list[str]) -> list[str]:
    if "crlf" in spec.variants:
        return ["\r\n"] * len(lines)
    if "cr" in spec.variants:
        return ["\r"] * len(lines)
    if "mixed" not in spec.variants:
        return ["\n"] * len(lines)
    endings: list[str] = []
    for i in range(len(lines)):
        choice = rng.choice(("\n", "\r\n", "\r"))
        if i and endings[-1] == "\r" and lines[i] == "" and choice != "\r":
            choice = "\r"  # "\r" + "" + "\n" would read as one "\r\n" break
        endings.append(choice)
    return endings


def line_of(text: str, offset: int) -> int:
    """1-based line number of the character at `offset` (breaks: \\r\\n, \\r, \\n; a BOM is not text)."""
    return len(LINE_BREAK.findall(text, 0, offset)) + 1


def last_line(text: str) -> int:
    """The last line's number: a final line without a newline counts, a final newline opens none."""
    body = text.removeprefix(BOM)
    breaks = len(LINE_BREAK.findall(body))
    return breaks + (0 if body.endswith(("\n", "\r")) else 1)


def _file(rng: random.Random, index: int, spec: Spec, max_lines: int) -> CorpusFile:
    text = _Text(rng, spec)
    covering = index < len(COVERAGE)
    lines = _lines(text, spec, _length(rng, spec, max_lines, covering))
    slots = [
        i for i, line in enumerate(lines) if SLOT in line and len(line) - len(SLOT) + LONGEST_PHRASE <= MAX_SLOT_LINE
    ]
    plan = _plant(
        rng, slots, copyright="missing_copyright" not in spec.variants, clean=not covering and rng.random() < 0.2
    )
    endings = _endings(rng, spec, lines)
    if "no_final_newline" in spec.variants:
        endings[-1] = ""
    content = BOM if "bom" in spec.variants else ""
    planted: list[tuple[str, int]] = []  # (rule id, offset of its word in content)
    for i, (line, ending) in enumerate(zip(lines, endings, strict=True)):
        if SLOT in line:
            rules = plan.get(i, ())
            phrase = (
                rng.choice(COPYRIGHT_PHRASES)
                if rules == ("copyright",)
                else _violation(rng, rules)
                if rules
                else text.filler()
            )
            if spec.kind in JSON_KINDS:  # the slot is inside a JSON string (planted phrases need no escapes)
                phrase = json.dumps(phrase, ensure_ascii=False)[1:-1]
            head, _, tail = line.partition(SLOT)
            for rule in rules:
                word = REQUIRED.get(rule) or FORBIDDEN[rule]
                planted.append((rule, len(content) + len(head) + phrase.lower().index(word)))
            line = head + phrase + tail
        content += line + ending
    last = last_line(content)
    found = [
        Finding(rule, line_of(content, offset), line_of(content, offset))
        for rule, offset in planted
        if rule in FORBIDDEN
    ]
    verdicts = {rule["id"]: True for rule in RULES}
    for f in found:
        verdicts[f.rule] = False
    for rule in REQUIRED:
        if not any(r == rule for r, _ in planted):
            verdicts[rule] = False
            found.append(Finding(rule, 1, last))
    tags = "-".join(sorted(spec.variants)) or "plain"
    name = f"{index:04d}-{spec.kind.replace('_', '-')}-{'many' if spec.many else 'one'}-{tags}.{SUFFIX[spec.kind]}"
    return CorpusFile(name, content, spec.kind, spec.variants, last, verdicts, tuple(sorted(found)))


def corpus(seed: int, files: int = 200, *, max_lines: int = 400) -> list[CorpusFile]:
    """`files` generated files with their ground truth; the same seed gives the same bytes."""
    rng = random.Random(seed)
    specs = [COVERAGE[i] if i < len(COVERAGE) else _random_spec(rng) for i in range(files)]
    return [_file(rng, i, spec, max_lines) for i, spec in enumerate(specs)]


# --- scoring ----------------------------------------------------------------------------------------


@dataclass
class Score:
    expected: int  # findings
    reported: int
    matched: int
    pairs: int  # (file, rule) verdicts expected
    correct: int
    missing: list[tuple[str, Finding]] = field(default_factory=list)  # expected, not reported
    extra: list[tuple[str, Finding]] = field(default_factory=list)  # reported, not expected
    wrong_verdicts: list[tuple[str, str]] = field(default_factory=list)  # (file, rule)
    undecided: int = 0  # (file, rule) pairs the service left undecided
    absence: int = 0  # delivered absence findings (no quote to check)

    @property
    def precision(self) -> float:
        return self.matched / self.reported if self.reported else 1.0

    @property
    def recall(self) -> float:
        return self.matched / self.expected if self.expected else 1.0

    @property
    def accuracy(self) -> float:
        return self.correct / self.pairs if self.pairs else 1.0

    @property
    def undecided_rate(self) -> float:
        return self.undecided / self.pairs if self.pairs else 0.0


def reported_findings(item: dict[str, Any]) -> Counter[Finding]:
    """The findings of one result item (`GET /validations/{id}/results`), as a multiset."""
    return Counter(
        Finding(verdict["id"], int(f["line"]), int(f["end_line"]))
        for verdict in item.get("rules", [])
        for f in verdict.get("findings", [])
    )


def score(expected: list[CorpusFile], results: list[dict[str, Any]]) -> Score:
    """Line-exact precision and recall of findings, and verdict accuracy, of result items against the truth.

    A reported finding matches an expected one when file, rule, line and end_line are equal;
    duplicates count once each. A file without a result item has all its verdicts wrong.
    """
    by_file = {item["file"]: item for item in results}
    out = Score(expected=0, reported=0, matched=0, pairs=0, correct=0)
    for item in results:
        out.reported += sum(reported_findings(item).values())
        for verdict in item.get("rules", []):
            out.undecided += verdict.get("passed") is None and bool(verdict.get("undecided"))
            out.absence += sum(f.get("kind") == "absence" for f in verdict.get("findings", []))
    for file in expected:
        want = Counter(file.findings)
        item = by_file.get(file.name, {})
        got = reported_findings(item)
        out.expected += sum(want.values())
        out.matched += sum((want & got).values())
        out.missing += [(file.name, f) for f in (want - got).elements()]
        out.extra += [(file.name, f) for f in (got - want).elements()]
        verdicts = {v["id"]: v.get("passed") for v in item.get("rules", [])}
        for rule, passed in file.verdicts.items():
            out.pairs += 1
            if verdicts.get(rule) is passed:
                out.correct += 1
            else:
                out.wrong_verdicts.append((file.name, rule))
    known = {f.name for f in expected}
    out.extra += [
        (item["file"], f) for item in results if item["file"] not in known for f in reported_findings(item).elements()
    ]
    return out


# --- running it through the system ------------------------------------------------------------------


def batches(files: list[CorpusFile], size: int = BATCH_FILES) -> Iterator[list[CorpusFile]]:
    for start in range(0, len(files), size):
        yield files[start : start + size]


def _results(api: Any, validation_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = api.get(
            f"/validations/{validation_id}/results", params={"limit": 100, **({"cursor": cursor} if cursor else {})}
        )
        assert page.status_code == 200, page.text
        items.extend(page.json()["items"])
        cursor = page.json()["next_cursor"]
        if not cursor:
            return items


def _wait(api: Any, ids: list[str], timeout: float, settle: float, poll: float) -> dict[str, dict[str, Any]]:
    """Poll until every validation ended and its charge settled (`usage.charged_tokens` set)."""
    deadline = time.monotonic() + timeout
    done: dict[str, dict[str, Any]] = {}
    ended_at: dict[str, float] = {}
    while len(done) < len(ids):
        for vid in ids:
            if vid in done:
                continue
            view = api.get(f"/validations/{vid}").json()
            if view["status"] in TERMINAL:
                ended_at.setdefault(vid, time.monotonic())
                if (view.get("usage") or {}).get("charged_tokens") is not None or time.monotonic() - ended_at[
                    vid
                ] > settle:
                    done[vid] = view
        if len(done) < len(ids):
            if time.monotonic() > deadline:
                raise TimeoutError(f"validations still running after {timeout:.0f} s: {sorted(set(ids) - set(done))}")
            time.sleep(poll)
    return done


def _stat(simulator: Any, name: str) -> int:
    return int(getattr(simulator.stats, name))


def run(
    api: Any,
    simulator: Any,
    files: list[CorpusFile],
    *,
    rules: list[dict[str, str]] = RULES,
    timeout: float = 1800.0,
    settle: float = 30.0,
    poll: float = 0.5,
) -> dict[str, Any]:
    """Validate `files` through an already started API client (admin key set) and simulator; measure.

    Counts of the simulator are taken as differences, so an earlier use of it does not count.
    """
    made = api.post(
        "/admin/users",
        json={
            "user_id": f"fidelity-{uuid.uuid4().hex[:8]}",
            "quota": {"capacity_tokens": 1_000_000_000, "refill_tokens_per_minute": 1_000_000_000, "max_running": 10},
        },
    )
    assert made.status_code == 201, made.text
    user = {"Authorization": f"Bearer {made.json()['api_key']}"}
    counters = (
        "requests",
        "rate_limited",
        "part_calls",
        "combine_calls",
        "billed_tokens",
        "truth_findings",
        "emitted_findings",
        "exact_findings",
    )
    before = {name: _stat(simulator, name) for name in counters}
    started = time.monotonic()
    ids = []
    for batch in batches(files):
        answer = api.post(
            "/validations",
            # No reuse: a second run of the same corpus must ask the model again.
            json={"documents": [{"name": f.name, "content": f.content} for f in batch], "rules": rules, "reuse": False},
            headers=user,
        )
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    views = _wait(api, ids, timeout, settle, poll)
    seconds = time.monotonic() - started
    results = [item for vid in ids for item in _results(api, vid)]
    sim = {name: _stat(simulator, name) - before[name] for name in counters}

    measured = score(files, results)
    infos = [f for view in views.values() for f in view["files"]]
    usages = [view.get("usage") or {} for view in views.values()]
    multi = sum(1 for f in infos if f["parts"] > 1)
    uncharged = sum(1 for u in usages if u.get("charged_tokens") is None)
    charged = sum(u.get("charged_tokens") or 0 for u in usages)
    return {
        "validations": len(ids),
        "statuses": dict(Counter(view["status"] for view in views.values())),
        "files": len(files),
        "files_not_succeeded": sum(1 for item in results if item["status"] != "SUCCEEDED") + len(files) - len(results),
        "multi_part_files": multi,
        "parts": sum(f["parts"] for f in infos),
        "expected_findings": measured.expected,
        "reported_findings": measured.reported,
        "precision": measured.precision,
        "recall": measured.recall,
        "accuracy": measured.accuracy,
        "raw_precision": sim["exact_findings"] / sim["emitted_findings"] if sim["emitted_findings"] else 1.0,
        "raw_recall": sim["exact_findings"] / sim["truth_findings"] if sim["truth_findings"] else 1.0,
        "pairs": measured.pairs,
        "undecided": measured.undecided,
        "undecided_rate": measured.undecided_rate,
        "absence_findings": measured.absence,
        "relocated": sum(u.get("relocated") or 0 for u in usages),
        "ungrounded": sum(u.get("ungrounded") or 0 for u in usages),
        "reasked": sum(u.get("reasked") or 0 for u in usages),
        "missing": measured.missing,
        "extra": measured.extra,
        "wrong_verdicts": measured.wrong_verdicts,
        "part_calls": sim["part_calls"],
        "combine_calls": sim["combine_calls"],
        "combine_per_multi_part_file": sim["combine_calls"] / multi if multi else 0.0,
        "model_calls": sum(u.get("model_calls") or 0 for u in usages),
        "attempts": sum(u.get("attempts") or 0 for u in usages),
        "requests": sim["requests"],
        "rate_limited": sim["rate_limited"],
        "charged_tokens": charged,
        "uncharged_validations": uncharged,
        "billed_tokens": sim["billed_tokens"],
        "charged_per_billed": charged / sim["billed_tokens"] if sim["billed_tokens"] else 0.0,
        "seconds": seconds,
    }


def table(clean: dict[str, Any], noisy: dict[str, Any]) -> str:
    """Noiseless and noisy runs side by side, with the goals of each."""

    def both(render: Any) -> tuple[str, str]:
        return render(clean), render(noisy)

    rows = [
        ("files (multi-part) / parts", *both(lambda r: f"{r['files']} ({r['multi_part_files']}) / {r['parts']}"), ""),
        ("raw model: precision (line-exact)", *both(lambda r: f"{r['raw_precision']:.3f}"), "(the simulator's count)"),
        ("raw model: recall (line-exact)", *both(lambda r: f"{r['raw_recall']:.3f}"), "(the simulator's count)"),
        ("findings expected / delivered", *both(lambda r: f"{r['expected_findings']} / {r['reported_findings']}"), ""),
        ("delivered: precision (line-exact)", *both(lambda r: f"{r['precision']:.3f}"), "1.00 / ≥ 0.99"),
        ("delivered: recall (line-exact)", *both(lambda r: f"{r['recall']:.3f}"), "1.00 / ≥ 0.93"),
        ("verdict accuracy (file, rule)", *both(lambda r: f"{r['accuracy']:.3f}"), "1.00 / –"),
        (
            "undecided (file, rule) pairs",
            *both(lambda r: f"{r['undecided_rate']:.3%} ({r['undecided']} of {r['pairs']})"),
            "0 / ≤ 1%",
        ),
        ("absence findings delivered (not checked)", *both(lambda r: str(r["absence_findings"])), ""),
        (
            "relocated / ungrounded / re-asked",
            *both(lambda r: f"{r['relocated']} / {r['ungrounded']} / {r['reasked']}"),
            "",
        ),
        (
            "tokens ÷ the noiseless run's",
            *both(lambda r: f"{r['charged_tokens'] / max(clean['charged_tokens'], 1):.3f} ({r['charged_tokens']:,})"),
            "1.00 / ≤ 1.25",
        ),
        (
            "combine calls ÷ multi-part files",
            *both(lambda r: f"{r['combine_per_multi_part_file']:.3f}"),
            "≤ 1.1 / –",
        ),
        ("charged ÷ billed tokens", *both(lambda r: f"{r['charged_per_billed']:.4f}"), "1.00"),
        (
            "model calls (part + combine) / 429s",
            *both(lambda r: f"{r['model_calls']} ({r['part_calls']} + {r['combine_calls']}) / {r['rate_limited']}"),
            "",
        ),
        ("files not succeeded", *both(lambda r: str(r["files_not_succeeded"])), "0"),
        ("wall time (noisy, shared machine)", *both(lambda r: f"{r['seconds']:.0f} s"), ""),
    ]
    out = [
        "| measure | noiseless | noisy | goal (noiseless / noisy) |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
    ]
    for name, report in (("noiseless", clean), ("noisy", noisy)):
        for label in ("missing", "extra", "wrong_verdicts"):
            if report[label]:
                out.append(f"\n{name} {label} ({len(report[label])}), first 10: {report[label][:10]}")
    return "\n".join(out)


SEED = 20240501
FILES = 200
MAX_LINES = 1000  # longest many-part file: ~10 parts at the default part budget
PART_TOKENS = 1500  # the default PART_MAX_TOKENS: the combine step's fan-in follows it
COMPLETION_TOKENS = 1024  # room for a part's findings: the simulator cuts an answer longer than max_tokens


# The noisy model: per finding, misnumbered 30% (±1-3 lines), missed 5%, quote re-spaced 10%;
# per call, 15% invent a violation whose quote is nowhere in the text (local/simulator/mistakes.py).
NOISE = {"misnumber_rate": 0.3, "invent_rate": 0.15, "miss_rate": 0.05, "respace_rate": 0.1, "mistake_seed": 11}
CLEAN = {"misnumber_rate": 0.0, "invent_rate": 0.0, "miss_rate": 0.0, "respace_rate": 0.0}


def main() -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from bench import set_parameters, stack_settings
    from local.aws.server import EmbeddedAWS
    from local.simulator.app import SimulatorConfig
    from local.simulator.server import SimulatorServer

    files = corpus(SEED, FILES, max_lines=MAX_LINES)
    rules = ", ".join(r["id"] for r in RULES)
    print(f"\n## Fidelity ({len(files)} files, seed {SEED}, part budget {PART_TOKENS} tokens, rules: {rules})")
    print(f"noisy model: {NOISE}")
    with EmbeddedAWS() as aws, SimulatorServer(SimulatorConfig(latency_seconds=0.02)) as sim:
        settings = stack_settings(
            aws.endpoint_url,
            sim.base_url,
            "fd",
            part_max_tokens=PART_TOKENS,
            completion_max_tokens=COMPLETION_TOKENS,
            sfn_retry_max_delay_seconds=2,
        )
        set_parameters(settings, {"target-tpm": sim.simulator.config.tpm, "target-rpm": sim.simulator.config.rpm})
        with TestClient(create_app(settings)) as api:
            api.headers.update({"Authorization": "Bearer bench"})
            sim.reconfigure(**CLEAN)
            clean = run(api, sim, files)
            sim.reconfigure(**NOISE)
            noisy = run(api, sim, files)
    print(table(clean, noisy))


if __name__ == "__main__":
    main()

"""Cost: what prompt caching and reuse save, and how close the estimate comes to what a run costs.

Everything goes through the whole local stack (API, Step Functions, the validator and combine
Lambdas, the simulator with its prompt cache, local/simulator/cache.py), priced at the
simulator's local price (core/pricing.py, `simulator`: gpt-4o-mini's amounts, cached input at
half the input price). USD is the validations' own `usage.cost_usd`.

**1. Three layouts of one corpus.** The fidelity benchmark's generator (bench/fidelity.py) makes
80 files, submitted as two validations of 50 files one after the other; the second holds 20
files of the first unchanged (same name, same bytes), so 100 files are submitted, 20% of them
repeats. Twenty `must (not) contain "X"` rules with a few sentences of explanation each make
the prefix every part call shares (the system prompt and the rules line) about 1,450 tokens,
above the 1,024 a provider caches. The prompt cache is emptied before each run.

- **naive baseline** (benchmark-only layout): `reuse: false`, and prompts that put the per-call
  data first. `core.prompt.part_messages` and `combine_messages` are replaced in this process
  (the embedded Lambdas run in it) by functions that build today's lines in another order: the
  lines naming the file, the part's place, a JSON path and a CSV header block first (at the
  start of the system message, before the instructions), then the rules line, then the nonce's
  declaration and the text (or the reports). The simulator reads the rules from the first line
  of the user message and the text from that message only, so those stay there; what a cache
  sees is that every prompt differs within its first few tokens, at the file name. The product
  never builds this layout.
- **today's layout, reuse off**: the product's prompts, `reuse: false`: prompt caching alone.
- **today's layout, reuse on**: the same with `reuse: true`: the 20 repeated files are answered
  from stored verdicts, on top of prompt caching. Today's layout already puts everything
  shared first (the byte comparison printed with the table shows it), so there is no third
  layout to try: this row adds the service's own reuse.

The first two part calls of a validation are captured as the validator Lambda hands them to
the OpenAI client, in the naive run and in today's: the system messages are compared byte for
byte, then the user messages, then both prompts as the cache's token sequences, and where they
first differ is printed.
Reported per run: USD, the cached share of prompt tokens (goal ≥ 0.5), wall time, ratios to
the naive baseline (goal: USD ≤ 0.6×), and the same tokens priced at two other models' tables,
whose cached input is a smaller fraction of their input price.

**2. Estimate against actual.** The fidelity corpus (60 files at the default part budget, its
three rules), in three validations of 20 files one after the other, each first estimated
(`POST /validations?dry_run=true`) and then run with `reuse: false`, in a stack of its own (so
the completion ratios it learns are its own). Part prompt tokens are compared per validation
with the sum of its parts' own `usage` (the parts table); combine prompt tokens with the
combine calls' own usage (every call is logged as the Lambdas receive its answer); all prompt
tokens and cost with the validation's `usage`. What the parts reported (failing rules,
findings, evidence) is counted beside the typical report the combine estimate assumes. The
estimate's completion ratio is the prior for the first validation and the history of the ended
ones afterwards, as in a deployment. Goals: part prompt tokens within ±1%, all prompt tokens
within ±5%, cost at p50 within ±15%.

    python -m bench bench.cost
"""

from __future__ import annotations

import contextlib
import os
import platform
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from bench.fidelity import RULES as FIDELITY_RULES
from bench.fidelity import CorpusFile, _results, _stat, _wait, corpus

# --- the corpus of part 1 ----------------------------------------------------------------------------

RULE_TEXTS = (
    (
        "no-secret",
        'The file must not contain "secret". Credentials, signing keys and tokens live in the secrets manager '
        "and files refer to them by name; a line that mentions one usually means a value was pasted where a "
        "reference belongs, and that value then has to be rotated.",
    ),
    (
        "no-password",
        'The file must not contain "password". Passwords are never written into data files, logs or '
        "documentation, not even as examples or reset notes: anyone who can read the file could use them, and "
        "log pipelines copy lines to places nobody audits.",
    ),
    (
        "copyright",
        'The file must contain "Copyright". Every file we publish or hand to a customer carries the notice of '
        "its owner somewhere in it (a header line, a comment, a metadata field), so that its origin is clear "
        "once it is copied elsewhere.",
    ),
    (
        "no-private-key",
        'The file must not contain "BEGIN RSA PRIVATE KEY". A PEM private key in a file is a leaked key: it has '
        "to be revoked and reissued, and the file removed from every copy, backup and history that holds it.",
    ),
    (
        "no-aws-key",
        'The file must not contain "AKIA". Access key ids of AWS IAM users start with these four letters; where '
        "one appears its secret key is usually next to it, and both must be deactivated before anything else "
        "is done.",
    ),
    (
        "no-todo",
        'The file must not contain "TODO". Release artifacts are finished work: a to-do marker means a known gap '
        "that was shipped, and it belongs in the tracker with an owner and a date instead of in the delivered "
        "file.",
    ),
    (
        "no-fixme",
        'The file must not contain "FIXME". Like a to-do marker, it records a defect the author knew about when '
        "the file was written; a shipped file keeps no such notes, and the defect is filed where it can be "
        "tracked.",
    ),
    (
        "no-localhost",
        'The file must not contain "localhost". Configuration and data that leave a developer machine point at '
        "real hosts by their service names; a loopback address in a delivered file breaks the consumer that "
        "follows it.",
    ),
    (
        "no-drop-table",
        'The file must not contain "DROP TABLE". Destructive statements never travel inside data files, '
        "fixtures or logs that other tools replay; migrations that remove tables are reviewed and applied "
        "through the migration tool alone.",
    ),
    (
        "no-test-card",
        'The file must not contain "4111111111111111". That is the well-known test card number of payment '
        "providers; in a production export it means test records leaked into real data, and the whole batch "
        "has to be checked again.",
    ),
    (
        "no-internal-host",
        'The file must not contain "corp.internal". Names under our internal zone reveal the layout of the '
        "private network and resolve nowhere outside it, so files shared with customers or partners never "
        "mention them.",
    ),
    (
        "no-plain-http",
        'The file must not contain "http://". Every link and endpoint uses TLS; a plain HTTP address in '
        "configuration, documentation or data sends requests (and whatever credentials ride along) over the "
        "network unencrypted.",
    ),
    (
        "no-staging",
        'The file must not contain "staging". Production files never refer to the staging environment: its '
        "hosts, buckets and accounts hold test data, and a reference to them usually means the file was built "
        "with the wrong settings.",
    ),
    (
        "no-draft",
        'The file must not contain "DRAFT". A draft watermark or status left in a published document or export '
        "tells readers the content is not final and often that an approval step was skipped on the way out.",
    ),
    (
        "no-ssn",
        'The file must not contain "SSN". Social security numbers and fields named after them are personal data '
        "we do not keep in general-purpose files; their presence calls for the privacy review that decides "
        "where such data may live.",
    ),
    (
        "no-debug-flag",
        'The file must not contain "debug=true". Debug switches turn on verbose output, stack traces and '
        "unauthenticated diagnostics; a delivered configuration or log that shows one was produced by a build "
        "that must not reach users.",
    ),
    (
        "no-placeholder",
        'The file must not contain "lorem ipsum". Placeholder text is filler from templates and mock-ups; in a '
        "delivered file it marks content that was never written, and readers take it for a rendering error.",
    ),
    (
        "no-personal-mail",
        'The file must not contain "@gmail.com". Business records and configuration use company addresses or '
        "role accounts; a personal mailbox in them is private data of an employee or customer and a channel "
        "the company does not control.",
    ),
    (
        "no-confidential",
        'The file must not contain "CONFIDENTIAL". Files marked confidential are handled under the information '
        "classification policy and never leave through this channel; the marking means the file reached the "
        "wrong pipeline.",
    ),
    (
        "no-token",
        'The file must not contain "token". Session, API and refresh tokens grant access on their own, without '
        "a password; a file that mentions one has to be checked by hand, since the value may sit on the same "
        "line.",
    ),
)
RULES: list[dict[str, str]] = [{"id": rule_id, "text": text} for rule_id, text in RULE_TEXTS]

SEED = 20261208
UNIQUE_FILES = 80
MAX_LINES = 200  # many-part files of up to ~6 parts at the default part budget
FIRST = slice(0, 50)  # the first validation's files
SECOND = slice(30, 80)  # the second's: files 30-49 again (20 repeats), then 30 new ones
COMPLETION_TOKENS = 1024  # twenty verdicts (~25 tokens each) and a part's findings; a longer answer is cut, asked again
OTHER_PRICES = ("gpt-4.1-mini", "gpt-5-mini")  # cached input at 1/4 and 1/10 of input

# --- the corpus of part 2 ----------------------------------------------------------------------------

ESTIMATE_SEED = 20240501  # bench/fidelity.py's
ESTIMATE_FILES = 60
ESTIMATE_MAX_LINES = 400
ESTIMATE_BATCH = 20


# --- the naive layout (this benchmark only) ----------------------------------------------------------


def per_call_first(messages: list[dict[str, str]], body_declaration: str) -> list[dict[str, str]]:
    """Today's [system, user] prompt with its lines in the naive order: the per-call lines between
    the rules line and the body's declaration (file, place, JSON path, header block) first, before
    the instructions; then the rules line; then the declaration and the body."""
    system, user = messages[0]["content"], messages[1]["content"]
    lines = user.split("\n")
    at = next(i for i, line in enumerate(lines) if line.startswith(body_declaration))
    return [
        {"role": "system", "content": "\n".join([*lines[1:at], system])},
        {"role": "user", "content": "\n".join([lines[0], *lines[at:]])},
    ]


@contextlib.contextmanager
def naive_layout() -> Iterator[None]:
    """core.prompt's builders replaced by naive ones in this process (the embedded Lambdas run in
    it) while the block runs; today's builders back afterwards."""
    from core import prompt

    part_messages, combine_messages = prompt.part_messages, prompt.combine_messages

    def naive_part(*args: Any, **kwargs: Any) -> list[dict[str, str]]:
        return per_call_first(part_messages(*args, **kwargs), "The text to check is between the lines TEXT-")

    def naive_combine(*args: Any, **kwargs: Any) -> list[dict[str, str]]:
        return per_call_first(combine_messages(*args, **kwargs), "The reports are between the lines REPORTS-")

    prompt.part_messages, prompt.combine_messages = naive_part, naive_combine
    try:
        yield
    finally:
        prompt.part_messages, prompt.combine_messages = part_messages, combine_messages


# --- what the Lambdas send ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One answered model call, as the Lambda received it."""

    kind: str  # "part" or "combine"
    prompt: int
    cached: int
    completion: int
    cut: bool  # finish_reason "length": asked again with a larger allowance


@dataclass
class CallLog:
    """The calls of a block (`logged_calls`), in the order they were answered."""

    calls: list[Call] = field(default_factory=list)
    first_parts: list[list[dict[str, str]]] = field(default_factory=list)  # messages of the first part calls

    def prompt(self, kind: str) -> int:
        return sum(c.prompt for c in self.calls if c.kind == kind)


@contextlib.contextmanager
def logged_calls(keep: int = 2) -> Iterator[CallLog]:
    """Every model call the Lambdas make while the block runs, and the messages of the first
    `keep` part calls, exactly as they are handed to the OpenAI client."""
    from lambdas.common import model

    call_model = model.call_model
    log = CallLog()
    lock = threading.Lock()

    def logging_call(
        config: Any, messages: list[dict[str, str]], response_format: dict[str, Any], *args: Any, **kw: Any
    ) -> Any:
        kind = "part" if response_format.get("json_schema", {}).get("name") == "part_verdicts" else "combine"
        if kind == "part":
            with lock:
                if len(log.first_parts) < keep:
                    log.first_parts.append([dict(m) for m in messages])
        answer = call_model(config, messages, response_format, *args, **kw)
        usage = answer.usage
        with lock:
            log.calls.append(
                Call(
                    kind,
                    usage["prompt_tokens"],
                    usage["cached_prompt_tokens"],
                    usage["completion_tokens"],
                    answer.finish_reason == "length",
                )
            )
        return answer

    model.call_model = logging_call
    try:
        yield log
    finally:
        model.call_model = call_model


def common_prefix(a: Sequence[object], b: Sequence[object]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def prefix_evidence(name: str, pair: list[list[dict[str, str]]]) -> list[str]:
    """Where two part prompts of one validation first differ: bytes of each message, then tokens."""
    from local.simulator import cache

    if len(pair) < 2:
        return [f"{name}: fewer than two part calls captured"]
    one, two = pair
    lines = [f"{name}:"]
    for index, (m1, m2) in enumerate(zip(one, two, strict=True)):
        b1, b2 = m1["content"].encode(), m2["content"].encode()
        same = common_prefix(b1, b2)
        where = "identical" if b1 == b2 else f"first {same:,} of {len(b1):,} / {len(b2):,} bytes equal"
        lines.append(f"  message {index} ({m1['role']}): {where}")
        if b1 != b2:
            first = b1.split(b"\n", 1)[0]
            lines.append(f"    its first line is {len(first):,} bytes: {first[:24]!r}...{first[-24:]!r}")
            lines.append(f"    differ at: {b1[max(0, same - 40) : same + 30]!r}")
            lines.append(f"           vs: {b2[max(0, same - 40) : same + 30]!r}")
    t1, t2 = cache.prompt_tokens(one), cache.prompt_tokens(two)
    shared = common_prefix(t1, t2)
    cacheable = 0 if shared < cache.MIN_PREFIX else shared - (shared - cache.MIN_PREFIX) % cache.STEP
    lines.append(
        f"  as the cache's tokens: {len(t1):,} / {len(t2):,}, the first {shared:,} equal; "
        f"a cache can serve {cacheable:,} of them"
    )
    return lines


# --- running ---------------------------------------------------------------------------------------


def _user(api: Any, tag: str) -> dict[str, str]:
    made = api.post(
        "/admin/users",
        json={
            "user_id": f"{tag}-{uuid.uuid4().hex[:8]}",
            "quota": {"capacity_tokens": 10**9, "refill_tokens_per_minute": 10**9, "max_running": 10},
        },
    )
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['api_key']}"}


def _body(files: list[CorpusFile], rules: list[dict[str, str]], reuse: bool) -> dict[str, Any]:
    return {"documents": [{"name": f.name, "content": f.content} for f in files], "rules": rules, "reuse": reuse}


def _submit(api: Any, user: dict[str, str], body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Submit and wait until the validation ended and its charge settled: (id, its view)."""
    answer = api.post("/validations", json=body, headers=user)
    assert answer.status_code == 202, answer.text
    validation_id = answer.json()["id"]
    return validation_id, _wait(api, [validation_id], timeout=1800, settle=30, poll=0.5)[validation_id]


def _estimate(api: Any, user: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    answer = api.post("/validations", params={"dry_run": "true"}, json=body, headers=user)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _verdicts(api: Any, validation_id: str) -> list[tuple[str, str, Any, tuple[tuple[int, int], ...]]]:
    """(file, rule, passed, finding lines) of every result: what must not depend on the layout."""
    return sorted(
        (item["file"], v["id"], v.get("passed"), tuple((f["line"], f["end_line"]) for f in v.get("findings", [])))
        for item in _results(api, validation_id)
        for v in item.get("rules", [])
    )


def _empty_prompt_cache(sim: Any) -> None:
    ttl = sim.simulator.config.prompt_cache_ttl_seconds
    sim.reconfigure(prompt_cache_ttl_seconds=0)  # off: every entry dropped
    sim.reconfigure(prompt_cache_ttl_seconds=ttl)


SIM_COUNTERS = ("part_calls", "combine_calls", "cut_answers", "cached_prompt_tokens", "billed_tokens")


def run_layout(
    api: Any,
    sim: Any,
    user: dict[str, str],
    validations: list[list[CorpusFile]],
    *,
    reuse: bool,
    estimate: bool = False,
) -> dict[str, Any]:
    """The validations one after the other (a repeat is judged after its first submission ended)."""
    _empty_prompt_cache(sim)
    before = {name: _stat(sim.simulator, name) for name in SIM_COUNTERS}
    started = time.monotonic()
    views, verdicts, estimated_cached = [], [], 0
    for files in validations:
        body = _body(files, RULES, reuse)
        if estimate:
            estimated_cached += int(_estimate(api, user, body)["prompt_tokens"]["cached"])
        validation_id, view = _submit(api, user, body)
        views.append(view)
        verdicts += _verdicts(api, validation_id)
    seconds = time.monotonic() - started
    usages = [view.get("usage") or {} for view in views]
    out: dict[str, Any] = {name: _stat(sim.simulator, name) - before[name] for name in SIM_COUNTERS}
    out.update(
        statuses=sorted({view["status"] for view in views}),
        files=sum(len(files) for files in validations),
        parts=sum(f["parts"] for view in views for f in view["files"]),
        reused_parts=sum(int(u.get("reused_parts") or 0) for u in usages),
        prompt=sum(int(u.get("prompt_tokens") or 0) for u in usages),
        cached=sum(int(u.get("cached_prompt_tokens") or 0) for u in usages),
        completion=sum(int(u.get("completion_tokens") or 0) for u in usages),
        usd=sum((Decimal(str(u["cost_usd"])) for u in usages), Decimal(0)),
        seconds=seconds,
        verdicts=verdicts,
        estimated_cached=estimated_cached,
    )
    return out


@dataclass
class PartRecords:
    """What a validation's part records hold (the parts table; ids sort before `combine#`/`verdict#`)."""

    prompt_tokens: int = 0  # the parts' own usage
    without_usage: int = 0
    pairs: int = 0  # (part, rule) pairs of multi-part files' parts: what their combine calls report
    failing: int = 0
    findings: int = 0  # of the failing pairs
    evidence: int = 0  # items, over all pairs


def part_records(dynamodb: Any, table: str, validation_id: str, files: list[dict[str, Any]]) -> PartRecords:
    from boto3.dynamodb.types import TypeDeserializer

    read = TypeDeserializer()
    out = PartRecords()
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "validation_id = :v AND part_id BETWEEN :first AND :last",
        "ExpressionAttributeValues": {":v": {"S": validation_id}, ":first": {"S": "0"}, ":last": {"S": "9~"}},
        "ConsistentRead": True,
    }
    while True:
        page = dynamodb.query(**kwargs)
        for raw in page["Items"]:
            item = {key: read.deserialize(value) for key, value in raw.items()}
            if "usage" in item:
                out.prompt_tokens += int(item["usage"]["prompt_tokens"])
            else:
                out.without_usage += 1
            if files[int(item["file_index"])]["parts"] > 1:
                for verdict in item.get("rules") or []:
                    out.pairs += 1
                    out.failing += verdict.get("passed") is False
                    out.findings += len(verdict.get("findings") or []) if verdict.get("passed") is False else 0
                    out.evidence += len(verdict.get("evidence") or [])
        if "LastEvaluatedKey" not in page:
            return out
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def estimate_against_actual(api: Any, dynamodb: Any, parts_table: str) -> list[dict[str, Any]]:
    files = corpus(ESTIMATE_SEED, ESTIMATE_FILES, max_lines=ESTIMATE_MAX_LINES)
    user = _user(api, "estimate")
    rows = []
    for start in range(0, len(files), ESTIMATE_BATCH):
        batch = files[start : start + ESTIMATE_BATCH]
        body = _body(batch, FIDELITY_RULES, reuse=False)
        estimate = _estimate(api, user, body)
        with logged_calls() as log:
            validation_id, view = _submit(api, user, body)
        usage = view["usage"]
        rows.append(
            {
                "files": len(batch),
                "parts": view["progress"]["total"],
                "estimate": estimate,
                "records": part_records(dynamodb, parts_table, validation_id, view["files"]),
                "log": log,
                "prompt": int(usage["prompt_tokens"]),
                "cached": int(usage["cached_prompt_tokens"]),
                "completion": int(usage["completion_tokens"]),
                "usd": float(usage["cost_usd"]),
                "status": view["status"],
            }
        )
    return rows


# --- tables ----------------------------------------------------------------------------------------


def _price(model: str, prompt: int, cached: int, completion: int) -> Decimal:
    from core.pricing import DEFAULT_PRICES

    return DEFAULT_PRICES[model]["standard"].cost(prompt, cached, completion)


def layout_table(naive: dict[str, Any], today: dict[str, Any], reused: dict[str, Any]) -> str:
    runs = (naive, today, reused)

    def row(label: str, render: Callable[[dict[str, Any]], str], goal: str = "") -> str:
        return f"| {label} | {' | '.join(render(r) for r in runs)} | {goal} |"

    def share(r: dict[str, Any]) -> str:
        return f"{r['cached'] / r['prompt']:.3f}" if r["prompt"] else "–"

    def other(model: str) -> Callable[[dict[str, Any]], str]:
        base = _price(model, naive["prompt"], naive["cached"], naive["completion"])
        return lambda r: f"{_price(model, r['prompt'], r['cached'], r['completion']) / base:.3f}"

    out = [
        "| | naive baseline | today's layout, reuse off | today's layout, reuse on | goal |",
        "|---|---:|---:|---:|---|",
        row("files submitted / parts", lambda r: f"{r['files']} / {r['parts']}"),
        row(
            "model calls: part + combine (cut answers asked again included)",
            lambda r: f"{r['part_calls']} + {r['combine_calls']}",
        ),
        row("parts answered by reuse", lambda r: str(r["reused_parts"])),
        row("prompt tokens", lambda r: f"{r['prompt']:,}"),
        row("cached prompt tokens", lambda r: f"{r['cached']:,}"),
        row("**cached share of prompt tokens**", share, "≥ 0.5"),
        row("completion tokens", lambda r: f"{r['completion']:,}"),
        row("USD (simulator's price)", lambda r: f"{r['usd']:.4f}"),
        row("**USD ÷ naive**", lambda r: f"{r['usd'] / naive['usd']:.3f}", "≤ 0.6"),
        row("wall time", lambda r: f"{r['seconds']:.0f} s"),
        row("wall time ÷ naive", lambda r: f"{r['seconds'] / naive['seconds']:.2f}"),
        *(row(f"the same tokens at {m}'s price, ÷ naive", other(m)) for m in OTHER_PRICES),
        row("cut answers (asked again)", lambda r: str(r["cut_answers"])),
        row("statuses", lambda r: ", ".join(r["statuses"])),
        row("verdicts and findings = naive run's", lambda r: "yes" if r["verdicts"] == naive["verdicts"] else "NO"),
    ]
    return "\n".join(out)


def estimate_table(rows: list[dict[str, Any]]) -> str:
    """Per validation and in all: each estimate ÷ what the run used."""

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.3f}" if b else "–"

    def measures(rs: list[dict[str, Any]]) -> dict[str, float]:
        est = [r["estimate"] for r in rs]
        logs: list[CallLog] = [r["log"] for r in rs]
        return {
            "files": sum(r["files"] for r in rs),
            "parts": sum(r["parts"] for r in rs),
            "est_parts": sum(e["prompt_tokens"]["parts"] for e in est),
            "parts_usage": sum(r["records"].prompt_tokens for r in rs),
            "est_combine_calls": sum(e["model_calls"]["combine"] for e in est),
            "combine_calls": sum(1 for log in logs for c in log.calls if c.kind == "combine" and not c.cut),
            "est_combine": sum(e["prompt_tokens"]["combine"] for e in est),
            "combine": sum(log.prompt("combine") for log in logs),
            "est_total": sum(e["prompt_tokens"]["total"] for e in est),
            "prompt": sum(r["prompt"] for r in rs),
            "est_completion": sum(e["completion_tokens"]["p50"] for e in est),
            "completion": sum(r["completion"] for r in rs),
            "est_usd": sum(e["cost_usd"]["standard"]["p50"] for e in est),
            "usd": sum(r["usd"] for r in rs),
        }

    def line(label: str, m: dict[str, float], used: str) -> str:
        return (
            f"| {label} | {m['files']:.0f} / {m['parts']:.0f} | {ratio(m['est_parts'], m['parts_usage'])} "
            f"| {m['est_combine_calls']:.0f} / {m['combine_calls']:.0f} | {ratio(m['est_combine'], m['combine'])} "
            f"| {ratio(m['est_total'], m['prompt'])} | {used} | {ratio(m['est_completion'], m['completion'])} "
            f"| {ratio(m['est_usd'], m['usd'])} |"
        )

    def used(r: dict[str, Any]) -> str:
        ratio_used = r["estimate"]["completion_tokens"]["ratio"]
        return f"{ratio_used['p50']:.2f} ({ratio_used['source']}); actual {r['completion'] / r['prompt']:.3f}"

    every = measures(rows)
    out = [
        "| validation | files / parts | part prompt tokens est ÷ actual | combine calls est / actual "
        "| combine prompt tokens est ÷ actual | all prompt tokens est ÷ actual | completion ÷ prompt: p50 used "
        "| completion tokens p50 est ÷ actual | cost p50 est ÷ actual |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(line(str(i), measures([r]), used(r)) for i, r in enumerate(rows, start=1)),
        line("all", every, f"actual {every['completion'] / every['prompt']:.3f}"),
        "| goal | | ±1% | | | ±5% | | | ±15% |",
    ]
    records: list[PartRecords] = [r["records"] for r in rows]
    pairs, failing = sum(x.pairs for x in records), sum(x.failing for x in records)
    cut = [c for r in rows for c in r["log"].calls if c.cut]
    gap = every["prompt"] - every["est_total"]
    notes = [
        f"all prompt tokens: estimated {every['est_total']:,.0f}, used {every['prompt']:,.0f}; of the "
        f"{gap:,.0f} more: combine prompts {every['combine'] - every['est_combine']:,.0f}, cut answers' first "
        f"attempts {sum(c.prompt for c in cut):,} ({len(cut)} cut), part prompts "
        f"{every['parts_usage'] - every['est_parts']:,.0f}",
        f"multi-part files' part reports: {failing / pairs:.0%} of (part, rule) pairs failing (the estimate's "
        f"typical report: 25%), {sum(x.findings for x in records) / max(failing, 1):.1f} findings per failing "
        f"pair (typical: 1), {sum(x.evidence for x in records):,} evidence items (typical: none)",
        f"cached prompt tokens used / estimated: {sum(r['cached'] for r in rows):,} / "
        f"{sum(r['estimate']['prompt_tokens']['cached'] for r in rows):,}; parts without usage: "
        f"{sum(x.without_usage for x in records)}; statuses: {', '.join(sorted({r['status'] for r in rows}))}",
    ]
    return "\n".join([*out, "", *notes])


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores, {platform.machine()} {model}, Python {platform.python_version()}, load {load}"


def main() -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from bench import aws_client, set_parameters, stack_settings
    from local.aws.server import EmbeddedAWS
    from local.simulator.app import SimulatorConfig
    from local.simulator.server import SimulatorServer

    unique = corpus(SEED, UNIQUE_FILES, max_lines=MAX_LINES)
    validations = [unique[FIRST], unique[SECOND]]
    repeats = len({f.name for f in validations[0]} & {f.name for f in validations[1]})
    submitted = sum(map(len, validations))
    print(f"\n## Cost ({submitted} files, {repeats} of them repeats, seed {SEED}, {len(RULES)} rules)")
    print(f"machine: {machine()} (before)")
    with EmbeddedAWS() as aws, SimulatorServer(SimulatorConfig(latency_seconds=0.02)) as sim:
        estimates_settings = stack_settings(aws.endpoint_url, sim.base_url, "ce")
        set_parameters(
            estimates_settings, {"target-tpm": sim.simulator.config.tpm, "target-rpm": sim.simulator.config.rpm}
        )
        with TestClient(create_app(estimates_settings)) as api:
            api.headers.update({"Authorization": "Bearer bench"})
            estimates = estimate_against_actual(
                api, aws_client("dynamodb", aws.endpoint_url), estimates_settings.table("parts")
            )

        settings = stack_settings(aws.endpoint_url, sim.base_url, "co", completion_max_tokens=COMPLETION_TOKENS)
        set_parameters(settings, {"target-tpm": sim.simulator.config.tpm, "target-rpm": sim.simulator.config.rpm})
        with TestClient(create_app(settings)) as api:
            api.headers.update({"Authorization": "Bearer bench"})
            user = _user(api, "cost")
            with naive_layout(), logged_calls() as naive_log:
                naive = run_layout(api, sim, user, validations, reuse=False)
            with logged_calls() as today_log:
                today = run_layout(api, sim, user, validations, reuse=False, estimate=True)
            reused = run_layout(api, sim, user, validations, reuse=True)
    print(f"machine: {machine()} (after)\n")
    print(layout_table(naive, today, reused))
    if today["cached"]:
        by_kind = {kind: sum(c.cached for c in today_log.calls if c.kind == kind) for kind in ("part", "combine")}
        print(
            f"\ntoday's layout, reuse off: cached prompt tokens estimated ÷ actual "
            f"{today['estimated_cached'] / today['cached']:.3f}; actual: part calls {by_kind['part']:,}, "
            f"combine calls {by_kind['combine']:,}; estimated: {today['estimated_cached']:,} (part calls only)"
        )
    print()
    print("\n".join(prefix_evidence("naive layout, first two part calls", naive_log.first_parts)))
    print("\n".join(prefix_evidence("today's layout, first two part calls", today_log.first_parts)))
    print(
        f"\n## Estimate against actual (fidelity corpus: {ESTIMATE_FILES} files, seed {ESTIMATE_SEED}, "
        f"{len(FIDELITY_RULES)} rules, default part budget, validations of {ESTIMATE_BATCH} files, reuse off)\n"
    )
    print(estimate_table(estimates))


if __name__ == "__main__":
    main()

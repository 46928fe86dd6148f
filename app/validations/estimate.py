"""What a submission would cost before it runs (`POST /validations?dry_run=true`).

- **Part calls**: each part's prompt is built by the same builder the validators use
  (core/prompt.part_messages, with the estimate nonce) and counted by the same tokenizer:
  exact but for the nonce's few tokens. A part whose question is in the reuse cache (the same
  digest the validators look up) is answered without a call and left out.
- **Combine calls**: their prompts hold the parts' reports, which do not exist yet: estimated
  as the submission's token reservation estimates them (core/prompt.combine_overhead_tokens
  plus a report size per rule).
- **Completion tokens**: prompt tokens × the model's completion ÷ prompt ratio at p50 and p90,
  from this deployment's ended validations (core/spend.py keeps a histogram per model), or
  the `COMPLETION_RATIO_PRIOR` while the model has none.
- **Cached prompt tokens**: the prefix every part call shares (the system prompt and the
  rules, core/prompt.py lays them out first), when OpenAI would cache it (1,024 tokens or
  more, in 128-token steps), for every part call after the first.
- **Cost**: each tier of the model's prices (core/pricing.py), at p50 and p90.

Pure functions over the plan; the service reads the reuse cache, the history and the
governor's budget, and runs these on a worker thread.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache
from typing import Any

from app.validations.intake import Submission
from core import prompt
from core.lines import decode_part
from core.pricing import TIERS, PriceTable, Tier, price_of, shown
from core.tokens import count_message_tokens, count_tokens

CACHE_MIN_TOKENS = 1024  # OpenAI caches prompt prefixes of at least this many tokens,
CACHE_STEP_TOKENS = 128  # in steps of this many


@dataclass(frozen=True)
class PartQuestion:
    part_id: str
    digest: str  # core/prompt.question_digest: what the reuse cache is keyed on
    prompt_tokens: int


def part_questions(
    submission: Submission, files: list[dict[str, Any]], parts: list[dict[str, Any]], model: str
) -> list[PartQuestion]:
    """Every part call's exact prompt, counted and hashed (CPU: run it on a worker thread)."""
    rules = [{"id": r.id, "text": r.text} for r in submission.rules]
    questions = []
    for part in parts:
        content = submission.documents[part["file_index"]].content
        start, end = int(part["start_byte"]), int(part["end_byte"])
        text = decode_part(content[start:end], start)
        header = part.get("header")
        header_text = (
            decode_part(content[int(header["start_byte"]) : int(header["end_byte"])], int(header["start_byte"]))
            if header
            else None
        )
        view = prompt.view_of(files[part["file_index"]], part, header_text)
        messages = prompt.part_messages(view, text, rules, prompt.ESTIMATE_NONCE)
        # A real call's random nonce takes more tokens than the estimate's zeros: its mean extra.
        nonces = sum(m["content"].count(prompt.ESTIMATE_NONCE) for m in messages)
        tokens = count_message_tokens(messages) + round(nonces * nonce_extra_tokens())
        questions.append(PartQuestion(part["part_id"], prompt.question_digest(messages, model), tokens))
    return questions


@cache
def nonce_extra_tokens() -> float:
    """The mean number of tokens a random nonce takes beyond ESTIMATE_NONCE, where a prompt has it
    (`TEXT-<nonce>`), over a fixed sample of nonces: the same number on every run."""
    sample = random.Random(0)
    nonces = [sample.getrandbits(64).to_bytes(8, "big").hex() for _ in range(512)]
    base = count_tokens(f"END-TEXT-{prompt.ESTIMATE_NONCE}")
    return sum(count_tokens(f"END-TEXT-{n}") - base for n in nonces) / len(nonces)


def shared_prefix_tokens(submission: Submission, *, combine: bool = False) -> int:
    """Tokens every part call's prompt (or every combine call's) starts with: its system prompt and
    the rules line."""
    rules = [{"id": r.id, "text": r.text} for r in submission.rules]
    if combine:
        report = [prompt.Report(1, 1)]
        one = prompt.combine_messages("a", 1, report, rules, prompt.ESTIMATE_NONCE)
        other = prompt.combine_messages("b", 2, report, rules, "f" * len(prompt.ESTIMATE_NONCE))
    else:
        one = prompt.part_messages(prompt.PartView("a", 1, 1), "", rules, prompt.ESTIMATE_NONCE)
        other = prompt.part_messages(prompt.PartView("b", 2, 2), "", rules, "f" * len(prompt.ESTIMATE_NONCE))
    system, user, user_other = one[0]["content"], one[1]["content"], other[1]["content"]
    common = 0
    while common < min(len(user), len(user_other)) and user[common] == user_other[common]:
        common += 1
    return count_message_tokens([{"role": "system", "content": system}, {"role": "user", "content": user[:common]}])


def cacheable(prefix_tokens: int) -> int:
    """What OpenAI would serve from its cache of a prefix this long."""
    if prefix_tokens < CACHE_MIN_TOKENS:
        return 0
    return prefix_tokens - (prefix_tokens - CACHE_MIN_TOKENS) % CACHE_STEP_TOKENS


@dataclass(frozen=True)
class Tokens:
    part_calls: int
    part_prompt_tokens: int
    combine_calls: int
    combine_prompt_tokens: int
    cached_prompt_tokens: int  # expected of the prompt tokens

    @property
    def calls(self) -> int:
        return self.part_calls + self.combine_calls

    @property
    def prompt_tokens(self) -> int:
        return self.part_prompt_tokens + self.combine_prompt_tokens


def tokens(
    questions: list[PartQuestion],
    reused: set[str],
    combine: list[tuple[int, int]],
    prefix_tokens: int,
    combine_prefix_tokens: int = 0,
) -> Tokens:
    """The calls left once reused parts are taken out; `combine` is (calls, prompt tokens) per multi-part file."""
    asked = [q for q in questions if q.digest not in reused]
    part_prompt = sum(q.prompt_tokens for q in asked)
    combine_calls = sum(c for c, _ in combine)
    # Every part call after the first finds the shared prefix cached; combine calls share a prefix
    # of their own (their system prompt and the rules): all but the first too.
    cached = max(0, len(asked) - 1) * cacheable(prefix_tokens)
    cached += max(0, combine_calls - 1) * cacheable(combine_prefix_tokens)
    return Tokens(len(asked), part_prompt, combine_calls, sum(t for _, t in combine), cached)


def costs(
    table: PriceTable, model: str, usage: Tokens, ratios: tuple[float, float]
) -> dict[Tier, dict[str, float]] | None:
    """USD per tier of the model's prices, at the p50 and p90 completion ratios; None: no price."""
    answers: dict[Tier, dict[str, float]] = {}
    for tier in TIERS:
        price = price_of(table, model, tier)
        if price is None:
            continue
        answers[tier] = {
            name: shown(price.cost(usage.prompt_tokens, usage.cached_prompt_tokens, round(usage.prompt_tokens * ratio)))
            or 0.0
            for name, ratio in (("p50", ratios[0]), ("p90", ratios[1]))
        }
    return answers or None


# Combine prompts hold the parts' reports. An estimate stands in a report per part that fails
# this share of the rules with one finding (a message and a quote of typical length), and
# passes the others, then groups them as the combine step does (core/prompt.combine_groups).
FAILING_SHARE = 0.25
_TYPICAL_MESSAGE = "x" * 80
_TYPICAL_QUOTE = "y" * prompt.REPORT_QUOTE_CHARS


def _typical_report(first: int, last: int, rules: list[dict[str, str]], seed: int) -> prompt.Report:
    every = round(1 / FAILING_SHARE)
    verdicts = []
    for i, rule in enumerate(rules):
        failing = (i + seed) % every == 0
        finding = {"location": f"line {first}", "message": _TYPICAL_MESSAGE, "quote": _TYPICAL_QUOTE}
        verdicts.append({"id": rule["id"], "passed": not failing, "findings": [finding] if failing else []})
    return prompt.Report(first, last, verdicts)


def combine_plan(
    name: str, ranges: list[tuple[int, int]], rules: list[dict[str, str]], budget: int, last_line: int
) -> tuple[int, int]:
    """(calls, prompt tokens) of a multi-part file's combine tree, over typical reports."""
    if len(ranges) <= 1:
        return 0, 0
    reports = [_typical_report(first, last, rules, n) for n, (first, last) in enumerate(ranges)]
    calls = tokens = 0
    while True:
        grouped = prompt.combine_groups(reports, budget)
        for group in grouped:
            messages = prompt.combine_messages(name, last_line, group, rules, prompt.ESTIMATE_NONCE)
            nonces = sum(m["content"].count(prompt.ESTIMATE_NONCE) for m in messages)
            calls = calls + 1
            tokens += count_message_tokens(messages) + round(nonces * nonce_extra_tokens())
        if len(grouped) == 1:
            return calls, tokens
        reports = [_typical_report(g[0].first_line, g[-1].last_line, rules, n) for n, g in enumerate(grouped)]


def combine_plans(
    submission: Submission, files: list[dict[str, Any]], parts: list[dict[str, Any]], budget: int
) -> list[tuple[int, int]]:
    """`combine_plan` of every file (CPU: run it on a worker thread)."""
    rules = [{"id": r.id, "text": r.text} for r in submission.rules]
    ranges: dict[int, list[tuple[int, int]]] = {}
    for part in parts:
        ranges.setdefault(part["file_index"], []).append((int(part["first_line"]), int(part["last_line"])))
    return [
        combine_plan(f["name"], ranges.get(i, []), rules, budget, int(f.get("last_line") or 1))
        for i, f in enumerate(files)
    ]

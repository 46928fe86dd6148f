"""One model answer under the TPM governor, with honest accounting.

Shared by the part validator and the combine step. Every attempt is counted on the
validation (`attempts`; `model_calls`, prompt and completion tokens for the answered
ones) as soon as it returns, whatever became of it: answered, refused with 429, cut,
malformed or timed out; settlement charges the owner what was counted. A cut answer
(`finish_reason == "length"`) is never parsed: it is asked again with twice the
completion allowance, up to `completion_max_tokens_cap`, then the part fails with
`AnswerTooLong`.

Each validation is asked of its own model (its record's `model`, one of the admin's list:
core/models.py), with that model's governor budget, and in that model's family's shape:
reasoning models (o-series, gpt-5) take `max_completion_tokens` and no `temperature`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, cast

import openai
from openai.types.chat import ChatCompletionMessageParam
from openai.types.shared_params import ResponseFormatJSONSchema

from core import governor as g
from core import grounding, headroom, pricing, prompt
from core import models as catalog
from core.governor import parse_duration
from core.pricing import Tier
from core.records import ValidationStatus
from lambdas.common import live_config, model_key
from lambdas.common.config import LambdaConfig
from lambdas.common.errors import (
    AnswerTooLong,
    FlexUnavailable,
    InvalidAnswer,
    ModelRejected,
    ModelUnavailable,
    RateLimited,
    UpstreamTimeout,
)
from lambdas.common.fairness import tenant_of
from lambdas.common.governor import Governor, Lease, governor_for
from lambdas.common.observability import count
from lambdas.common.stores import Store

log = logging.getLogger(__name__)


@lru_cache(maxsize=8)
def model_client(base_url: str | None, api_key: str, timeout: float) -> openai.OpenAI:
    # No SDK retries: Step Functions retries the task with backoff and jitter, and
    # retrying in both places would multiply attempts against the rate limit.
    return openai.OpenAI(base_url=base_url or None, api_key=api_key or "unset", timeout=timeout, max_retries=0)


@dataclass(frozen=True)
class Answer:
    content: str
    usage: dict[str, int]
    model: str
    headers: dict[str, str]
    finish_reason: str
    tier: Tier = "standard"  # the tier that served it (the response's `service_tier`): what it is billed at


def completion_parameters(model: str, max_tokens: int) -> dict[str, Any]:
    """The answer's allowance and sampling in the shape the model's family takes: reasoning models
    refuse `max_tokens` and `temperature` (their allowance, `max_completion_tokens`, includes the
    reasoning tokens; what the rate limiter charges either way)."""
    if catalog.family(model) == "reasoning":
        return {"max_completion_tokens": max_tokens}
    return {"max_tokens": max_tokens, "temperature": 0}


class NoFlexCapacity(Exception):
    """429 "resource unavailable" for a flex call: a lack of capacity, not a rate limit."""


def call_model(
    config: LambdaConfig,
    messages: list[dict[str, str]],
    response_format: dict[str, Any],
    max_tokens: int,
    *,
    api_key: str,
    tier: Tier = "standard",
    model: str | None = None,
) -> Answer:
    """One chat completion of `model` (default: the configured one) with its rate-limit headers;
    errors mapped to the state machine's names, their messages without the key (they end up in
    results and logs). A `flex` call asks `service_tier: "flex"` with the longer
    FLEX_TIMEOUT_SECONDS."""
    flex = tier == "flex"
    timeout = config.flex_timeout_seconds if flex else config.openai_timeout_seconds
    client = model_client(config.openai_base_url, api_key, timeout)
    name = model or config.openai_model
    extra: dict[str, Any] = {"service_tier": "flex"} if flex else {}
    extra.update(completion_parameters(name, max_tokens))

    def message(text: str) -> str:
        return model_key.redact(text, api_key)[:500]

    try:
        raw = client.chat.completions.with_raw_response.create(
            model=name,
            # core/prompt builds these shapes (role/content messages, a json_schema format) as plain dicts.
            messages=cast("list[ChatCompletionMessageParam]", messages),
            response_format=cast(ResponseFormatJSONSchema, response_format),
            **extra,
        )
        completion = raw.parse()
    except openai.RateLimitError as exc:
        if exc.code == "resource_unavailable" or "resource unavailable" in str(exc).lower():
            raise NoFlexCapacity(message(str(exc))) from exc
        headers = exc.response.headers
        # `retry-after`, else the reset of the limit it ran out of: requests when none is left, else tokens.
        exhausted = "requests" if headers.get("x-ratelimit-remaining-requests") == "0" else "tokens"
        wait = parse_duration(headers.get("retry-after")) or parse_duration(
            headers.get(f"x-ratelimit-reset-{exhausted}")
        )
        raise RateLimited(message(str(exc)), retry_after=wait) from exc
    except openai.APITimeoutError as exc:
        raise UpstreamTimeout(message(str(exc))) from exc
    except openai.APIConnectionError as exc:
        raise ModelUnavailable(message(f"connection failed: {exc}")) from exc
    except openai.InternalServerError as exc:
        raise ModelUnavailable(message(str(exc))) from exc
    except openai.AuthenticationError as exc:
        model_key.forget()  # rotated: the next call reads the parameter again
        raise ModelRejected(message(str(exc))) from exc
    except openai.APIStatusError as exc:
        raise ModelRejected(message(str(exc))) from exc
    usage = completion.usage
    details = usage.prompt_tokens_details if usage else None
    counts = {
        "prompt_tokens": usage.prompt_tokens if usage else 0,
        "completion_tokens": usage.completion_tokens if usage else 0,
        "cached_prompt_tokens": (details.cached_tokens or 0) if details else 0,  # served from OpenAI's prefix cache
    }
    choice = completion.choices[0] if completion.choices else None
    return Answer(
        choice.message.content or "" if choice else "",
        counts,
        completion.model,
        dict(raw.headers.items()),
        str(choice.finish_reason) if choice else "stop",
        pricing.tier_of(completion.service_tier),
    )


class Stopped(Exception):
    """The validation was cancelled or rerun: the invocation ends quietly, asking nothing more."""


@dataclass(frozen=True)
class Lane:
    """How a validation's calls are asked (its record's `tier`, `flex_deadline_seconds`, `flex_fallback`)."""

    tier: Tier = "standard"
    deadline_seconds: float = 300.0
    fallback: str = "standard"  # or "fail"

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> Lane:
        """A batch validation's synchronous calls (re-asks, leftovers, combine calls) take its `batch_sync_tier`."""
        flex = record.get("tier") == "flex" or (
            record.get("tier") == "batch" and record.get("batch_sync_tier") == "flex"
        )
        return cls(
            "flex" if flex else "standard",
            float(300 if record.get("flex_deadline_seconds") is None else record["flex_deadline_seconds"]),
            "fail" if record.get("flex_fallback") == "fail" else "standard",
        )


@dataclass
class Asker:
    """Asks the model for one validation, inside one lease (a call slot and tokens)."""

    config: LambdaConfig
    store: Store
    governor: Governor
    lease: Lease
    validation_id: str
    remaining_millis: Callable[[], int]
    before_call: Callable[
        [], None
    ]  # raises to stop (cancelled, or a newer run); checked after the wait, right before the call
    lane: Lane = field(default_factory=lambda: Lane())
    model: str = ""  # the validation's model ("": the configured one); `governor` is its budget's

    @property
    def model_name(self) -> str:
        return self.model or self.config.openai_model

    def ask(
        self,
        messages: list[dict[str, str]],
        response_format: dict[str, Any],
        prompt_estimate: int,
        allowance: int | None = None,
    ) -> Answer:
        """An answer that was not cut; raises the mapped error of a failed attempt, or AnswerTooLong.
        On the flex lane, a 429 "resource unavailable" is asked again with backoff and jitter until
        the lane's deadline (counted from this call's first flex attempt), then at the standard
        tier or not at all (FlexUnavailable), as the validation chose. `allowance`: the first attempt's
        completion tokens (default `completion_max_tokens`; larger when an earlier answer was cut)."""
        allowance = min(allowance or self.config.completion_max_tokens, self.config.completion_max_tokens_cap)
        tier: Tier = self.lane.tier
        flex_since: float | None = None
        unavailable = 0
        while True:
            api_key = model_key.api_key(self.config)  # cached; read before the lease so a failed read costs no attempt
            estimate = prompt_estimate + allowance  # what the rate limiter charges: prompt + max_tokens
            wait = min(
                self.config.capacity_wait_seconds,
                max(0.0, (self.remaining_millis() - self.config.reserve_millis) / 1000),
            )
            self.lease.reserve(estimate, time.time() + wait)
            try:
                self.before_call()
            except Stopped:
                self.lease.release(estimate)  # not sent: the tokens go back with the lease
                raise
            if not self.lease.holds_slot_below_cap():  # max-parallelism went down meanwhile
                self.lease.release(estimate)
                continue  # reserve again: gives this slot up and waits for one below the cap
            if tier == "flex" and flex_since is None:
                flex_since = time.monotonic()
            try:
                answer = self._call(messages, response_format, allowance, estimate, api_key, tier)
            except NoFlexCapacity:
                unavailable += 1
                tier = self._after_no_capacity(flex_since or time.monotonic(), unavailable)
                continue
            if answer.finish_reason != "length":
                return answer
            if allowance >= self.config.completion_max_tokens_cap:
                raise AnswerTooLong(
                    f"the model's answer did not fit {allowance} completion tokens (completion_max_tokens_cap); "
                    "split the file or use fewer rules"
                )
            count("AnswersCut")
            log.info(
                "answer cut at %d tokens; asking again with %d",
                allowance,
                min(2 * allowance, self.config.completion_max_tokens_cap),
            )
            allowance = min(2 * allowance, self.config.completion_max_tokens_cap)

    def _after_no_capacity(self, since: float, unavailable: int) -> Tier:
        """The tier of the next attempt after flex had no capacity `unavailable` times in a row (waiting
        first while the deadline allows); raises FlexUnavailable when the lane fails instead."""
        count("FlexUnavailable")
        left = self.lane.deadline_seconds - (time.monotonic() - since)
        budget = (self.remaining_millis() - self.config.reserve_millis) / 1000
        delay = min(self.config.flex_retry_max_seconds, self.config.flex_retry_base_seconds * 2 ** (unavailable - 1))
        delay *= random.uniform(0.5, 1.0)  # jitter: calls that met no capacity together come back apart
        if delay < left and delay < budget:
            time.sleep(delay)
            return "flex"
        if self.lane.fallback == "standard":
            count("FlexFallbacks")
            log.info(
                "flex had no capacity for %.0f s; %s: asking at the standard tier",
                time.monotonic() - since,
                "flex_deadline_seconds passed" if delay >= left else "this invocation has no time left to wait",
            )
            return "standard"
        raise FlexUnavailable(
            f"flex had no capacity within {self.lane.deadline_seconds:g} s (flex_deadline_seconds) and the "
            "validation chose not to fall back to the standard tier"
        )

    def _call(
        self,
        messages: list[dict[str, str]],
        response_format: dict[str, Any],
        allowance: int,
        estimate: int,
        api_key: str,
        tier: Tier = "standard",
    ) -> Answer:
        """The call inside the lease: settle what the limiter charged, count the attempt,
        feed back what upstream said."""
        started = time.monotonic()
        try:
            answer = call_model(
                self.config, messages, response_format, allowance, api_key=api_key, tier=tier, model=self.model_name
            )
        except NoFlexCapacity:  # a lack of capacity, not a rate limit: the model's budget is not lowered
            self.lease.settle(estimate, estimate, time.monotonic() - started)
            self.store.validations.count_attempt(self.validation_id, None)
            raise
        except RateLimited as exc:
            count("RateLimited")
            self.lease.settle(estimate, estimate, time.monotonic() - started)  # a refused request counts too
            self.store.validations.count_attempt(self.validation_id, None)
            self.governor.rate_limited(exc.retry_after)
            raise
        except Exception:
            count("UpstreamFailures")
            self.lease.settle(estimate, estimate, time.monotonic() - started)
            self.store.validations.count_attempt(self.validation_id, None)
            raise
        seconds = time.monotonic() - started
        count("ModelCalls")
        count("ModelCallSeconds", seconds)
        count("PromptTokens", answer.usage["prompt_tokens"])
        count("CachedPromptTokens", answer.usage["cached_prompt_tokens"])
        count("CompletionTokens", answer.usage["completion_tokens"])
        self.store.validations.count_attempt(self.validation_id, answer.usage, answer.tier, answer.model)
        prompt_tokens = answer.usage["prompt_tokens"]
        charged = prompt_tokens + allowance if prompt_tokens else estimate
        self.lease.settle(estimate, charged, seconds)
        self.governor.observed(answer.headers, estimate)
        return answer


def count_grounding(grounded: grounding.Grounded, model: str) -> None:
    """Metrics of one answer's check against the text (core/grounding.py): the ungrounded rate per model."""
    count("FindingsRelocated", grounded.relocated)
    count("FindingsChecked", grounded.checked, model=model)
    count("FindingsUngrounded", grounded.ungrounded, model=model)


@dataclass(frozen=True)
class Judged:
    """An answer's grounded verdicts, with what its one or two calls cost and what the check did."""

    grounded: grounding.Grounded
    usage: dict[str, int]
    model: str
    calls: int

    def counters(self) -> dict[str, int]:
        """What joins the validation's usage: relocated, ungrounded, reasked."""
        return {
            "relocated": self.grounded.relocated,
            "ungrounded": self.grounded.ungrounded,
            "reasked": self.calls - 1,
        }


def ask_grounded(
    asker: Asker,
    messages: list[dict[str, str]],
    response_format: dict[str, Any],
    estimate: int,
    ground: Callable[[str], grounding.Grounded],
    what: str,
    first_answer: Answer | None = None,
    first_allowance: int | None = None,
) -> Judged:
    """The answer, its claims held to the text by `ground` (which raises InvalidAnswer for an answer
    off the schema). A rule left unbacked (core/grounding: `Grounded.reask`) is asked once more,
    with the first answer and a note of what could not be found; only those rules take the second
    answer, and one it does not back either (or a second answer off the schema) is undecided.
    `first_answer`: the first answer came already (the Batch API's, counted when it came back):
    only the re-ask, if any, is asked here. `first_allowance`: the first ask's completion tokens (an
    earlier answer to the same prompt was cut)."""
    answer = first_answer or asker.ask(messages, response_format, estimate, first_allowance)
    first = ground(answer.content)
    usage = dict(answer.usage)
    count_grounding(first, answer.model)
    if not first.reask:
        return Judged(first, usage, answer.model, 1)
    count("Reasks")
    log.info("%s: rules %s are not backed by the text; asking again", what, first.reask)
    again = prompt.reask_messages(messages, answer.content, grounding.reask_note(first.verdicts, first.reask))
    second_answer = asker.ask(again, response_format, estimate + prompt_estimate_without_tokenizer(again[-2:]))
    for key, value in second_answer.usage.items():
        usage[key] = usage.get(key, 0) + value
    try:
        second: grounding.Grounded | None = ground(second_answer.content)
    except InvalidAnswer as exc:  # the first answer stands for the other rules; these stay undecided
        log.info("%s: the second answer is not usable: %s", what, exc)
        second = None
    if second is not None:
        count_grounding(second, second_answer.model)
    return Judged(grounding.settle(first, second), usage, answer.model, 2)


def prompt_estimate_without_tokenizer(messages: list[dict[str, str]]) -> int:
    """An upper estimate of a prompt's tokens where no tokenizer loads (the Lambdas): JSON and
    text run 3-4 bytes a token in cl100k; a third of the bytes errs high. The real count
    replaces it once the call answers."""
    return 8 + sum(4 + len(m["content"].encode("utf-8")) // 3 for m in messages)


_STOPPED = {ValidationStatus.CANCELLING.value, ValidationStatus.CANCELLED.value}


@dataclass(frozen=True)
class Askers:
    """One invocation's way to the model: a new Asker — its own lease, so its own call slot and
    grants — per call it runs at once (core/headroom.py: up to k), all with the same checks."""

    new: Callable[[], Asker]
    cap: Callable[[], int]  # the validation's live parallelism
    plan: Mapping[str, Any]
    model: str  # the validation's model: what every call asks, and part of every reuse key

    @property
    def limit(self) -> int:
        """k: the most calls this invocation may run at once (the plan's)."""
        return headroom.calls_per_invocation(self.plan)

    def workers(self) -> int:
        """Calls this invocation may run at once now: its part of the live cap, at most k."""
        return headroom.workers(self.cap(), self.plan)


def askers_for(
    store: Store,
    config: LambdaConfig,
    validation_id: str,
    run: int,
    remaining_millis: Callable[[], int],
    governor: Governor | None = None,
) -> Askers:
    """Askers for one invocation of a validation's run, of the validation's model (`model`; a
    record written before there were several: the configured one) and from its budget: each
    with its lease (call slot below the live parallelism), and the check before every call that
    the run is neither cancelled nor superseded; the effective parallelism is shown on the
    validation when it changes. ModelRejected (the part fails, not retried) when the model is no
    longer in the admin's list. The caller closes each asker's `lease` when done."""
    current = store.validations.get(
        validation_id,
        "plan",
        "parallelism",
        "owner",
        "priority",
        "tier",
        "flex_deadline_seconds",
        "flex_fallback",
        "batch_sync_tier",
        "model",
    )
    lane = Lane.of(current)
    model = str(current.get("model") or config.openai_model)
    try:
        live_config.limits(config, model)
    except catalog.UnknownModel:
        raise ModelRejected(
            f"the model {model!r} is not in this deployment's list of models (GET /admin/models)"
        ) from None
    plan, shown = current.get("plan") or {}, current.get("parallelism")
    governor = governor or governor_for(config, store.client, model)
    tenant = tenant_of(store, current)  # fair share: whose tokens

    def cap() -> int:
        return g.effective_parallelism(live_config.limits(config).max_parallelism, {"plan": plan})

    def before_call() -> None:
        nonlocal shown
        state = store.validations.get(validation_id, "status", "run")
        if state["status"] in _STOPPED or state["run"] != run:
            raise Stopped()
        if (now := cap()) != shown:  # visible in GET /validations/{id} and the progress events
            shown = store.validations.show_parallelism(validation_id, now)

    def new() -> Asker:
        lease = governor.lease(validation_id, cap, tenant)
        return Asker(config, store, governor, lease, validation_id, remaining_millis, before_call, lane, model)

    return Askers(new, cap, plan, model)


def asker_for(
    store: Store,
    config: LambdaConfig,
    validation_id: str,
    run: int,
    remaining_millis: Callable[[], int],
    governor: Governor | None = None,
) -> Asker:
    """One Asker for an invocation that calls one at a time (`askers_for`); the caller closes
    `asker.lease` when done."""
    return askers_for(store, config, validation_id, run, remaining_millis, governor).new()

"""Validate a batch of chunks: one model call per chunk not yet done.

Idempotent: a chunk that already settled is skipped, so a retried or duplicated
invocation resumes where the last one stopped. Between chunks it checks that the
validation is still this run and not being cancelled, so no chunk starts after a stop.
Every model call goes through the TPM governor (lambdas/common/governor.py): a call slot
below the live parallelism and the call's tokens from the global budget, before the call.
"""

from __future__ import annotations

import json
import logging
import time
from functools import lru_cache
from dataclasses import dataclass
from typing import Any, Callable

import openai

from core import governor as g
from core import prompt
from core.governor import parse_duration
from core.records import ChunkStatus, ValidationStatus
from lambdas.common import live_config
from lambdas.common.config import LambdaConfig
from lambdas.common.errors import BatchIncomplete, ModelRejected, RateLimited, UpstreamError, UpstreamTimeout
from lambdas.common.governor import Governor, governor_for
from lambdas.common.store import Store

log = logging.getLogger(__name__)
_STOPPED = {ValidationStatus.CANCELLING.value, ValidationStatus.CANCELLED.value}


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


def call_model(config: LambdaConfig, messages: list[dict[str, str]]) -> Answer:
    """One chat completion with its rate-limit headers; errors mapped to the state machine's names."""
    client = model_client(config.openai_base_url, config.openai_api_key, config.openai_timeout_seconds)
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=config.openai_model,
            messages=messages,  # type: ignore[arg-type]
            response_format=prompt.RESPONSE_FORMAT,  # type: ignore[arg-type]
            max_tokens=config.completion_max_tokens,
            temperature=0,
        )
        completion = raw.parse()
    except openai.RateLimitError as exc:
        headers = exc.response.headers
        wait = parse_duration(headers.get("retry-after")) or parse_duration(headers.get("x-ratelimit-reset-tokens"))
        raise RateLimited(str(exc)[:500], retry_after=wait) from exc
    except openai.APITimeoutError as exc:
        raise UpstreamTimeout(str(exc)[:500]) from exc
    except openai.APIConnectionError as exc:
        raise UpstreamError(f"connection failed: {exc}"[:500]) from exc
    except openai.InternalServerError as exc:
        raise UpstreamError(str(exc)[:500]) from exc
    except openai.APIStatusError as exc:
        raise ModelRejected(str(exc)[:500]) from exc
    usage = completion.usage
    counts = {
        "prompt_tokens": usage.prompt_tokens if usage else 0,
        "completion_tokens": usage.completion_tokens if usage else 0,
    }
    return Answer(completion.choices[0].message.content or "", counts, completion.model, dict(raw.headers.items()))


def validate_batch(
    store: Store,
    config: LambdaConfig,
    validation_id: str,
    run: int,
    chunks: dict[str, str],
    remaining_millis: Callable[[], int],
    governor: Governor | None = None,
) -> dict[str, Any]:
    current = store.validation(validation_id, "rules", "files", "plan", "parallelism")
    rules, files, plan = current["rules"], current["files"], current.get("plan") or {}
    governor = governor or governor_for(config, store.client)
    shown = current.get("parallelism")

    def cap() -> int:
        return g.effective_parallelism(live_config.limits(config).max_parallelism, {"plan": plan})

    lease = governor.lease(validation_id, cap)
    validated = skipped = 0
    try:
        for chunk in store.chunks(validation_id, chunks["first"], chunks["last"]):
            if chunk["status"] != ChunkStatus.PENDING:
                skipped += 1
                continue
            if remaining_millis() < config.reserve_millis:
                raise BatchIncomplete(f"{validated} chunks validated, time running out")
            text = store.chunk_text(chunk)
            messages = prompt.messages(files[chunk["file_index"]]["name"], chunk["first_line"], chunk["last_line"], text, rules)
            estimate = charge_estimate(chunk, messages, config)
            wait = min(config.capacity_wait_seconds, max(0.0, (remaining_millis() - config.reserve_millis) / 1000))
            lease.reserve(estimate, time.time() + wait)
            # Checked after the wait for a slot and tokens, right before the call: no call starts after a stop.
            current = store.validation(validation_id, "status", "run")
            if current["status"] in _STOPPED or current["run"] != run:
                return {"validated": validated, "skipped": skipped, "stopped": True}
            if (now := cap()) != shown:  # visible in GET /validations/{id} and the progress events
                shown = store.show_parallelism(validation_id, now)
            answer = _call(config, messages, lease, governor, estimate)
            try:
                verdicts = prompt.parse_answer(answer.content, rules)
            except prompt.InvalidAnswer as exc:
                raise UpstreamError(str(exc)) from exc
            if store.record_success(validation_id, chunk, verdicts, answer.usage, answer.model):
                validated += 1
                store.after_chunk(validation_id, run, chunk)
            else:  # a duplicate invocation settled it first
                skipped += 1
    finally:
        lease.close()
    return {"validated": validated, "skipped": skipped, "stopped": False}


def charge_estimate(chunk: dict[str, Any], messages: list[dict[str, str]], config: LambdaConfig) -> int:
    """What the rate limiter will charge: prompt + max_tokens. The API counted the prompt at
    intake (chunk `estimate`), so the Lambdas need no tokenizer; the call's real prompt count
    replaces it afterwards."""
    if chunk.get("estimate"):
        return int(chunk["estimate"])
    from core.tokens import count_message_tokens  # records written before estimates were kept

    return count_message_tokens(messages) + config.completion_max_tokens


def _call(config: LambdaConfig, messages: list[dict[str, str]], lease: Any, governor: Governor, estimate: int) -> Answer:
    """The model call inside the lease: settle what the limiter charged, feed back what upstream said."""
    started = time.monotonic()
    try:
        answer = call_model(config, messages)
    except RateLimited as exc:
        lease.settle(estimate, estimate, time.monotonic() - started)  # a refused request counts too
        governor.rate_limited(exc.retry_after)
        raise
    except Exception:
        lease.settle(estimate, estimate, time.monotonic() - started)
        raise
    prompt_tokens = answer.usage["prompt_tokens"]
    charged = prompt_tokens + config.completion_max_tokens if prompt_tokens else estimate
    lease.settle(estimate, charged, time.monotonic() - started)
    governor.observed(answer.headers, estimate)
    return answer


def failure_reason(error: dict[str, Any]) -> dict[str, str]:
    """Step Functions' caught error ({Error, Cause}) as a short reason for the chunk."""
    kind = str(error.get("Error") or "Error")
    cause = error.get("Cause") or ""
    try:
        message = json.loads(cause).get("errorMessage", cause)
    except (ValueError, AttributeError):
        message = cause
    return {"type": kind, "message": str(message)[:1000]}

"""Validate a batch of chunks: one model call per chunk not yet done.

Idempotent: a chunk that already settled is skipped, so a retried or duplicated
invocation resumes where the last one stopped. Between chunks it checks that the
validation is still this run and not being cancelled, so no chunk starts after a stop.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import Any, Callable

import openai

from core import prompt
from core.records import ChunkStatus, ValidationStatus
from lambdas.common.config import LambdaConfig
from lambdas.common.errors import BatchIncomplete, ModelRejected, RateLimited, UpstreamError, UpstreamTimeout
from lambdas.common.store import Store

log = logging.getLogger(__name__)
_STOPPED = {ValidationStatus.CANCELLING.value, ValidationStatus.CANCELLED.value}


@lru_cache(maxsize=8)
def model_client(base_url: str | None, api_key: str, timeout: float) -> openai.OpenAI:
    # No SDK retries: Step Functions retries the task with backoff and jitter, and
    # retrying in both places would multiply attempts against the rate limit.
    return openai.OpenAI(base_url=base_url or None, api_key=api_key or "unset", timeout=timeout, max_retries=0)


def call_model(config: LambdaConfig, messages: list[dict[str, str]]) -> tuple[str, dict[str, int], str]:
    """(content, usage, model) of one chat completion; errors mapped to the state machine's names."""
    client = model_client(config.openai_base_url, config.openai_api_key, config.openai_timeout_seconds)
    try:
        completion = client.chat.completions.create(
            model=config.openai_model,
            messages=messages,  # type: ignore[arg-type]
            response_format=prompt.RESPONSE_FORMAT,  # type: ignore[arg-type]
            max_tokens=config.completion_max_tokens,
            temperature=0,
        )
    except openai.RateLimitError as exc:
        raise RateLimited(str(exc)[:500]) from exc
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
    return completion.choices[0].message.content or "", counts, completion.model


def validate_batch(
    store: Store,
    config: LambdaConfig,
    validation_id: str,
    run: int,
    chunks: dict[str, str],
    remaining_millis: Callable[[], int],
) -> dict[str, Any]:
    current = store.validation(validation_id, "rules", "files", "status", "run")
    rules, files = current["rules"], current["files"]
    validated = skipped = 0
    for position, chunk in enumerate(store.chunks(validation_id, chunks["first"], chunks["last"])):
        if chunk["status"] != ChunkStatus.PENDING:
            skipped += 1
            continue
        if position:  # the first chunk uses the read above
            current = store.validation(validation_id, "status", "run")
        if current["status"] in _STOPPED or current["run"] != run:
            return {"validated": validated, "skipped": skipped, "stopped": True}
        if remaining_millis() < config.reserve_millis:
            raise BatchIncomplete(f"{validated} chunks validated, time running out")
        text = store.chunk_text(chunk)
        messages = prompt.messages(files[chunk["file_index"]]["name"], chunk["first_line"], chunk["last_line"], text, rules)
        content, usage, model = call_model(config, messages)
        try:
            verdicts = prompt.parse_answer(content, rules)
        except prompt.InvalidAnswer as exc:
            raise UpstreamError(str(exc)) from exc
        if store.record_success(validation_id, chunk, verdicts, usage, model):
            validated += 1
            store.after_chunk(validation_id, run, chunk)
        else:  # a duplicate invocation settled it first
            skipped += 1
    return {"validated": validated, "skipped": skipped, "stopped": False}


def failure_reason(error: dict[str, Any]) -> dict[str, str]:
    """Step Functions' caught error ({Error, Cause}) as a short reason for the chunk."""
    kind = str(error.get("Error") or "Error")
    cause = error.get("Cause") or ""
    try:
        message = json.loads(cause).get("errorMessage", cause)
    except (ValueError, AttributeError):
        message = cause
    return {"type": kind, "message": str(message)[:1000]}

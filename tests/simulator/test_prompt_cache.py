"""The simulator's prompt caching (local/simulator/cache.py) and `service_tier` echo, in-process."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from typing import Any, cast

import openai
import pytest
from fastapi.testclient import TestClient
from openai.types.chat import ChatCompletionMessageParam

from local.simulator import cache
from local.simulator.app import Simulator, SimulatorConfig, create_simulator_app

MAX_TOKENS = 50


class Clock:
    """The prompt cache's time, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def words(word: str, count: int) -> str:
    """`count` tokens: cl100k splits " cat cat …" into one token per " cat"."""
    return f" {word}" * count


def prompt(shared: int, tail: str, *, shared_word: str = "cat", role: str = "system") -> list[dict[str, str]]:
    """A message of `shared` tokens, then a user message that differs from its first token on."""
    return [{"role": role, "content": words(shared_word, shared)}, {"role": "user", "content": words(tail, 20)}]


def expected_cached(first: list[dict[str, str]], second: list[dict[str, str]]) -> int:
    """OpenAI's rule over the two prompts' tokens: the longest 1,024 + 128·k at most their common prefix."""
    common = len(os.path.commonprefix([cache.prompt_tokens(first), cache.prompt_tokens(second)]))
    return 0 if common < 1024 else 1024 + 128 * ((common - 1024) // 128)


def complete(simulator: Simulator, messages: list[dict[str, str]], **extra: Any) -> tuple[int, dict[str, Any]]:
    body = {"model": "m", "messages": messages, "max_tokens": MAX_TOKENS, **extra}
    response = asyncio.run(simulator.complete(body))
    return response.status_code, json.loads(bytes(response.body))


def cached(simulator: Simulator, messages: list[dict[str, str]], **extra: Any) -> int:
    """The call's `usage.prompt_tokens_details.cached_tokens`."""
    status, reply = complete(simulator, messages, **extra)
    assert status == 200, reply
    tokens: int = reply["usage"]["prompt_tokens_details"]["cached_tokens"]
    return tokens


def sdk_messages(messages: list[dict[str, str]]) -> list[ChatCompletionMessageParam]:
    """Plain dicts typed as the SDK's messages (as lambdas/common/model.py does)."""
    return cast("list[ChatCompletionMessageParam]", messages)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim(clock: Clock) -> Simulator:
    return Simulator(SimulatorConfig(latency_seconds=0), clock=clock)


@pytest.fixture
def client(sim: Simulator) -> Iterator[openai.OpenAI]:
    """The OpenAI SDK talking to the simulator's ASGI app in-process."""
    with TestClient(create_simulator_app(sim)) as http:
        yield openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0)


# --- the caching rule -------------------------------------------------------------------------------------


def test_the_prompt_as_tokens_is_as_long_as_the_prompt_tokens_billed(sim: Simulator) -> None:
    messages = prompt(1994, "dog")

    status, reply = complete(sim, messages)

    assert status == 200
    assert len(cache.prompt_tokens(messages)) == reply["usage"]["prompt_tokens"]


def test_a_2000_token_shared_prefix_is_served_from_the_cache_in_128_token_steps(sim: Simulator) -> None:
    first, second = prompt(1994, "dog"), prompt(1994, "fish")  # 3 + 1994 + 3: the user role is shared too
    expected = expected_cached(first, second)

    assert cached(sim, first) == 0  # nothing cached yet
    assert cached(sim, second) == expected == 1920  # 1,024 + 128·7 <= 2,000 < 1,024 + 128·8
    assert sim.stats.snapshot()["cached_prompt_tokens"] == 1920


def test_an_identical_prompt_is_cached_up_to_its_last_whole_step(sim: Simulator) -> None:
    messages = prompt(1994, "dog")
    billed = len(cache.prompt_tokens(messages))

    cached(sim, messages)

    assert cached(sim, messages) == expected_cached(messages, messages) == 1024 + 128 * ((billed - 1024) // 128)


def test_a_prefix_under_1024_tokens_is_never_cached(sim: Simulator) -> None:
    short = prompt(900, "dog")
    assert cached(sim, short) == 0
    assert cached(sim, short) == 0  # the same prompt again: under 1,024 tokens, nothing was stored

    shares_1000 = prompt(994, "fish", shared_word="cat") + [{"role": "user", "content": words("owl", 600)}]
    other = prompt(994, "crow", shared_word="cat") + [{"role": "user", "content": words("owl", 600)}]
    assert expected_cached(shares_1000, other) == 0
    assert cached(sim, shares_1000) == 0
    assert cached(sim, other) == 0  # both over 1,024 tokens, but they share only 1,000
    assert sim.stats.snapshot()["cached_prompt_tokens"] == 0


def test_the_prefix_covers_roles_and_the_model(sim: Simulator) -> None:
    cached(sim, prompt(1994, "dog", role="system"))

    assert cached(sim, prompt(1994, "dog", role="developer")) == 0  # same text, another role
    assert cached(sim, prompt(1994, "dog"), model="other-model") == 0  # OpenAI caches per model
    assert cached(sim, prompt(1994, "dog")) > 0


def test_cached_tokens_still_count_toward_tpm(clock: Clock) -> None:
    messages = prompt(1994, "dog")
    charged = len(cache.prompt_tokens(messages)) + MAX_TOKENS
    sim = Simulator(SimulatorConfig(latency_seconds=0, tpm=charged * 3 // 2, window_seconds=3600), clock=clock)

    assert cached(sim, messages) == 0
    status, reply = complete(sim, messages)  # would fit if the cached tokens were free

    assert status == 429 and reply["error"]["code"] == "rate_limit_exceeded"
    assert sim.stats.snapshot()["admitted_tokens"] == charged


def test_a_call_refused_or_failed_stores_nothing(sim: Simulator) -> None:
    messages = prompt(1994, "dog")
    sim.reconfigure(error_rate=1.0)
    assert complete(sim, messages)[0] == 500

    sim.reconfigure(error_rate=0.0)
    assert cached(sim, messages) == 0


# --- expiry and the bound -------------------------------------------------------------------------------


def test_an_entry_expires_its_ttl_after_its_last_use(clock: Clock) -> None:
    sim = Simulator(SimulatorConfig(latency_seconds=0, prompt_cache_ttl_seconds=60), clock=clock)
    first, second = prompt(1994, "dog"), prompt(1994, "fish")
    cached(sim, first)

    clock.now += 59
    assert cached(sim, second) == 1920  # within 60 s of the first call; the shared prefix is used again
    clock.now += 59
    assert cached(sim, first) == 1920  # 118 s after it was stored, 59 s after its last use
    clock.now += 60
    assert cached(sim, second) == 0  # 60 s after the last use: expired
    assert len(sim.prompt_cache) == 8  # the expired entries are gone; these are the call's own, fresh


def test_the_cache_keeps_at_most_its_cap_dropping_the_least_recently_used_longest_first(sim: Simulator) -> None:
    three = prompt(1280, "dog")  # 1,309 tokens: prefixes of 1,024, 1,152 and 1,280
    one, two = prompt(1100, "fish", shared_word="owl"), prompt(1200, "crow", shared_word="bee")
    entries = [len(range(1024, len(cache.prompt_tokens(m)) + 1, 128)) for m in (three, one, two)]
    assert entries == [3, 1, 2]
    sim.reconfigure(prompt_cache_max_entries=4)

    for messages in (three, one, two):
        cached(sim, messages)
        assert len(sim.prompt_cache) <= 4

    # `two` pushed out the least recently used two: `three`'s 1,280 and 1,152 prefixes.
    assert cached(sim, three) == 1024
    # `three`, stored again, pushed out `one` and then `two`'s longer prefix, keeping its shorter one.
    assert cached(sim, two) == 1024
    assert cached(sim, one) == 0
    assert len(sim.prompt_cache) == 4


def test_a_lower_cap_trims_at_once_and_a_bad_setting_changes_nothing(sim: Simulator) -> None:
    cached(sim, prompt(1994, "dog"))  # 8 prefixes
    assert len(sim.prompt_cache) == 8

    with pytest.raises(ValueError, match="prompt_cache_max_entries"):
        sim.reconfigure(prompt_cache_max_entries=-1, prompt_cache_ttl_seconds=10)
    assert (sim.config.prompt_cache_ttl_seconds, len(sim.prompt_cache)) == (cache.DEFAULT_TTL_SECONDS, 8)

    sim.reconfigure(prompt_cache_max_entries=2)
    assert len(sim.prompt_cache) == 2
    sim.reconfigure(prompt_cache_ttl_seconds=0)  # 0 for either: caching off
    assert cached(sim, prompt(1994, "dog")) == 0 and len(sim.prompt_cache) == 0
    sim.reconfigure(prompt_cache_ttl_seconds=300, prompt_cache_max_entries=0)
    assert cached(sim, prompt(1994, "dog")) == 0 and len(sim.prompt_cache) == 0


# --- service_tier ---------------------------------------------------------------------------------------


def test_the_response_names_the_tier_that_served_it_and_an_unknown_tier_is_refused(
    client: openai.OpenAI, sim: Simulator
) -> None:
    def served(**tier: Any) -> str | None:
        completion = client.chat.completions.create(
            model="m", messages=sdk_messages(prompt(10, "dog")), max_tokens=MAX_TOKENS, **tier
        )
        return completion.service_tier

    assert [served(), served(service_tier="auto"), served(service_tier="default")] == ["default"] * 3
    assert served(service_tier="flex") == "flex"
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="m",
            messages=sdk_messages(prompt(10, "dog")),
            extra_body={"service_tier": "cheap"},
        )

    assert refused.value.code == "invalid_value" and refused.value.param == "service_tier"
    stats = sim.stats.snapshot()
    assert stats["served_tiers"] == {"default": 3, "flex": 1}
    assert stats["requests"] == 4  # the refused call never reached the limits


def test_the_sdk_reads_cached_tokens_from_usage(client: openai.OpenAI, sim: Simulator) -> None:
    first, second = prompt(1994, "dog"), prompt(1994, "fish")
    usages = [
        client.chat.completions.create(model="m", messages=sdk_messages(m), max_tokens=MAX_TOKENS).usage
        for m in (first, second)
    ]

    details = [u.prompt_tokens_details.cached_tokens if u and u.prompt_tokens_details else None for u in usages]
    assert details == [0, expected_cached(first, second)]
    assert sim.stats.snapshot()["cached_prompt_tokens"] == expected_cached(first, second)

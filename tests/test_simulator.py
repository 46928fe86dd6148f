"""The OpenAI-compatible simulator: limits like OpenAI's, deterministic verdicts."""

from __future__ import annotations

import json

import openai
import pytest

from app.simulator.app import SimulatorConfig
from app.simulator.limits import RateLimits, duration
from app.simulator.server import SimulatorServer
from app.simulator.verdicts import answer
from core.prompt import RESPONSE_FORMAT, messages


def test_tokens_are_charged_at_admission_with_max_tokens():
    limits = RateLimits(rpm=100, tpm=1000)
    first = limits.admit(600)
    second = limits.admit(600)

    assert first.admitted and first.headers["x-ratelimit-remaining-tokens"] == "400"
    assert not second.admitted and second.limited_by == "tokens"
    assert 0 < second.retry_after <= 60 * 200 / 1000 + 0.1


def test_request_limit_is_named_when_it_is_the_one_hit():
    limits = RateLimits(rpm=1, tpm=10_000)
    assert limits.admit(1).admitted
    assert limits.admit(1).limited_by == "requests"


def test_durations_use_openais_format():
    assert duration(0.02) == "20ms"
    assert duration(1.5) == "1.5s"
    assert duration(360) == "6m0s"


def test_verdicts_are_deterministic_and_cite_lines():
    rules = [{"id": "n", "text": 'must not contain "secret"'}, {"id": "m", "text": 'must contain "total"'}, {"id": "o", "text": "be polite"}]
    user = messages("a.txt", 5, 7, "a\nthe SECRET\nb", rules)[1]["content"]

    verdicts = {r["rule_id"]: r for r in json.loads(answer(user))["results"]}

    assert verdicts["n"] == {"rule_id": "n", "passed": False, "findings": [{"location": "line 6", "message": 'contains "secret"'}]}
    assert verdicts["m"]["passed"] is False and verdicts["m"]["findings"][0]["location"] == "lines 5-7"
    assert verdicts["o"] == {"rule_id": "o", "passed": True, "findings": []}
    assert answer(user) == answer(user)


def test_over_the_limit_the_sdk_sees_429_with_retry_after_and_headers():
    with SimulatorServer(SimulatorConfig(tpm=1000, latency_seconds=0)) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        prompt = messages("a.txt", 1, 1, "row", [{"id": "a", "text": "t"}])
        ok = client.chat.completions.with_raw_response.create(model="m", messages=prompt, response_format=RESPONSE_FORMAT, max_tokens=600)
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="m", messages=prompt, max_tokens=600)

    assert ok.parse().model == "simulator"
    assert int(ok.headers["x-ratelimit-remaining-tokens"]) < 400
    assert float(caught.value.response.headers["retry-after"]) > 0
    assert "tokens per min (TPM)" in caught.value.message
    assert server.stats.rate_limited == 1 and server.stats.requests == 2

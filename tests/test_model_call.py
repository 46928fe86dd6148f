"""lambdas/common/model.call_model: the request asks the model it is given, in its family's shape
(reasoning models refuse `max_tokens` and `temperature` and take `max_completion_tokens`)."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import pytest

from core import prompt
from lambdas.common import model
from lambdas.common.config import LambdaConfig

ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "any",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "{}"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
}


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = []

    def server(request: httpx2.Request) -> httpx2.Response:
        bodies.append(json.loads(request.content))
        return httpx2.Response(200, content=json.dumps(ANSWER), headers={"content-type": "application/json"})

    client = openai.OpenAI(
        base_url="http://model.test/v1",
        api_key="k",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(server)),
    )
    monkeypatch.setattr(model, "model_client", lambda *args: client)
    return bodies


CONFIG = LambdaConfig(validations_table="v", parts_table="p", uploads_bucket="b", openai_model="gpt-4o-mini")


def _ask(name: str | None) -> None:
    messages = [{"role": "user", "content": "hi"}]
    model.call_model(CONFIG, messages, prompt.PART_RESPONSE_FORMAT, 300, api_key="k", model=name)


def test_a_chat_model_is_asked_with_max_tokens_at_temperature_zero(sent: list[dict[str, Any]]) -> None:
    _ask(None)  # the configured model
    _ask("gpt-4.1-mini")

    assert [b["model"] for b in sent] == ["gpt-4o-mini", "gpt-4.1-mini"]
    assert all(b["max_tokens"] == 300 and b["temperature"] == 0 for b in sent)
    assert not any("max_completion_tokens" in b for b in sent)


@pytest.mark.parametrize("name", ["o4-mini", "o3", "gpt-5-mini"])
def test_a_reasoning_model_is_asked_with_max_completion_tokens_and_no_temperature(
    sent: list[dict[str, Any]], name: str
) -> None:
    _ask(name)

    (body,) = sent
    assert body["model"] == name and body["max_completion_tokens"] == 300
    assert "max_tokens" not in body and "temperature" not in body
    assert body["response_format"]["type"] == "json_schema"  # structured outputs, as every call

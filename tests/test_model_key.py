"""lambdas/common/model_key.py: the model key from an SSM SecureString, cached, forgotten when
refused, and never in an error message."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx2
import openai
import pytest

from lambdas.common import model, model_key
from lambdas.common.config import LambdaConfig
from lambdas.common.errors import ModelRejected, StoreUnavailable
from tests.support.stack import Aws


@pytest.fixture
def config(aws: Aws) -> Iterator[LambdaConfig]:
    yield LambdaConfig(
        validations_table="v",
        parts_table="c",
        uploads_bucket="b",
        aws_endpoint_url=aws.endpoint_url,
        openai_api_key_parameter=f"/t{uuid.uuid4().hex[:8]}/secrets/openai-api-key",
    )
    model_key.forget()  # no cached key outlives the test


def _put(aws: Aws, config: LambdaConfig, value: str) -> None:
    aws.client("ssm").put_parameter(
        Name=config.openai_api_key_parameter, Value=value, Type="SecureString", Overwrite=True
    )


def test_the_key_is_decrypted_kept_while_rotated_in_ssm_and_read_again_once_forgotten(
    aws: Aws, config: LambdaConfig
) -> None:
    _put(aws, config, "sk-first")
    assert model_key.api_key(config) == "sk-first"  # decrypted: SSM's raw value is "kms:alias/aws/ssm:sk-first"

    _put(aws, config, "sk-rotated")
    kept = model_key.api_key(config)
    model_key.forget()

    assert kept == "sk-first"  # cached for KEY_CACHE_SECONDS: one read per warm Lambda, not per call
    assert model_key.api_key(config) == "sk-rotated"


def test_no_parameter_configured_means_no_key(config: LambdaConfig) -> None:
    assert model_key.api_key(config.model_copy(update={"openai_api_key_parameter": ""})) == ""


def test_a_missing_parameter_is_a_retried_store_error_naming_it(config: LambdaConfig) -> None:
    with pytest.raises(StoreUnavailable, match=config.openai_api_key_parameter):
        model_key.api_key(config)


def test_a_refused_key_is_redacted_from_the_error_and_forgotten(
    config: LambdaConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "sk-live-0123456789abcdef"

    def echo_the_credentials(request: httpx2.Request) -> httpx2.Response:  # a server that repeats what it was sent
        body = {"error": {"message": f"bad credentials: {request.headers['authorization']}", "code": "invalid_api_key"}}
        return httpx2.Response(401, content=json.dumps(body), headers={"content-type": "application/json"})

    client = openai.OpenAI(
        base_url="http://model.test/v1",
        api_key=key,
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(echo_the_credentials)),
    )
    monkeypatch.setattr(model, "model_client", lambda *args: client)
    model_key._provider(config.aws_endpoint_url, config.aws_region)  # a provider (and its cache) exists

    with pytest.raises(ModelRejected) as caught:
        model.call_model(config, [{"role": "user", "content": "hi"}], {"type": "text"}, 10, api_key=key)

    assert key not in str(caught.value) and f"Bearer {model_key.REDACTED}" in str(caught.value)
    assert model_key._provider.cache_info().currsize == 0  # the next call reads the parameter again


def test_redact_removes_every_occurrence_and_leaves_text_without_a_key_alone() -> None:
    assert model_key.redact("k=sk-1 again sk-1", "sk-1") == "k=[redacted] again [redacted]"
    assert model_key.redact("nothing to hide", "") == "nothing to hide"

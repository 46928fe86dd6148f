"""The validator Lambda's errors carry the names the state machine retries."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from lambdas.common.errors import StoreUnavailable, is_condition_failure
from lambdas.validate_part import handler


class _Context:
    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@pytest.fixture
def failing(monkeypatch: pytest.MonkeyPatch) -> Callable[[Exception], None]:
    def use(error: Exception) -> None:
        def raise_it(*args: object, **kwargs: object) -> None:
            raise error

        monkeypatch.setattr(handler, "validate_batch", raise_it)
        monkeypatch.setattr(handler, "store_for", lambda config: None)
        monkeypatch.setattr(handler, "load_config", lambda: None)

    return use


def _client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}}, "TransactWriteItems")


@pytest.mark.parametrize(
    "error",
    [
        _client_error("ThrottlingException"),
        _client_error("TransactionConflictException"),
        ReadTimeoutError(endpoint_url="http://x"),
    ],
)
def test_transient_aws_errors_become_store_unavailable_which_is_retried(
    failing: Callable[[Exception], None], error: Exception
) -> None:
    failing(error)
    with pytest.raises(StoreUnavailable):
        handler.lambda_handler({"validation_id": "v", "run": 1, "parts": {}}, _Context())


def test_a_request_error_is_not_disguised(failing: Callable[[Exception], None]) -> None:
    failing(_client_error("ValidationException"))
    with pytest.raises(ClientError):
        handler.lambda_handler({"validation_id": "v", "run": 1, "parts": {}}, _Context())


def test_the_state_machine_retries_every_retryable_name() -> None:
    import json
    import re

    from local.aws.provision import ASL_FILE

    text = re.sub(r"\$\{\w+\}", "1", ASL_FILE.read_text())
    retry = json.loads(text)["States"]["ValidateParts"]["ItemProcessor"]["States"]["ValidatePart"]["Retry"]
    retried = {name for entry in retry for name in entry["ErrorEquals"]}
    assert {
        "StoreUnavailable",
        "CapacityUnavailable",
        "RateLimited",
        "UpstreamTimeout",
        "ModelUnavailable",
        "BatchIncomplete",
    } <= retried
    assert "ModelRejected" not in retried


def test_a_lost_condition_is_told_apart_from_other_aws_errors() -> None:
    def error(code: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": ""}}, "UpdateItem")

    assert is_condition_failure(error("ConditionalCheckFailedException"))
    assert is_condition_failure(error("TransactionCanceledException"))
    assert not is_condition_failure(error("ThrottlingException"))

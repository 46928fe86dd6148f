"""A validator whose wait for a call slot or tokens gives up (CapacityUnavailable) after it settled
parts answers `more` (the next round waits again, whole) instead of spending the Retry budget;
one that settled nothing raises it, for the Retry's backoff."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from app.settings import Settings
from lambdas.common import calls
from lambdas.common.errors import CapacityUnavailable
from lambdas.common.model import Asker, Askers
from lambdas.common.stores import store_for
from lambdas.validate_part import validator
from local.simulator.server import SimulatorServer
from tests.models.test_validator_model import _config, _held_validation
from tests.support.stack import Aws, MakeApi

_HANDLE_ALL = calls.handle_all


def _capacity_after(settled: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The invocation's parts after the first `settled` find no capacity within their wait."""

    def handle_all(items: Sequence[Any], handle: Callable[[Asker, Any], None], askers: Askers) -> bool:
        asked: list[Any] = []

        def handle_or_give_up(asker: Asker, item: Any) -> None:
            if len(asked) >= settled:
                raise CapacityUnavailable("no call slot within the wait left")
            asked.append(item)
            handle(asker, item)

        return _HANDLE_ALL(items, handle_or_give_up, askers)

    monkeypatch.setattr(calls, "handle_all", handle_all)  # the module the validator calls it from


@pytest.mark.slow(4)
def test_no_capacity_after_settled_parts_is_another_round_and_with_none_settled_the_retrys(
    make_api: MakeApi, aws: Aws, settings: Settings, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = make_api(part_max_tokens=100)
    vid, parts, total = _held_validation(api, aws, settings, "simulator")
    config = _config(aws, settings)
    assert total >= 3

    with monkeypatch.context() as patch:
        _capacity_after(0, patch)
        with pytest.raises(CapacityUnavailable):  # nothing settled: Step Functions retries with backoff
            validator.validate_batch(store_for(config), config, vid, 1, parts, lambda: 600_000)
        _capacity_after(1, patch)
        first = validator.validate_batch(store_for(config), config, vid, 1, parts, lambda: 600_000)
    second = validator.validate_batch(store_for(config), config, vid, 1, parts, lambda: 600_000)

    assert first == {"validated": 1, "skipped": 0, "failed": 0, "stopped": False, "more": True}
    assert second == {"validated": total - 1, "skipped": 1, "failed": 0, "stopped": False, "more": False}
    assert simulator.stats.part_calls == total  # each part asked once across the rounds

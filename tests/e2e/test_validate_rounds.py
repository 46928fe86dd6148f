"""A Map item longer than one invocation finishes: the validator settles what its time allows,
answers `more`, and the state machine invokes it again (ValidateMore), for as many rounds as the
item needs, past what the Retry of a BatchIncomplete would allow."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from lambdas.validate_part import validator
from local.simulator.server import SimulatorServer
from tests.support.stack import MakeApi, wait_for_status

NO_SECRET = {"id": "no-secret", "text": 'The file must not contain "secret".'}
FILES = 10  # one part each: at the defaults (a Map 5 wide of 2 calls) items of two parts


def test_items_of_two_parts_take_a_round_each_part_with_no_retry_left(
    make_api: MakeApi, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = make_api(sfn_retry_max_attempts=0)  # a BatchIncomplete would fail its item at once
    whole_run = validator.validate_batch
    rounds: list[dict[str, Any]] = []

    def one_part_a_round(
        store: Any, config: Any, validation_id: str, run: int, parts: dict[str, str], _: Callable[[], int]
    ) -> dict[str, Any]:
        """An invocation with time for one part: the first two looks at the clock (the part's own
        check and its call's wait) find plenty, every later one finds it out of time."""
        looks = itertools.chain([10**9, 10**9], itertools.repeat(0))
        answer = whole_run(store, config, validation_id, run, parts, lambda: next(looks))
        rounds.append(answer)
        return answer

    monkeypatch.setattr("lambdas.validate_part.handler.validate_batch", one_part_a_round)  # Lambdas run in-process
    created = api.post(
        "/validations",
        json={
            "documents": [{"name": f"f{i}.txt", "content": f"row {i}\nall fine\n"} for i in range(FILES)],
            "rules": [NO_SECRET],
            "reuse": False,
        },
    ).json()
    done = wait_for_status(api, created["id"], timeout=120)

    assert done["status"] == "SUCCEEDED", done
    assert done["progress"]["succeeded"] == FILES and simulator.stats.part_calls == FILES
    assert done["parallelism"]["calls_per_invocation"] == 2  # items of two parts
    # Each item: a round that validated one part and answered more, then one that finished it.
    assert sorted((r["validated"], r["more"]) for r in rounds) == [(1, False)] * (FILES // 2) + [(1, True)] * (
        FILES // 2
    )

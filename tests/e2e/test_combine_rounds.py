"""A file's combine tree larger than one invocation finishes: the combiner stores what it can,
answers `more`, and the state machine invokes it again (CombineMore) for as many rounds as the
tree needs, past what the Retry of a BatchIncomplete would allow."""

from __future__ import annotations

from typing import Any

import pytest

from lambdas.combine_file import combiner
from local.simulator.server import SimulatorServer
from tests.support.stack import MakeApi, all_results, lines_document, submit, wait_for_status

NO_SECRET = {"id": "no-secret", "text": 'The file must not contain "secret".'}


def test_a_tree_of_many_calls_takes_one_call_a_round_and_ends_with_the_same_verdict(
    make_api: MakeApi, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The retry allows 2 invocations of a failing item; the tree needs many more rounds than that.
    api = make_api(part_max_tokens=100, sfn_retry_max_attempts=1)
    document = {"many.txt": lines_document(240, marker_every=50)}
    whole = wait_for_status(api, submit(api, document, [NO_SECRET])["id"], timeout=240)
    calls_whole = simulator.stats.combine_calls

    tree: Any = combiner._combine_file
    whole_run = combiner.combine_files
    rounds: list[dict[str, Any]] = []

    def one_call_a_round(*args: Any) -> Any:
        """A file's tree as the combiner walks it, with time for one call: the first look at the clock
        finds plenty, every later one finds the invocation out of time (the asker keeps the real clock)."""
        looks = iter([10**9])
        *head, _remaining, checks, reuse = args
        return tree(*head, lambda: next(looks, 0), checks, reuse)

    def counted(*args: Any, **kwargs: Any) -> dict[str, Any]:
        answer: dict[str, Any] = whole_run(*args, **kwargs)
        rounds.append(answer)
        return answer

    # The embedded Lambdas run in this process.
    monkeypatch.setattr(combiner, "_combine_file", one_call_a_round)
    monkeypatch.setattr("lambdas.combine_file.handler.combine_files", counted)
    created = api.post(
        "/validations",
        json={
            "documents": [{"name": "many.txt", "content": document["many.txt"]}],
            "rules": [NO_SECRET],
            "reuse": False,
        },
    ).json()
    ended = wait_for_status(api, created["id"], timeout=240)

    tree_calls = simulator.stats.combine_calls - calls_whole
    assert whole["status"] == ended["status"] == "SUCCEEDED"
    assert tree_calls > 3 and len(rounds) == tree_calls  # one call a round, more rounds than the Retry allows
    assert [r["more"] for r in rounds] == [True] * (tree_calls - 1) + [False]
    verdicts = [{r["file"]: r["rules"] for r in all_results(api, v["id"])} for v in (whole, ended)]
    assert verdicts[0]["many.txt"][0]["passed"] is False
    assert [f["line"] for f in verdicts[0]["many.txt"][0]["findings"]] == [
        f["line"] for f in verdicts[1]["many.txt"][0]["findings"]
    ]

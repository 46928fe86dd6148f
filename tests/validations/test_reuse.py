"""Reuse: a part already judged with the same text, rules, model and prompt version is not
sent again, nor is a combine call over the same reports (counted by the simulator);
`reuse: false` opts out."""

from __future__ import annotations

from typing import Any

import pytest

from local.simulator.server import SimulatorServer
from tests.support.stack import MakeApi, all_results, lines_document, make_user, wait_for_status

DOC = {
    "documents": [
        {"name": "a.csv", "content": "id,note\n1,fine\n2,the secret\n"},
        {"name": "b.txt", "content": lines_document(400, marker_every=50)},  # several parts and a combine
    ],
    "rules": ['The file must not contain "secret".'],
}


def _run(api: Any, body: dict[str, Any], auth: dict[str, str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    answer = api.post("/validations", json=body, headers=auth)
    assert answer.status_code == 202, answer.text
    ended = wait_for_status(api, answer.json()["id"])
    assert ended["status"] == "SUCCEEDED", ended
    return ended, all_results(api, ended["id"])


def _requests(simulator: SimulatorServer) -> int:
    return simulator.simulator.stats.requests


@pytest.mark.slow(25)
def test_a_resubmitted_batch_reuses_every_part_verdict_and_costs_nothing(
    make_api: MakeApi, simulator: SimulatorServer
) -> None:
    api = make_api()
    _, auth = make_user(api)
    first, first_results = _run(api, DOC, auth)
    parts = first["progress"]["total"]
    assert parts >= 3 and first["usage"]["reused_parts"] == 0
    calls_before = _requests(simulator)

    again, again_results = _run(api, DOC, auth)
    assert again["usage"]["reused_parts"] == parts
    # Not one call: the parts' verdicts and the whole-file combine answers are reused.
    assert again["usage"]["model_calls"] == _requests(simulator) - calls_before == 0
    assert again["usage"]["charged_tokens"] == 0
    assert [(r["file"], r["rules"]) for r in again_results] == [(r["file"], r["rules"]) for r in first_results]

    fresh, _ = _run(api, {**DOC, "reuse": False}, auth)
    assert fresh["usage"]["reused_parts"] == 0 and fresh["usage"]["model_calls"] == first["usage"]["model_calls"]

    other_rules = {**DOC, "rules": ['The file must not contain "password".']}
    changed, _ = _run(api, other_rules, auth)
    assert changed["usage"]["reused_parts"] == 0  # other rules, other question


def test_reuse_in_a_multipart_form_is_true_or_false(make_api: MakeApi) -> None:
    api = make_api()
    answer = api.post(
        "/validations",
        files=[("files", ("a.txt", b"x\n", "text/plain"))],
        data={"rules": '["be tidy"]', "reuse": "maybe"},
    )
    assert answer.status_code == 422 and answer.json()["field"] == "reuse", answer.text

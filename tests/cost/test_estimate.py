"""`POST /validations?dry_run=true`: an estimate that stores nothing, the same errors as a submission."""

from __future__ import annotations

from typing import Any

import pytest

from app.settings import Settings
from core.quota import Quota
from tests.support.stack import Aws, MakeApi, lines_document, make_user, wait_for_status
from tests.validations.test_intake_errors import CASES, SMALL_LIMITS, stored

DOCS = [
    {"name": "big.txt", "content": lines_document(400, marker_every=37)},
    {"name": "small.csv", "content": "id,name\n1,secret\n2,plain\n"},
]
RULES = ['must not contain "secret"', 'must contain "row"']


def test_a_dry_run_stores_and_starts_nothing_and_its_part_prompts_are_exact(
    make_api: MakeApi, aws: Aws, settings: Settings
) -> None:
    api = make_api(part_max_tokens=400)
    body = {"documents": DOCS, "rules": RULES, "reuse": False}
    before = stored(aws, settings)

    answer = api.post("/validations", params={"dry_run": "true"}, json=body)

    assert answer.status_code == 200, answer.text
    estimate = answer.json()
    assert stored(aws, settings) == before  # no record, part, object, execution or key
    assert estimate["dry_run"] is True and estimate["files"] == 2 and estimate["parts"] > 2
    assert estimate["model_calls"]["parts"] == estimate["parts"] and estimate["model_calls"]["combine"] >= 1
    assert set(estimate["cost_usd"]) == {"standard", "flex", "batch"}  # the simulator's local price
    assert estimate["cost_usd"]["batch"]["p50"] == pytest.approx(estimate["cost_usd"]["standard"]["p50"] / 2, rel=1e-3)
    assert estimate["would"]["quota"] == "admit" and estimate["completion_tokens"]["ratio"]["source"] in (
        "prior",
        "history",
    )

    ended = wait_for_status(api, api.post("/validations", json=body).json()["id"])
    assert ended["status"] == "SUCCEEDED"
    # Part prompts: the same builder and tokenizer, differing only in the nonce's tokens.
    # Part prompts: the same builder and tokenizer; only the nonce differs (its mean size is counted).
    parts = aws.client("dynamodb").query(
        TableName=settings.table("parts"),
        KeyConditionExpression="validation_id = :v",
        ExpressionAttributeValues={":v": {"S": ended["id"]}},
    )["Items"]
    asked = [int(p["usage"]["M"]["prompt_tokens"]["N"]) for p in parts if "usage" in p and "first_line" in p]
    assert len(asked) == estimate["parts"]
    assert estimate["prompt_tokens"]["parts"] == pytest.approx(sum(asked), rel=0.01)
    # Combine prompts hold reports that did not exist: typical ones stand in.
    assert estimate["prompt_tokens"]["total"] == pytest.approx(ended["usage"]["prompt_tokens"], rel=0.10)


def test_a_dry_run_leaves_out_what_the_reuse_cache_answers(api: Any) -> None:
    body = {"documents": DOCS[1:], "rules": RULES}
    first = api.post("/validations", params={"dry_run": "true"}, json=body).json()
    wait_for_status(api, api.post("/validations", json=body).json()["id"])

    again = api.post("/validations", params={"dry_run": "true"}, json=body).json()

    assert (first["reused_parts"], first["model_calls"]["parts"]) == (0, 1)
    assert (again["reused_parts"], again["model_calls"]["parts"], again["prompt_tokens"]["parts"]) == (1, 0, 0)


def test_a_dry_run_says_what_the_quota_and_budget_would_do_instead_of_refusing(api: Any) -> None:
    quota = Quota(capacity_tokens=100_000, refill_tokens_per_minute=60_000, max_running=1)
    _, auth = make_user(api, quota={**quota.as_dict(), "max_spend_usd": 0.000001}, on_limit="reject")
    body = {"documents": DOCS[1:], "rules": RULES}

    estimate = api.post("/validations", params={"dry_run": "true"}, json=body, headers=auth).json()
    refused = api.post("/validations", json=body, headers=auth)

    assert estimate["would"]["budget"]["verdict"] == "refuse"
    assert estimate["would"]["budget"]["estimate_usd"] > estimate["would"]["budget"]["remaining_usd"] == 0.000001
    assert refused.status_code == 429 and refused.json()["limit"] == "budget"


def test_a_dry_run_answers_a_submissions_errors_and_stores_nothing(
    make_api: MakeApi, aws: Aws, settings: Settings
) -> None:
    """One case of each kind of refusal (the dry run reads the body as a submission does)."""
    api = make_api(**SMALL_LIMITS)
    chosen = {
        "malformed-json",
        "file-too-large",
        "too-many-files",
        "binary-by-content",
        "too-many-rules",
        "ruleset-bad-name",
    }
    before = stored(aws, settings)

    for name, request_kwargs, status, problem, member in (c for c in CASES if c[0] in chosen):
        answer = api.post("/validations", params={"dry_run": "true"}, **request_kwargs)

        assert answer.status_code == status, (name, answer.text)
        assert answer.headers["content-type"] == "application/problem+json" and answer.json()["type"].endswith(problem)
        if member:
            assert answer.json()[member[0]] == member[1], name
    assert stored(aws, settings) == before

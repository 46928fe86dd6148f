"""A validation names its model from the admin's list: stored on the validation (the validators
call it and grant from its budget), shown in its usage and estimate; a model not listed, or a
tier the model may not use, is a 422 naming the field."""

from __future__ import annotations

from typing import Any

from tests.support.stack import make_user, wait_for_status

TWO = [
    {"name": "simulator", "target_tpm": 200_000, "target_rpm": 2_000, "tiers": ["standard", "flex"], "default": True},
    {"name": "simulator-b", "target_tpm": 100_000, "target_rpm": 1_000, "tiers": ["standard"]},
]
BODY = {"documents": [{"name": "a.txt", "content": "a secret line\n"}], "rules": ['Must not contain "secret".']}


def test_a_validation_runs_on_the_model_it_names_and_says_so(api: Any) -> None:
    changed = api.patch("/admin/models", json={"models": TWO})
    assert changed.status_code == 200, changed.text
    _, user = make_user(api)

    estimate = api.post("/validations?dry_run=true", json={**BODY, "model": "simulator-b"}, headers=user)
    created = api.post("/validations", json={**BODY, "model": "simulator-b"}, headers=user)
    default = api.post("/validations", json=BODY, headers=user)

    assert estimate.status_code == 200 and estimate.json()["model"] == "simulator-b"
    assert created.status_code == 202, created.text
    assert created.json()["usage"]["model"] == "simulator-b"
    assert default.json()["usage"]["model"] == "simulator"
    ended = wait_for_status(api, created.json()["id"])
    assert ended["status"] == "SUCCEEDED", ended
    assert ended["usage"]["served_model"] == "simulator-b"  # the validators called the model it named


def test_a_model_not_listed_or_a_tier_it_may_not_use_is_refused_naming_the_field(api: Any) -> None:
    changed = api.patch("/admin/models", json={"models": TWO})
    assert changed.status_code == 200, changed.text
    _, user = make_user(api)

    unknown = api.post("/validations", json={**BODY, "model": "gpt-nope"}, headers=user)
    flex = api.post("/validations", json={**BODY, "model": "simulator-b", "tier": "flex"}, headers=user)

    assert unknown.status_code == 422 and unknown.json()["field"] == "model"
    assert "simulator-b" in unknown.json()["detail"]  # names what is offered
    assert flex.status_code == 422 and flex.json()["field"] == "tier"
    assert api.get("/validations", headers=user).json()["items"] == []

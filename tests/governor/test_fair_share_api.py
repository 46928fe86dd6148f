"""What fair share adds to the API: a user's `weight` (quota) and a submission's `priority`."""

from __future__ import annotations

import json
from typing import Any

from app.settings import Settings
from tests.support.stack import Aws, make_user, wait_for_status

QUOTA = {"capacity_tokens": 100_000, "refill_tokens_per_minute": 100_000, "max_running": 2}
DOCUMENT = {"name": "a.txt", "content": "row 1\n"}


def test_weight_is_a_quota_field_defaulting_to_one_and_range_checked(api: Any) -> None:
    plain, _ = make_user(api, quota=QUOTA)
    heavy, _ = make_user(api, quota={**QUOTA, "weight": 2.5})
    refused = [
        api.post("/admin/users", json={"user_id": "zero", "quota": {**QUOTA, "weight": 0}}),
        api.post("/admin/users", json={"user_id": "huge", "quota": {**QUOTA, "weight": 1_001}}),
        api.patch(f"/admin/users/{plain}", json={"quota": {**QUOTA, "weight": -1}}),
        # Positive but below MIN_WEIGHT: once a 500 (a DynamoDB number cannot hold 1e-170).
        api.patch(f"/admin/users/{plain}", json={"quota": {**QUOTA, "weight": 6.9e-170}}),
        api.patch(f"/admin/users/{plain}", json={"quota": {**QUOTA, "weight": "heavy"}}),
    ]
    changed = api.patch(f"/admin/users/{plain}", json={"quota": {**QUOTA, "weight": 4}})

    assert api.get(f"/admin/users/{heavy}").json()["quota"]["weight"] == 2.5
    for answer in refused:
        assert answer.status_code == 422
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["errors"][0]["field"].endswith("quota.weight"), answer.json()
    assert api.get("/admin/users/zero").status_code == 404  # a refused request stores nothing
    assert changed.status_code == 200 and changed.json()["quota"]["weight"] == 4
    entry = api.get("/admin/audit").json()["items"][0]
    assert (entry["old"]["quota"]["weight"], entry["new"]["quota"]["weight"]) == (1, 4)


def test_priority_comes_from_the_json_body_or_the_form_and_an_unknown_one_is_refused(api: Any) -> None:
    urgent = api.post("/validations", json={"documents": [DOCUMENT], "rules": ["No secrets."], "priority": "high"})
    default = api.post("/validations", json={"documents": [DOCUMENT], "rules": ["No secrets."]})
    form = api.post(
        "/validations",
        files=[("files", ("a.txt", b"row 1\n", "text/plain"))],
        data={"rules": json.dumps(["No secrets."]), "priority": "low"},
    )
    unknown_json = api.post("/validations", json={"documents": [DOCUMENT], "rules": ["r"], "priority": "urgent"})
    unknown_form = api.post(
        "/validations",
        files=[("files", ("a.txt", b"row 1\n", "text/plain"))],
        data={"rules": json.dumps(["r"]), "priority": "urgent"},
    )

    assert [a.status_code for a in (urgent, default, form)] == [202, 202, 202]
    assert [a.json()["priority"] for a in (urgent, default, form)] == ["high", "normal", "low"]
    assert api.get(f"/validations/{form.json()['id']}").json()["priority"] == "low"
    for answer in (unknown_json, unknown_form):
        assert answer.status_code == 422
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["field"] == "priority", answer.json()
    for answer in (urgent, default, form):  # leave nothing running behind the test
        assert wait_for_status(api, answer.json()["id"])["status"] == "SUCCEEDED"


def test_an_admin_turns_fair_share_off_and_on_through_ssm(api: Any, aws: Aws, settings: Settings) -> None:
    def stored() -> str:
        name = f"{settings.ssm_prefix}/fair-share"
        return str(aws.client("ssm").get_parameter(Name=name)["Parameter"]["Value"])

    assert api.get("/admin/parallelism").json()["fair_share"] is True and stored() == "on"
    off = api.patch("/admin/parallelism", json={"fair_share": False})
    assert off.status_code == 200 and off.json()["fair_share"] is False and stored() == "off"
    entry = api.get("/admin/audit").json()["items"][0]
    assert (entry["action"], entry["old"], entry["new"]) == (
        "parallelism.update",
        {"fair_share": True},
        {"fair_share": False},
    )
    assert api.patch("/admin/parallelism", json={"fair_share": "sometimes"}).status_code == 422
    assert api.patch("/admin/parallelism", json={"fair_share": True}).json()["fair_share"] is True and stored() == "on"

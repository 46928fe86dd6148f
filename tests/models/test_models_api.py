"""`GET` and `PATCH /admin/models` through the real stack: the list in effect, a new one stored in
SSM and copied to the validators' mirror, refusals naming the field, admins only, audited."""

from __future__ import annotations

import json
from typing import Any

from app.settings import Settings
from core import governor as g
from core.dynamo import from_item
from tests.support.stack import Aws, make_user

TWO = [
    {"name": "simulator", "target_tpm": 200_000, "target_rpm": 2_000, "tiers": ["standard"]},
    {"name": "o4-mini", "target_tpm": 300_000, "target_rpm": 3_000, "tiers": ["standard", "flex"], "default": True},
]


def _ssm(aws: Aws, settings: Settings, name: str) -> str:
    return str(aws.client("ssm").get_parameter(Name=f"{settings.ssm_prefix}/{name}")["Parameter"]["Value"])


def test_without_a_list_the_deployments_model_is_offered_at_the_deployment_wide_targets(
    api: Any, aws: Aws, settings: Settings
) -> None:
    answer = api.get("/admin/models")

    assert answer.status_code == 200
    (entry,) = answer.json()["models"]
    assert entry["name"] == "simulator" and entry["default"] and entry["family"] == "chat"
    assert entry["tiers"] == ["standard", "flex", "batch"]
    assert entry["target_tpm"] == int(_ssm(aws, settings, "target-tpm"))
    assert entry["target_rpm"] == int(_ssm(aws, settings, "target-rpm"))
    assert entry["budget"]["tokens_per_window"] == int(entry["target_tpm"] * 0.9)


def test_a_new_list_is_stored_copied_for_the_validators_and_audited(api: Any, aws: Aws, settings: Settings) -> None:
    changed = api.patch("/admin/models", json={"models": TWO})

    assert changed.status_code == 200, changed.text
    view = changed.json()
    assert [(m["name"], m["default"], m["family"]) for m in view["models"]] == [
        ("simulator", False, "chat"),
        ("o4-mini", True, "reasoning"),
    ]
    assert view["in_sync"] is True
    assert [m["budget"]["tokens_per_window"] for m in view["models"]] == [180_000, 270_000]
    # The default's targets are the deployment-wide ones: /admin/parallelism shows them as its own.
    parallelism = api.get("/admin/parallelism").json()
    assert (parallelism["model"], parallelism["target_tpm"], parallelism["target_rpm"]) == ("o4-mini", 300_000, 3_000)
    assert json.loads(_ssm(aws, settings, "models"))[1] == {
        "name": "o4-mini",
        "tiers": ["standard", "flex"],
        "default": True,
    }
    mirrored = aws.client("dynamodb").query(**g.mirror_query(settings.table("governor")))["Items"]
    _, models = g.mirrored_items(mirrored)
    assert models is not None and from_item(models)["live_models"] == _ssm(aws, settings, "models")
    (entry,) = [e for e in api.get("/admin/audit").json()["items"] if e["action"] == "models.update"]
    assert entry["target"] == "models"
    assert [m["name"] for m in entry["old"]] == ["simulator"] and [m["name"] for m in entry["new"]] == [
        "simulator",
        "o4-mini",
    ]
    assert entry["new"][1]["target_tpm"] == 300_000

    again = api.patch("/admin/models", json={"models": TWO})  # the same list: nothing changes, nothing audited
    assert again.status_code == 200
    assert len([e for e in api.get("/admin/audit").json()["items"] if e["action"] == "models.update"]) == 1


def _with(index: int, **fields: Any) -> list[dict[str, Any]]:
    models = [dict(m) for m in TWO]
    models[index].update(fields)
    return models


REFUSED = [  # (list, the field the 422 names)
    (_with(0, name="o4-mini"), "models[1].name"),  # listed twice
    ([*TWO, {**TWO[0], "name": "gpt-3.5-turbo"}], "models[2].name"),  # no structured outputs
    (_with(0, default=True), "models[1].default"),
    (_with(1, default=False), "models"),
    (_with(1, tiers=["flex", "flex"]), "models[1].tiers"),
]
MISSHAPEN = [  # (list, the field pydantic's error names)
    (_with(0, target_tpm=10), "models.0.target_tpm"),
    (_with(1, target_rpm="many"), "models.1.target_rpm"),
    (_with(0, tiers=["turbo"]), "models.0.tiers.0"),
    (_with(0, tiers=[]), "models.0.tiers"),
    (_with(0, colour="red"), "models.0.colour"),
    ([], "models"),
]


def test_a_list_it_cannot_serve_or_of_the_wrong_shape_is_refused_naming_the_field(
    api: Any, aws: Aws, settings: Settings
) -> None:
    for models, field in REFUSED:
        answer = api.patch("/admin/models", json={"models": models})
        assert answer.status_code == 422 and answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["field"] == field, answer.json()
    for models, field in MISSHAPEN:
        answer = api.patch("/admin/models", json={"models": models})
        assert answer.status_code == 422 and answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["errors"][0]["field"] == f"body.{field}", answer.json()

    assert _ssm(aws, settings, "models") == "[]"  # nothing stored
    assert not [e for e in api.get("/admin/audit").json()["items"] if e["action"] == "models.update"]


def test_only_admins_see_or_change_the_list(api: Any) -> None:
    _, auth = make_user(api)

    assert api.get("/admin/models", headers=auth).status_code == 403
    assert api.patch("/admin/models", json={"models": TWO}, headers=auth).status_code == 403
    assert len(api.get("/admin/models").json()["models"]) == 1


def test_any_user_sees_the_models_offered_and_the_tiers_their_quota_allows(api: Any) -> None:
    quota = {"capacity_tokens": 100_000, "refill_tokens_per_minute": 10_000, "max_running": 2}
    _, flex_user = make_user(api, quota={**quota, "tiers": ["standard", "flex"], "default_tier": "flex"})
    assert api.patch("/admin/models", json={"models": TWO}).status_code == 200

    mine = api.get("/models", headers=flex_user)
    admins = api.get("/models")  # the bootstrap admin: no quota, every tier
    anonymous = api.get("/models", headers={"Authorization": "Bearer nope"})

    assert mine.status_code == 200 and mine.json() == {
        "models": [
            {"name": "simulator", "tiers": ["standard"], "default": False},
            {"name": "o4-mini", "tiers": ["standard", "flex"], "default": True},
        ],
        "your_tiers": ["standard", "flex"],
        "default_tier": "flex",
    }
    assert admins.json()["your_tiers"] == ["standard", "flex", "batch"] and admins.json()["default_tier"] == "standard"
    assert anonymous.status_code == 401 and anonymous.headers["content-type"] == "application/problem+json"

"""Who may do what: the authorization matrix."""

from __future__ import annotations

import json
from typing import Any

from app.settings import Settings
from tests.support.stack import Aws, make_user, submit, wait_for_status

DOC = {"documents": [{"name": "a.txt", "content": "row 1\n"}], "rules": ["be tidy"]}


def test_authorization_matrix(api: Any, aws: Aws, settings: Settings) -> None:
    alice, alice_auth = make_user(api)
    bob, bob_auth = make_user(api)
    mine = api.post("/validations", json=DOC, headers=alice_auth)
    assert mine.status_code == 202, mine.text
    vid = mine.json()["id"]

    # No key, unknown key: 401 with a Bearer challenge.
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer vk_nope"}):
        answer = api.get("/validations", headers=headers)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert answer.headers["content-type"] == "application/problem+json"

    # A user on admin routes: 403.
    for method, path in (
        ("POST", "/admin/users"),
        ("GET", f"/admin/users/{alice}"),
        ("GET", "/admin/parallelism"),
        ("GET", "/admin/audit"),
        ("GET", f"/validations/{vid}/history"),
    ):
        assert (
            api.request(method, path, headers=alice_auth, json={} if method == "POST" else None).status_code == 403
        ), path

    # Another user's validation: 404, as if it did not exist.
    for method, path in (
        ("GET", f"/validations/{vid}"),
        ("GET", f"/validations/{vid}/results"),
        ("DELETE", f"/validations/{vid}"),
        ("POST", f"/validations/{vid}/retry"),
    ):
        answer = api.request(method, path, headers=bob_auth)
        assert answer.status_code == 404, (path, answer.text)
    assert api.get("/validations", headers=bob_auth).json()["items"] == []
    assert [v["id"] for v in api.get("/validations", headers=alice_auth).json()["items"]] == [vid]

    # Admins see every validation.
    assert api.get(f"/validations/{vid}").status_code == 200

    # Rotated key: the old one stops, the new one works.
    rotated = api.post(f"/admin/users/{alice}/keys")
    assert rotated.status_code == 201
    new_auth = {"Authorization": f"Bearer {rotated.json()['api_key']}"}
    assert api.get("/validations", headers=alice_auth).status_code == 401
    assert api.get(f"/validations/{vid}", headers=new_auth).status_code == 200

    # Disabled user: 401.
    assert api.patch(f"/admin/users/{alice}", json={"disabled": True}).status_code == 200
    assert api.get("/validations", headers=new_auth).status_code == 401

    # Keys are stored only as hashes.
    stored = aws.client("dynamodb").scan(TableName=settings.table("users"))["Items"]
    assert all(rotated.json()["api_key"] not in str(item) for item in stored)


def test_user_admin_role_and_audit_trail(api: Any) -> None:
    carol, carol_auth = make_user(
        api,
        role="admin",
        quota={"capacity_tokens": 50_000, "refill_tokens_per_minute": 10_000, "max_running": 2},
        on_limit="reject",
    )
    assert api.get(f"/admin/users/{carol}", headers=carol_auth).json()["quota"]["max_running"] == 2
    assert api.post("/admin/users", json={"user_id": carol}).status_code == 409
    assert (
        api.patch(f"/admin/users/{carol}", json={"on_limit": "queue"}, headers=carol_auth).json()["on_limit"] == "queue"
    )

    audit = api.get("/admin/audit").json()["items"]

    actions = [(e["action"], e["target"], e["actor"]) for e in audit]
    assert ("user.update", carol, carol) in actions
    assert ("user.create", carol, "admin") in actions
    update = next(e for e in audit if e["action"] == "user.update")
    assert update["old"]["on_limit"] == "reject"
    assert update["new"]["on_limit"] == "queue"


def test_parallelism_is_read_and_changed_in_ssm_range_checked_and_audited(
    api: Any, aws: Aws, settings: Settings
) -> None:
    def parameter(name: str) -> str:
        return str(aws.client("ssm").get_parameter(Name=f"{settings.ssm_prefix}/{name}")["Parameter"]["Value"])

    stored = {
        "max_parallelism": int(parameter("max-parallelism")),
        "target_tpm": int(parameter("target-tpm")),
        "throttle_threshold": float(parameter("throttle-threshold")),
    }
    shown = api.get("/admin/parallelism").json()
    assert {k: shown[k] for k in stored} == stored
    assert shown["effective"]["tokens_per_window"] == int(stored["target_tpm"] * stored["throttle_threshold"])

    changed = api.patch("/admin/parallelism", json={"max_parallelism": 8, "throttle_threshold": 0.75})
    too_many = api.patch("/admin/parallelism", json={"max_parallelism": 501})  # up to 500 (core/headroom.py)

    assert {k: changed.json()[k] for k in stored} == {**stored, "max_parallelism": 8, "throttle_threshold": 0.75}
    assert changed.json()["effective"]["tokens_per_window"] == int(stored["target_tpm"] * 0.75)
    assert aws.client("ssm").get_parameter(Name=f"{settings.ssm_prefix}/max-parallelism")["Parameter"]["Value"] == "8"
    assert too_many.status_code == 422
    assert too_many.headers["content-type"].startswith("application/problem+json")
    assert "max_parallelism" in too_many.json()["detail"] and "500" in too_many.json()["detail"]
    entry = api.get("/admin/audit").json()["items"][0]
    assert entry["action"] == "parallelism.update"
    assert entry["old"] == {
        "max_parallelism": stored["max_parallelism"],
        "throttle_threshold": stored["throttle_threshold"],
    }
    assert entry["new"] == {"max_parallelism": 8, "throttle_threshold": 0.75}
    # The controller of a validation started after the PATCH planned with the new value.
    vid = submit(api, {f"f{i}.txt": "row\n" for i in range(12)}, ["t"])["id"]
    wait_for_status(api, vid)
    history = api.get(f"/validations/{vid}/history", params={"limit": 100}).json()["events"]
    planned = next(
        e for e in history if e["type"] == "TaskStateExited" and e["stateExitedEventDetails"]["name"] == "Plan"
    )
    plan = json.loads(planned["stateExitedEventDetails"]["output"])["plan"]
    # The Map no wider than the 8 planned (core/headroom.py): 4 invocations of up to 3 calls reach
    # the 12 parts; at the cap of 8 each runs 2.
    assert {k: plan[k] for k in ("map_concurrency", "parallelism", "calls_per_invocation")} == {
        "map_concurrency": 4,
        "parallelism": 8,
        "calls_per_invocation": 3,
    }
    assert api.get(f"/validations/{vid}").json()["parallelism"] == {
        "effective": 8,
        "planned": 8,
        "map_concurrency": 4,
        "reason": "max_parallelism",
        "calls_per_invocation": 3,
    }

"""The flex lane through the real stack: asked with its tier, priced at the tier that served each
call, and without capacity retried until its deadline, then standard or a failed part."""

from __future__ import annotations

from typing import Any

from core import pricing
from local.simulator.server import SimulatorServer
from tests.support.stack import MakeApi, all_results, wait_for_status

RULES = ['must not contain "secret"']


def flex_body(name: str, **lane: Any) -> dict[str, Any]:
    return {
        "documents": [{"name": name, "content": f"alpha {name}\nbeta\n"}],
        "rules": RULES,
        "tier": "flex",
        **lane,
    }


def cost_at(tier: str, usage: dict[str, Any]) -> float:
    price = pricing.DEFAULT_PRICES["simulator"][tier]  # type: ignore[index]
    cost = price.cost(usage["prompt_tokens"], usage["cached_prompt_tokens"], usage["completion_tokens"])
    return float(cost.quantize(pricing.QUANTUM))


def test_a_flex_validation_is_asked_at_flex_and_costs_half(make_api: MakeApi, simulator: SimulatorServer) -> None:
    api = make_api()

    created = api.post("/validations", json=flex_body("a.txt"))
    ended = wait_for_status(api, created.json()["id"])

    assert ended["status"] == "SUCCEEDED" and ended["tier"] == "flex"
    assert simulator.simulator.stats.served_tiers == {"flex": ended["usage"]["model_calls"]}
    assert ended["usage"]["cost_usd"] == cost_at("flex", ended["usage"])
    assert cost_at("flex", ended["usage"]) < cost_at("standard", ended["usage"])


def test_flex_without_capacity_is_retried_and_answered_at_flex_within_its_deadline(
    make_api: MakeApi, simulator: SimulatorServer
) -> None:
    api = make_api(flex_retry_base_seconds=0.05, flex_retry_max_seconds=0.1)
    simulator.reconfigure(flex_unavailable_rate=0.7, seed=5)  # the seed's draws: unavailable, then capacity

    created = api.post("/validations", json=flex_body("b.txt", flex_deadline_seconds=60))
    ended = wait_for_status(api, created.json()["id"])

    stats = simulator.simulator.stats
    assert ended["status"] == "SUCCEEDED"
    assert stats.flex_unavailable >= 1 and stats.rate_limited == 0  # a lack of capacity, not a rate limit
    assert stats.served_tiers == {"flex": ended["usage"]["model_calls"]}
    assert ended["usage"]["attempts"] == ended["usage"]["model_calls"] + stats.flex_unavailable
    assert ended["usage"]["cost_usd"] == cost_at("flex", ended["usage"])


def test_flex_without_capacity_past_its_deadline_is_asked_at_standard_and_priced_there(
    make_api: MakeApi, simulator: SimulatorServer
) -> None:
    api = make_api()
    simulator.reconfigure(flex_unavailable_rate=1.0)

    created = api.post("/validations", json=flex_body("c.txt", flex_deadline_seconds=0))
    ended = wait_for_status(api, created.json()["id"])

    stats = simulator.simulator.stats
    assert ended["status"] == "SUCCEEDED"
    assert stats.flex_unavailable == ended["usage"]["model_calls"]  # each call: one flex try, then standard
    assert stats.served_tiers == {"default": ended["usage"]["model_calls"]}
    assert ended["usage"]["cost_usd"] == cost_at("standard", ended["usage"])  # priced at the tier that served


def test_flex_without_capacity_fails_the_part_when_the_validation_says_not_to_fall_back(
    make_api: MakeApi, simulator: SimulatorServer
) -> None:
    api = make_api()
    simulator.reconfigure(flex_unavailable_rate=1.0)

    created = api.post("/validations", json=flex_body("d.txt", flex_deadline_seconds=0, flex_fallback="fail"))
    ended = wait_for_status(api, created.json()["id"])

    (result,) = all_results(api, ended["id"])
    assert ended["status"] == "FAILED" and result["status"] == "FAILED"
    assert result["error"]["type"] == "FlexUnavailable", result["error"]
    assert "flex_deadline_seconds" in str(result["error"])
    assert simulator.simulator.stats.served_tiers == {}


def test_a_tier_the_quota_does_not_allow_is_refused_naming_tier(make_api: MakeApi) -> None:
    api = make_api()
    user = api.post(
        "/admin/users",
        json={
            "user_id": "standard-only",
            "quota": {
                "capacity_tokens": 100_000,
                "refill_tokens_per_minute": 60_000,
                "max_running": 2,
                "tiers": ["standard"],
            },
        },
    ).json()
    headers = {"Authorization": f"Bearer {user['api_key']}"}

    refused = api.post("/validations", json=flex_body("e.txt"), headers=headers)
    batch = api.post("/validations", json={**flex_body("f.txt"), "tier": "batch"}, headers=headers)

    assert refused.status_code == 422 and refused.json()["field"] == "tier"
    assert batch.status_code == 422 and batch.json()["field"] == "tier"
    assert api.get("/admin/users/standard-only").json()["quota"]["tiers"] == ["standard"]

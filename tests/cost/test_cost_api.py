"""Cost through the real stack: priced usage, spend per period, budgets, the price table."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

from app.settings import Settings
from core import pricing, spend
from core.quota import Quota
from tests.support.stack import Aws, make_user, submit, wait_for_status

QUOTA = Quota(capacity_tokens=200_000, refill_tokens_per_minute=600_000, max_running=4)
DOCS = {"a.txt": "row 1 secret\nrow 2\n", "b.txt": "alpha\nbeta\ngamma\n"}
RULES = ['must not contain "secret"']


def test_a_validation_is_priced_at_its_models_price_and_charged_to_its_owners_day_and_month(api: Any) -> None:
    user, auth = make_user(api, quota={**QUOTA.as_dict(), "max_spend_usd": 5, "spend_period": "day"})

    created = submit(api, DOCS, RULES, headers=auth)
    ended = wait_for_status(api, created["id"])

    usage = ended["usage"]
    assert ended["status"] == "SUCCEEDED" and usage["model"] == "simulator"
    price = pricing.DEFAULT_PRICES["simulator"]["standard"]
    expected = price.cost(usage["prompt_tokens"], usage["cached_prompt_tokens"], usage["completion_tokens"])
    assert usage["cost_usd"] == float(expected.quantize(pricing.QUANTUM)) > 0

    mine = api.get("/me/usage", params={"period": "day"}, headers=auth).json()
    (today,) = mine["items"]
    assert today["period"] == mine["current"] and today["runs"] == 1
    assert today["spent_usd"] == usage["cost_usd"]
    assert (today["prompt_tokens"], today["completion_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert today["reserved_usd"] == 0  # the reservation went back when the run settled
    assert mine["budget"]["remaining_usd"] == float((Decimal(5) - expected).quantize(pricing.QUANTUM))
    (month,) = api.get("/me/usage", headers=auth).json()["items"]
    assert month["spent_usd"] == usage["cost_usd"] and month["period"].startswith("month#")

    everyone = api.get("/admin/usage", params={"period": "day"}).json()
    assert [(i["user_id"], i["spent_usd"]) for i in everyone["items"]] == [(user, usage["cost_usd"])]


def test_a_submission_past_the_budget_is_refused_naming_budget_and_when_it_resets(api: Any) -> None:
    _, auth = make_user(api, quota={**QUOTA.as_dict(), "max_spend_usd": 0.000001})

    answer = api.post(
        "/validations",
        json={"documents": [{"name": n, "content": c} for n, c in DOCS.items()], "rules": RULES},
        headers=auth,
    )

    assert answer.status_code == 429 and answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["limit"] == "budget" and problem["resets_at"].endswith("-01T00:00:00.000Z")
    assert int(answer.headers["Retry-After"]) > 0
    assert api.get("/validations", headers=auth).json()["items"] == []


def test_an_admin_overrides_prices_live_audited_and_new_validations_take_them(api: Any) -> None:
    table = api.get("/admin/prices").json()
    assert table["model"] == "simulator" and table["model_priced"] and table["overrides"] == {}
    assert table["unpriced"] == []  # every offered model priced at each tier it may use

    doubled = {"standard": {"input": 0.3, "cached_input": 0.15, "output": 1.2}}
    changed = api.patch("/admin/prices", json={"prices": {"simulator": doubled}})
    bad = api.patch("/admin/prices", json={"prices": {"x": {"turbo": {"input": 1, "cached_input": 1, "output": 1}}}})

    assert changed.status_code == 200 and changed.json()["prices"]["simulator"] == doubled
    assert changed.json()["unpriced"] == ["simulator/flex", "simulator/batch"]  # its tiers replaced by one
    assert bad.status_code == 422 and bad.json()["field"] == "prices.x"
    (entry,) = [e for e in api.get("/admin/audit").json()["items"] if e["action"] == "prices.update"]
    assert entry["new"] == {"simulator": doubled} and entry["old"] == {"simulator": None}

    ended = wait_for_status(api, submit(api, DOCS, RULES)["id"])
    usage = ended["usage"]
    expected = pricing.Price.of(doubled["standard"]).cost(
        usage["prompt_tokens"], usage["cached_prompt_tokens"], usage["completion_tokens"]
    )
    assert usage["cost_usd"] == float(expected.quantize(pricing.QUANTUM))

    unpriced = api.patch("/admin/prices", json={"prices": {"simulator": {}}}).json()
    assert not unpriced["model_priced"] and "simulator" not in unpriced["prices"]
    assert unpriced["unpriced"] == ["simulator/standard", "simulator/flex", "simulator/batch"]
    ended = wait_for_status(api, submit(api, {"c.txt": "other\ntext\n"}, RULES)["id"])  # not reused: asked
    assert ended["usage"]["cost_usd"] is None and ended["usage"]["prompt_tokens"] > 0


def test_thirty_two_concurrent_reservations_never_pass_the_budget(api: Any, aws: Aws, settings: Settings) -> None:
    """Each submission reserves its estimate with one conditional write (core/spend.py): however
    they interleave, what is committed stays within the budget; only a run's overrun of its own
    estimate can take the spend past it, at settlement."""
    budget, amount = spend.Budget(Decimal("1.05"), "month"), Decimal("0.1")
    key = spend.period_key("month", time.time())

    def reserve(_: int) -> bool:
        client = aws.new_client("dynamodb")  # one per thread
        request = spend.reserve_update(settings.table("spend"), "racer", key, amount, budget, int(time.time()) + 60)
        try:
            client.update_item(**request)
        except client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    with ThreadPoolExecutor(32) as pool:
        granted = sum(pool.map(reserve, range(32)))

    item = aws.client("dynamodb").get_item(
        TableName=settings.table("spend"), Key={"user_id": {"S": "racer"}, "period": {"S": key}}
    )["Item"]
    assert granted == 10  # 10 × 0.1 ≤ 1.05 < 11 × 0.1
    assert (
        Decimal(item["committed_usd"]["N"]) == Decimal(item["reserved_usd"]["N"]) == granted * amount <= budget.max_usd
    )

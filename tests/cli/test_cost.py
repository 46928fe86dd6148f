"""Cost through the CLI against a live service: a user created with a day budget (the token quota left to
the service's defaults), `estimate` (its table against its own JSON), a validation's cost in `status` and
under the results, `usage` with the budget line, `users update` keeping what it is not told, and the exit
codes of an estimate (0 whatever quota and budget would do; 3 for usage errors and refusals)."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.settings import Settings
from tests.cli.conftest import Invoke, json_answer
from tests.support.stack import ADMIN, ADMIN_KEY

pytestmark = pytest.mark.stack


def row(text: str, name: str) -> str:
    """The value of a `name  value` row of a grid the CLI printed."""
    found = re.search(rf"^{re.escape(name)}\s{{2,}}(.+?)\s*$", text, re.MULTILINE)
    assert found, text
    return found[1]


answer = json_answer


def dollars(text: str) -> float:
    found = re.fullmatch(r"\$(\d+\.\d{2,6})", text)
    assert found, text
    return float(found[1])


@pytest.mark.slow(8)
def test_budget_set_by_the_admin_commands_estimate_then_cost_in_status_and_usage(
    served: str, settings: Settings, invoke: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "160")  # rows unwrapped
    admin = ("--url", served, "--api-key", ADMIN_KEY)
    user = f"cost-{uuid.uuid4().hex[:6]}"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("row 1\nthe secret\n")
    (tmp_path / "data" / "b.txt").write_text("row 2\n")
    (tmp_path / "rules.yaml").write_text('no-secret: The file must not contain "secret".\n')
    files = (str(tmp_path / "data"), "--rules", str(tmp_path / "rules.yaml"))

    # A budget alone: the token quota is the service's default, the budget on top, before the key is out.
    code, out, err = invoke(*admin, "users", "create", user, "--max-spend-usd", "5", "--spend-period", "day", "--json")
    assert code == 0, err
    created = answer(out)
    defaults = (
        settings.default_capacity_tokens,
        settings.default_refill_tokens_per_minute,
        settings.default_max_running,
    )
    quota = created["quota"]
    assert (quota["capacity_tokens"], quota["refill_tokens_per_minute"], quota["max_running"]) == defaults
    assert (quota["max_spend_usd"], quota["spend_period"]) == (5.0, "day")
    mine = ("--url", served, "--api-key", created["api_key"])

    # The estimate: its JSON is the API's answer; its table says the same.
    code, out, err = invoke(*mine, "estimate", *files, "--json")
    assert code == 0, err
    estimate: dict[str, Any] = answer(out)
    assert estimate["dry_run"] is True and (estimate["files"], estimate["parts"]) == (2, 2)
    code, table, err = invoke(*mine, "estimate", *files)
    assert code == 0, err
    calls, prompt, completion = estimate["model_calls"], estimate["prompt_tokens"], estimate["completion_tokens"]
    assert row(table, "calls") == f"{calls['total']}: 2 for parts, 0 to combine"
    assert row(table, "prompt tokens").startswith(f"{prompt['total']:,}: {prompt['parts']:,} for parts (exact)")
    assert row(table, "completion tokens").startswith(f"p50 {completion['p50']:,}, p90 {completion['p90']:,} ")
    standard = estimate["cost_usd"]["standard"]
    tier, low, _, high = row(table, "cost p50–p90").split()
    assert (tier, dollars(low), dollars(high)) == ("standard", standard["p50"], standard["p90"])
    assert row(table, "quota") == "admit"
    budget = estimate["would"]["budget"]
    assert row(table, "budget").startswith("admit: reserves $") and budget["remaining_usd"] == 5.0
    assert row(table, "time").startswith("starts now")

    # Run it: the cost is under the results, in `status`, and charged to today's spend.
    code, out, err = invoke(*mine, "submit", *files, "--wait")
    assert code == 1, err  # a.txt holds the secret
    vid = re.findall(r"^Validation (\w+) ", out, re.MULTILINE)[0]
    usage = httpx.get(f"{served}/validations/{vid}", headers=ADMIN).json()["usage"]
    assert usage["cost_usd"] > 0
    summary = re.search(r"^Tokens: (\d+) used, (\d+) prompt tokens cached; cost (\S+)\.$", out, re.MULTILINE)
    assert summary, out
    assert (int(summary[1]), int(summary[2]), dollars(summary[3])) == (
        usage["prompt_tokens"] + usage["completion_tokens"],
        usage["cached_prompt_tokens"],
        usage["cost_usd"],
    )
    code, out, _ = invoke(*mine, "status", vid)
    assert code == 1 and row(out, "cost") == f"{summary[3]} (simulator)"
    assert row(out, "tokens").endswith(f", {usage['cached_prompt_tokens']} prompt tokens cached")

    code, out, err = invoke(*mine, "usage", "--period", "day")
    assert code == 0, err
    (today,) = [line.split() for line in out.splitlines() if re.match(r"\s*\d{4}-\d{2}-\d{2} ", line)]
    _, spent, reserved, runs, *_ = today
    assert (dollars(spent), dollars(reserved), runs) == (usage["cost_usd"], 0.0, "1")
    left = re.search(r"^Budget \$5\.00 per day: (\S+) left, resets \S+; 80% alert not sent this period\.$", out, re.M)
    assert left and dollars(left[1]) == pytest.approx(5 - usage["cost_usd"])

    # Update: the budget shrinks past this estimate, the rest of the quota stays; the estimate still exits 0.
    code, out, err = invoke(*admin, "users", "update", user, "--max-spend-usd", "0.000001", "--json")
    assert code == 0, err
    assert answer(out)["quota"] == {**quota, "max_spend_usd": 0.000001}
    code, table, _ = invoke(*mine, "estimate", *files)
    assert code == 0 and row(table, "budget").startswith("refuse (429): needs $")
    code, out, _ = invoke(*admin, "users", "update", user, "--max-spend-usd", "none")
    assert code == 0 and re.search(rf"^{user}: .*, no budget$", out, re.MULTILINE)
    assert row(invoke(*mine, "estimate", *files)[1], "budget") == "no budget"

    # Usage errors and refusals: exit 3, before or from the service.
    assert invoke(*mine, "estimate", str(tmp_path / "missing.txt"), "--rules", str(tmp_path / "rules.yaml"))[0] == 3
    code, _, err = invoke(*mine, "estimate", str(tmp_path / "data"), "--ruleset", f"nosuch-{uuid.uuid4().hex[:6]}")
    assert code == 3 and re.search(r"^validate: 4\d\d ", err, re.MULTILINE)
    code, _, err = invoke(*admin, "users", "update", user, "--max-spend-usd", "-1")
    assert code == 3 and "none" in err


def test_models_set_and_show_then_estimate_and_submit_name_a_model_and_tier(
    served: str, invoke: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    admin = ("--url", served, "--api-key", ADMIN_KEY)
    (tmp_path / "a.txt").write_text("row 1\n")
    (tmp_path / "rules.yaml").write_text('no-secret: The file must not contain "secret".\n')
    files = (str(tmp_path / "a.txt"), "--rules", str(tmp_path / "rules.yaml"))
    listed = [
        {"name": "simulator", "target_tpm": 200_000, "target_rpm": 2_000, "tiers": ["standard"], "default": True},
        {"name": "gpt-4o-mini", "target_tpm": 300_000, "target_rpm": 3_000, "tiers": ["standard", "flex"]},
    ]
    (tmp_path / "models.json").write_text(json.dumps({"models": listed}))

    code, out, err = invoke(*admin, "models", "set", str(tmp_path / "models.json"))
    assert code == 0, err
    code, out, err = invoke(*admin, "models", "show")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("simulator (default): target-tpm 200000, target-rpm 2000, tiers standard, chat;")
    assert lines[1].startswith("gpt-4o-mini: target-tpm 300000, target-rpm 3000, tiers standard, flex, chat;")

    code, out, err = invoke(*admin, "estimate", *files, "--model", "gpt-4o-mini", "--tier", "flex", "--json")
    assert code == 0, err
    assert (answer(out)["model"], answer(out)["tier"]) == ("gpt-4o-mini", "flex")

    refusals = {
        "unlisted model": invoke(*admin, "submit", *files, "--model", "gpt-9"),
        "tier not offered": invoke(*admin, "submit", *files, "--tier", "flex"),  # simulator: standard only
        "deadline without flex": invoke(*admin, "submit", *files, "--flex-deadline", "30"),
        "not a list": invoke(*admin, "models", "set", str(tmp_path / "rules.yaml")),
    }
    assert {name: code for name, (code, _, _) in refusals.items()} == dict.fromkeys(refusals, 3)
    assert refusals["unlisted model"][2].startswith("validate: 422 ") and "'gpt-9'" in refusals["unlisted model"][2]
    assert "flex" in refusals["tier not offered"][2] and refusals["tier not offered"][2].startswith("validate: 422 ")
    assert refusals["deadline without flex"][2].strip() == (
        "validate: --flex-deadline and --flex-fallback go with --tier flex."
    )
    assert "not JSON" in refusals["not a list"][2]
    assert httpx.get(f"{served}/validations", headers=ADMIN).json()["items"] == []  # nothing stored

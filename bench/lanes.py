"""Lanes: one corpus through the standard, flex and batch tiers, and flex when capacity is scarce.

Everything goes through the whole local stack (API, Step Functions, the validator, batch and
combine Lambdas, the simulator), priced at the simulator's local price (core/pricing.py,
`simulator`: gpt-4o-mini's amounts; flex and batch at half). USD is the validations' own
`usage.cost_usd`, so each call is priced at the tier that served it.

The corpus is the fidelity benchmark's generator (bench/fidelity.py, its three rules), `FILES`
files in validations of `PER_VALIDATION`, submitted together, `reuse: false` (every part asked
on every lane). The simulator's slow lanes are scaled down: a flex answer takes
`FLEX_LATENCY` s more than a standard one (minutes on OpenAI), a batch completes
`BATCH_SECONDS` s after it is created (up to 24 h), and the batch lane's Wait state polls
after 1 s, then every 2 s.

Rows:
- **standard**: the baseline.
- **flex**: `tier: "flex"`, capacity always there.
- **batch**: `tier: "batch"`: the parts through the Batch API; re-asks and combine calls (files
  of several parts) synchronously at flex (`batch_sync_tier`'s default), as the lane does.
- **flex, 30% unavailable**: the simulator answers 30% of flex calls 429 "resource unavailable";
  the validations ask `flex_deadline_seconds: FLEX_DEADLINE` with fallback to standard. The goal
  is that no validation is lost or stuck: each ends, within the benchmark's timeout.

Reported per row: USD and ÷ standard (goal 0.5 ± 0.005 for flex and batch: each run's prompts
carry their own random nonce, so the same corpus is a few tokens more or less), wall time from the first
submission to the last end, calls the simulator answered (synchronous, and batched requests), and
whether every (file, rule) verdict and finding line equals the standard row's.

    python -m bench bench.lanes
"""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from typing import Any

from bench.cost import machine
from bench.fidelity import RULES, CorpusFile, _results, _wait, corpus

SEED = 11
FILES = 24
PER_VALIDATION = 8
MAX_LINES = 240
FLEX_LATENCY = 0.2
BATCH_SECONDS = 3.0
FLEX_DEADLINE = 60
UNAVAILABLE = 0.3
TIMEOUT = 900.0  # a validation not ended by then is "stuck"
# Each run's prompts carry their own random nonce, so the same corpus costs a few tokens more or less.
TOLERANCE = Decimal("0.005")


def _user(api: Any) -> dict[str, str]:
    made = api.post(
        "/admin/users",
        json={
            "user_id": f"lanes-{uuid.uuid4().hex[:8]}",
            "quota": {
                "capacity_tokens": 10**9,
                "refill_tokens_per_minute": 10**9,
                "max_running": 10,
                "tiers": ["standard", "flex", "batch"],
            },
        },
    )
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['api_key']}"}


def _verdicts(api: Any, ids: list[str]) -> list[tuple[str, str, Any, tuple[int, ...]]]:
    """(file, rule, passed, finding lines) of every result of these validations."""
    return sorted(
        (item["file"], v["id"], v.get("passed"), tuple(f["line"] for f in v.get("findings", [])))
        for vid in ids
        for item in _results(api, vid)
        for v in item.get("rules", [])
    )


def _calls(sim: Any) -> dict[str, int]:
    stats = sim.stats.snapshot()
    batched = int(stats.get("batch_requests", {}).get("completed", 0))  # answered by the same code: in part_calls
    return {
        "sync": int(stats["part_calls"]) + int(stats["combine_calls"]) - batched,
        "batched": batched,
        "unavailable": int(stats["flex_unavailable"]),
    }


def run_lane(api: Any, sim: Any, user: dict[str, str], files: list[CorpusFile], lane: dict[str, Any]) -> dict[str, Any]:
    """The corpus in validations of PER_VALIDATION files, submitted together on one lane, to their end."""
    before = _calls(sim)
    started = time.monotonic()
    ids = []
    for first in range(0, len(files), PER_VALIDATION):
        chunk = files[first : first + PER_VALIDATION]
        body = {"documents": [{"name": f.name, "content": f.content} for f in chunk], "rules": RULES}
        answer = api.post("/validations", json={**body, "reuse": False, **lane}, headers=user)
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    try:
        views = _wait(api, ids, timeout=TIMEOUT, settle=30, poll=0.5)
    except TimeoutError as exc:  # stuck: reported, not raised
        return {"stuck": str(exc), "ids": ids}
    seconds = time.monotonic() - started
    after = _calls(sim)
    usages = [view.get("usage") or {} for view in views.values()]
    return {
        "ids": ids,
        "statuses": sorted({view["status"] for view in views.values()}),
        "usd": sum((Decimal(str(u["cost_usd"])) for u in usages), Decimal(0)),
        "prompt": sum(int(u.get("prompt_tokens") or 0) for u in usages),
        "cached": sum(int(u.get("cached_prompt_tokens") or 0) for u in usages),
        "seconds": seconds,
        "calls": {name: after[name] - before[name] for name in after},
        "parts": sum(f["parts"] for view in views.values() for f in view["files"]),
        "served": sorted({u.get("model") or "" for u in usages}),
        "verdicts": _verdicts(api, ids),
    }


def table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    standard = rows[0][1]
    out = [
        "| lane | statuses | USD | ÷ standard | goal | cached share of prompt tokens | wall s | ÷ standard "
        "| sync calls | batched requests | flex 429s | verdicts = standard |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, row in rows:
        if "stuck" in row:
            out.append(f"| {name} | **stuck**: {row['stuck']} | | | | | | | | | | |")
            continue
        ratio = row["usd"] / standard["usd"] if standard["usd"] else Decimal(0)
        if name == "standard":
            goal = ""
        elif "unavailable" in name:  # the goal there: every validation ends (late calls fall back to standard)
            goal = "none lost or stuck ✓" if row["statuses"] == ["SUCCEEDED"] else "none lost or stuck ✗"
        else:
            goal = "0.5 ✓" if abs(ratio - Decimal("0.5")) <= TOLERANCE else "0.5 ✗"
        same = row["verdicts"] == standard["verdicts"]
        differing = len(set(row["verdicts"]) ^ set(standard["verdicts"]))
        out.append(
            f"| {name} | {', '.join(row['statuses'])} | {row['usd']:.6f} | {ratio:.3f} | {goal} | "
            f"{row['cached'] / max(1, row['prompt']):.3f} | {row['seconds']:.1f} | "
            f"{row['seconds'] / standard['seconds']:.2f} | {row['calls']['sync']} | "
            f"{row['calls']['batched']} | {row['calls']['unavailable']} | "
            f"{'yes' if same else f'**no** ({differing} differ)'} |"
        )
    return "\n".join(out)


def main() -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from bench import set_parameters, stack_settings
    from local.aws.server import EmbeddedAWS
    from local.simulator.app import SimulatorConfig
    from local.simulator.server import SimulatorServer

    files = corpus(SEED, FILES, max_lines=MAX_LINES)
    print(f"\n## Lanes ({FILES} files in validations of {PER_VALIDATION}, seed {SEED}, {len(RULES)} rules)")
    print(f"machine: {machine()} (before)")
    config = SimulatorConfig(
        latency_seconds=0.02, flex_latency_seconds=FLEX_LATENCY, batch_completion_seconds=BATCH_SECONDS, seed=7
    )
    with EmbeddedAWS() as aws, SimulatorServer(config) as sim:
        settings = stack_settings(
            aws.endpoint_url, sim.base_url, "la", batch_poll_first_seconds=1, batch_poll_max_seconds=2
        )
        set_parameters(settings, {"target-tpm": sim.simulator.config.tpm, "target-rpm": sim.simulator.config.rpm})
        with TestClient(create_app(settings)) as api:
            api.headers.update({"Authorization": "Bearer bench"})
            user = _user(api)
            rows = [
                ("standard", run_lane(api, sim, user, files, {"tier": "standard"})),
                ("flex", run_lane(api, sim, user, files, {"tier": "flex"})),
                ("batch", run_lane(api, sim, user, files, {"tier": "batch"})),
            ]
            sim.reconfigure(flex_unavailable_rate=UNAVAILABLE)
            scarce = {"tier": "flex", "flex_deadline_seconds": FLEX_DEADLINE, "flex_fallback": "standard"}
            rows.append((f"flex, {UNAVAILABLE:.0%} unavailable", run_lane(api, sim, user, files, scarce)))
    print(f"machine: {machine()} (after)\n")
    print(table(rows))
    parts = rows[0][1].get("parts")
    print(
        f"\n{parts} parts per lane. Batch: the parts through the Batch API; re-asks, parts the batches left and "
        "the combine calls of files with several parts synchronously at flex (`batch_sync_tier`), both at half price."
    )


if __name__ == "__main__":
    main()

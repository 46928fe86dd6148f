"""Fair share against first come, first served: a light user beside a heavy one.

The simulator enforces a TPM/RPM limit over a time-scaled window (WINDOW seconds stand for
a minute), as in bench/governor.py. Workload: user A submits 4 large validations; 10 s
later user B submits 1 small one. Three runs, each on a fresh embedded AWS and simulator,
in the same process:

- alone: B's validation on its own (the reference for its completion time);
- fair: A and B with `fair-share` on (core/fairness.py);
- first come: the same with `fair-share` off: the budget as it was before fair share
  (grants in arrival order, and the controller planning from what the others leave).

Reported: B's completion time ÷ B alone; Jain's index (Σx)² ÷ (n·Σx²) of the two users'
tokens per window while both had work waiting (from B's submission until B had no more
parts left than call slots; windows of WINDOW seconds starting every quarter window);
U = tokens admitted per window ÷ limit over those windows; and the governor table's
requests per model call (what reservations cost in DynamoDB calls, all validators).
Calls are told apart by user at the simulator (local/simulator/tally.py), by file name.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from botocore.client import BaseClient

from bench import set_parameters, stack_settings
from local.aws.server import EmbeddedAWS
from local.simulator.app import SimulatorConfig
from local.simulator.server import SimulatorServer
from local.simulator.tally import Tally

WINDOW = 20.0  # a minute, scaled by 1/3
LIMIT_TOKENS = 20_000  # per window: ~1 call a second of ~1,000 tokens (prompt + max_tokens)
LIMIT_REQUESTS = 300
LATENCY = 3.0  # a call's time (the issue's ~3 s): B's two slots alone use ~60% of the budget
PARALLELISM = 2  # max-parallelism: each validation holds at most two calls
PART_TOKENS = 300
MAX_TOKENS = 512
B_DELAY = 10.0
RULES = [{"id": "no-secret", "text": "No line may contain the word secret."}]


def _text(lines: int) -> str:
    return "".join(f"row {i}: value {i * 7} " + "x" * ((i * 13) % 40) + "\n" for i in range(1, lines + 1))


def a_documents() -> list[dict[str, str]]:
    """Four large validations (~45 parts each): more than A finishes while B runs."""
    return [{f"a-{i}.txt": _text(800)} for i in range(4)]


def b_documents() -> dict[str, str]:
    """One small validation of ~18 parts (and a combine call)."""
    return {"b-0.txt": _text(320)}


@contextmanager
def governor_requests(table_suffix: str) -> Iterator[Counter[str]]:
    """Count the boto3 requests (by operation) to the governor table made in this process:
    the validators' and the controller's (the API uses aioboto3, which is not counted)."""
    counts: Counter[str] = Counter()
    original = BaseClient._make_api_call

    def counted(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        tables = {str(params.get("TableName", ""))}
        tables |= {str(next(iter(i.values())).get("TableName", "")) for i in params.get("TransactItems", [])}
        tables |= set(params.get("RequestItems", {}))
        if any(t.endswith(table_suffix) for t in tables):
            counts[f"{operation} {_what(params)}".strip()] += 1
        return original(self, operation, params)

    BaseClient._make_api_call = counted
    try:
        yield counts
    finally:
        BaseClient._make_api_call = original


def _what(params: dict[str, Any]) -> str:
    """Which governor records a request is about: budget, lease (slots), demand, open_leases..."""
    if "IndexName" in params:
        return str(params["IndexName"])
    key = params.get("Key") or {}
    values = params.get("ExpressionAttributeValues") or {}
    pk = str((key.get("pk") or values.get(":pk") or {}).get("S", ""))
    return pk.split("#")[0]


def run(mode: str) -> dict[str, Any]:
    """One run: "alone" (B only), "fair" or "first-come" (A and B)."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    config = SimulatorConfig(
        rpm=LIMIT_REQUESTS, tpm=LIMIT_TOKENS, window_seconds=WINDOW, latency_seconds=LATENCY, send_retry_after=True
    )
    with EmbeddedAWS() as aws, SimulatorServer(config) as sim:
        settings = stack_settings(
            aws.endpoint_url,
            sim.base_url,
            "bf",
            part_max_tokens=PART_TOKENS,
            completion_max_tokens=MAX_TOKENS,
            governor_window_seconds=WINDOW,
            lease_seconds=30,
            openai_timeout_seconds=20,
            sfn_retry_max_delay_seconds=4,
        )
        set_parameters(
            settings,
            {
                "target-tpm": LIMIT_TOKENS,
                "target-rpm": LIMIT_REQUESTS,
                "throttle-threshold": 0.95,
                "max-parallelism": PARALLELISM,
                "fair-share": "off" if mode == "first-come" else "on",
            },
        )
        tally = Tally(sim.simulator, {'"a-': "A", '"b-': "B"})
        with governor_requests(settings.table("governor")) as requests, TestClient(create_app(settings)) as api:
            api.headers.update({"Authorization": "Bearer bench"})
            keys = {}
            for user in ("alice", "bob"):
                quota = {"capacity_tokens": 10_000_000, "refill_tokens_per_minute": 10_000_000, "max_running": 5}
                made = api.post("/admin/users", json={"user_id": user, "quota": quota})
                keys[user] = {"Authorization": f"Bearer {made.json()['api_key']}"}

            def submit(docs: dict[str, str], user: str) -> str:
                body = {"documents": [{"name": n, "content": c} for n, c in docs.items()], "rules": RULES}
                answer = api.post("/validations", json=body, headers=keys[user])
                assert answer.status_code == 202, answer.text
                return str(answer.json()["id"])

            heavy = [submit(docs, "alice") for docs in a_documents()] if mode != "alone" else []
            if heavy:
                time.sleep(B_DELAY)
            b_start = time.monotonic()
            light = submit(b_documents(), "bob")
            while (status := api.get(f"/validations/{light}").json()["status"]) not in ("SUCCEEDED", "FAILED"):
                time.sleep(0.25)
            b_end = time.monotonic()
            assert status == "SUCCEEDED", status
            b_parts = int(api.get(f"/validations/{light}").json()["progress"]["total"])
            a_left = [api.get(f"/validations/{v}").json()["status"] for v in heavy]
            for vid in heavy:
                api.delete(f"/validations/{vid}")
            for vid in heavy:
                while api.get(f"/validations/{vid}").json()["status"] not in ("CANCELLED", "SUCCEEDED", "FAILED"):
                    time.sleep(0.25)
        tally.close()
        calls = list(tally.calls)
        # B has work waiting while it has more parts left than call slots: until the call of
        # its (parts - slots + 1)-th part starts (its combine call comes after every part).
        b_calls = sorted(t for t, _, who in calls if who == "B")
        backlogged_until = b_calls[b_parts - PARALLELISM] if b_parts > PARALLELISM else b_end
        return {
            "b_seconds": b_end - b_start,
            "windows": per_window(calls, b_start, backlogged_until),
            "a_running_when_b_ended": sum(s == "RUNNING" for s in a_left),
            "requests": dict(requests),
            "calls": len(calls),
            "rate_limited": sim.stats.rate_limited,
        }


def per_window(calls: list[tuple[float, int, str]], start: float, end: float) -> list[dict[str, int]]:
    """Tokens per user in every window of WINDOW seconds inside [start, end), one starting
    every quarter window (sliding: more samples than the few whole windows of a short run)."""
    windows: list[dict[str, int]] = []
    begin = start
    while begin + WINDOW <= end:
        window = {"A": 0, "B": 0}
        for t, tokens, who in calls:
            if begin <= t < begin + WINDOW and who in window:
                window[who] += tokens
        windows.append(window)
        begin += WINDOW / 4
    return windows


def jain(values: list[float]) -> float:
    """Jain's fairness index: 1 when all are equal, 1/n when one has everything."""
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values)) if any(values) else 1.0


def summary(row: dict[str, Any], alone_seconds: float) -> dict[str, float]:
    windows = row["windows"]
    jains = [jain([w["A"], w["B"]]) for w in windows]
    counts = row["requests"]
    calls = max(1, row["calls"])
    writes = sum(n for what, n in counts.items() if what.startswith(("TransactWriteItems", "UpdateItem")))
    polls = counts.get("Query lease", 0)  # validators waiting for a call slot of their validation
    reads = sum(n for what, n in counts.items() if what.startswith(("GetItem", "Query", "BatchGetItem"))) - polls
    return {
        "b_ratio": row["b_seconds"] / alone_seconds,
        "jain": sum(jains) / len(jains) if jains else float("nan"),
        "jain_min": min(jains) if jains else float("nan"),
        "u": sum(w["A"] + w["B"] for w in windows) / len(windows) / LIMIT_TOKENS if windows else float("nan"),
        "b_share": sum(w["B"] for w in windows) / max(1, sum(w["A"] + w["B"] for w in windows)),
        "windows": len(windows),
        "writes_per_call": writes / calls,
        "transactions_per_call": counts.get("TransactWriteItems", 0) / calls,
        "reads_per_call": reads / calls,
        "slot_polls_per_call": polls / calls,
    }


def main() -> None:
    limit = f"limit {LIMIT_TOKENS:,} tokens and {LIMIT_REQUESTS} requests per {WINDOW:.0f} s window"
    print(f"\n## Fair share ({limit}, {LATENCY:.0f} s calls, max-parallelism {PARALLELISM})")
    alone = run("alone")
    print(f"(alone done: {alone['b_seconds']:.0f} s)", flush=True)
    fair = run("fair")
    print(f"(fair done: {fair['b_seconds']:.0f} s)", flush=True)
    first_come = run("first-come")
    print(f"B alone: {alone['b_seconds']:.1f} s, {alone['calls']} calls")
    print(
        "| budget | B time ÷ B alone | Jain (mean, min) | U | B's share | windows (¼ steps) "
        "| governor writes per call (transactions) | reads per call | slot polls per call |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = {
        "fair share": summary(fair, alone["b_seconds"]),
        "first come (baseline)": summary(first_come, alone["b_seconds"]),
    }
    for name, s in rows.items():
        print(
            f"| {name} | {s['b_ratio']:.2f} | {s['jain']:.3f}, {s['jain_min']:.3f} | {s['u']:.3f} | "
            f"{s['b_share']:.2f} | {s['windows']} | {s['writes_per_call']:.1f} ({s['transactions_per_call']:.1f}) "
            f"| {s['reads_per_call']:.1f} | {s['slot_polls_per_call']:.1f} |"
        )
    for name, row in (("alone", alone), ("fair", fair), ("first come", first_come)):
        print(f"{name}: requests {row['requests']}, 429s {row['rate_limited']}, windows {row['windows']}")


if __name__ == "__main__":
    main()

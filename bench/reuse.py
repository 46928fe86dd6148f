"""Reuse: the same batch submitted twice through the whole system (API, Step Functions, the
validator and combine Lambdas, the simulator). The first submission is the baseline; the
second should make no model call (every part's and every combine call's stored answer is
reused), be charged nothing, and give results identical to the first, finding for finding.
A third submission with `reuse: false` shows what the second would have cost.

Corpus: the fidelity benchmark's seeded files (bench/fidelity.py), so there are one-part
and many-part files of every kind.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from bench.fidelity import RULES, CorpusFile, _results, _stat, _wait, batches, corpus

SEED, FILES, MAX_LINES, PART_TOKENS = 20240501, 60, 300, 400


def submit(api: Any, simulator: Any, files: list[CorpusFile], user: dict[str, str], reuse: bool) -> dict[str, Any]:
    before = _stat(simulator, "requests")
    started = time.monotonic()
    ids = []
    for batch in batches(files):
        body = {"documents": [{"name": f.name, "content": f.content} for f in batch], "rules": RULES, "reuse": reuse}
        answer = api.post("/validations", json=body, headers=user)
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    views = _wait(api, ids, timeout=1800, settle=30, poll=0.5)
    seconds = time.monotonic() - started
    usages = [v["usage"] for v in views.values()]
    results = [(item["file"], item["status"], item["rules"]) for vid in ids for item in _results(api, vid)]
    return {
        "statuses": sorted({v["status"] for v in views.values()}),
        "parts": sum(v["progress"]["total"] for v in views.values()),
        "requests": _stat(simulator, "requests") - before,
        "model_calls": sum(u["model_calls"] for u in usages),
        "reused_parts": sum(u["reused_parts"] for u in usages),
        "charged_tokens": sum(u.get("charged_tokens") or 0 for u in usages),
        "results": results,
        "seconds": seconds,
    }


def main() -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from bench import set_parameters, stack_settings
    from local.aws.server import EmbeddedAWS
    from local.simulator.app import SimulatorConfig
    from local.simulator.server import SimulatorServer

    files = corpus(SEED, FILES, max_lines=MAX_LINES)
    print(f"\n## Reuse ({len(files)} files, seed {SEED}, part budget {PART_TOKENS} tokens, submitted three times)")
    with EmbeddedAWS() as aws, SimulatorServer(SimulatorConfig(latency_seconds=0.02)) as sim:
        settings = stack_settings(aws.endpoint_url, sim.base_url, "ru", part_max_tokens=PART_TOKENS)
        set_parameters(settings, {"target-tpm": sim.simulator.config.tpm, "target-rpm": sim.simulator.config.rpm})
        with TestClient(create_app(settings)) as api:
            api.headers.update({"Authorization": "Bearer bench"})
            quota = {"capacity_tokens": 10**9, "refill_tokens_per_minute": 10**9, "max_running": 10}
            made = api.post("/admin/users", json={"user_id": f"reuse-{uuid.uuid4().hex[:6]}", "quota": quota})
            user = {"Authorization": f"Bearer {made.json()['api_key']}"}
            first = submit(api, sim.simulator, files, user, reuse=True)
            second = submit(api, sim.simulator, files, user, reuse=True)
            third = submit(api, sim.simulator, files, user, reuse=False)
    print(table(first, second, third))


def table(first: dict[str, Any], second: dict[str, Any], third: dict[str, Any]) -> str:
    def ratio(a: float, b: float) -> str:
        return f"{a / b:.3f}" if b else "n/a"

    rows = [
        ("statuses", first["statuses"], second["statuses"], third["statuses"]),
        ("parts", first["parts"], second["parts"], third["parts"]),
        ("model calls (simulator's count)", first["requests"], second["requests"], third["requests"]),
        ("reused parts", first["reused_parts"], second["reused_parts"], third["reused_parts"]),
        ("tokens charged", first["charged_tokens"], second["charged_tokens"], third["charged_tokens"]),
        (
            "wall seconds (shared machine)",
            f"{first['seconds']:.1f}",
            f"{second['seconds']:.1f}",
            f"{third['seconds']:.1f}",
        ),
    ]
    lines = [
        "| | first submission (baseline) | second (reuse) | third (`reuse: false`) |",
        "|---|---|---|---|",
        *(f"| {name} | {a} | {b} | {c} |" for name, a, b, c in rows),
        "",
        f"- model calls, second ÷ first: {ratio(second['requests'], first['requests'])} (goal 0)",
        f"- tokens charged, second ÷ first: {ratio(second['charged_tokens'], first['charged_tokens'])}",
        f"- results of the second identical to the first: {second['results'] == first['results']}",
        f"- results of the third identical to the first: {third['results'] == first['results']}",
        f"- wall time, second ÷ first: {ratio(second['seconds'], first['seconds'])}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

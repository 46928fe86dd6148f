"""The TPM governor against an OpenAI-style limit, beside the well-known client throttler.

The simulator enforces a fixed TPM and RPM limit over a time-scaled window (WINDOW
seconds stand for a minute), charging prompt + max_tokens at admission like OpenAI.
Workload: three validations from two users at once, documents of mixed line lengths
and sizes (so part sizes vary), run twice on fresh simulators in the same process:

- service: the whole stack (API, Step Functions, validator Lambdas, the governor) with
  target-tpm = the limit, throttle-threshold 0.96, max-parallelism 8;
- baseline: the openai-cookbook `api_request_parallel_processor.py` kind: the same
  requests from 8 workers, request and token buckets refilling continuously at 75% of
  the limit, prompt + max_tokens reserved per request, a pause of 15 s (scaled: a
  quarter of the window) after a 429, then the request is retried.

Reported per row: U = tokens admitted per window ÷ limit, over the full windows after
the first (warm-up) and before the last (drain); r429 = 429 answers ÷ requests; peak =
the most tokens admitted in any sliding window ÷ limit; largest = the largest call ÷ limit.

A schedule of grants at a rate (GCRA, per shard or whole) holds any window to rate × window
plus the largest call that starts in it (core/governor.py), so the service's peak is bounded
by threshold + largest: at or below 1.00 only while the largest call fits the room the
threshold leaves (1 − threshold). The row "bound" prints it for the calls measured. The
limit is a real minute's, 60,000 tokens: calls of ~1,300 tokens are 2% of it (at OpenAI's
tiers a call is a far smaller share of a minute's tokens still), so the threshold's room holds
the largest call and a threshold of 0.96 gives both U ≥ 0.95 and a peak ≤ 1.00.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import openai
from openai.types.chat import ChatCompletionMessageParam
from openai.types.shared_params import ResponseFormatJSONSchema

from bench import set_parameters, stack_settings
from core import prompt
from core.lines import decode_part
from core.parts import split_file
from core.tokens import count_message_tokens
from local.aws.server import EmbeddedAWS
from local.simulator.app import SimulatorConfig
from local.simulator.server import SimulatorServer

WINDOW = 60.0
# Sized under the embedded engine's ceiling: every call costs ~0.3 s of CPU in this one
# process (Step Functions interpreter, moto, boto3 on both sides), so ~3 calls/s at most;
# this limit needs ~0.8 call/s. The workload fills 7+ windows (~8 minutes a run).
LIMIT_TOKENS = 60_000  # per window
LIMIT_REQUESTS = 900
LATENCY = 1.0
PARALLELISM = 8
PART_TOKENS = 300
MAX_TOKENS = 512
BASELINE_SHARE = 0.75
THRESHOLD = 0.96
RULES = [
    {"id": "no-secret", "text": "No line may contain the word secret."},
    {"id": "numbers", "text": "Every value must be a number."},
]


def documents() -> list[tuple[str, dict[str, str]]]:
    """(user, {name: text}) for three validations: mixed line lengths and file sizes."""

    def text(lines: int, width: int) -> str:
        return "".join(f"row {i}: value {i * 7} " + "x" * ((i * 13) % width) + "\n" for i in range(1, lines + 1))

    return [
        ("alice", {"short-lines.txt": text(2_600, 8), "tiny.txt": text(12, 4)}),
        ("alice", {"long-lines.csv": text(1_450, 120)}),
        ("bob", {"medium.txt": text(2_200, 40), "small.txt": text(90, 60)}),
    ]


def measure(admitted: list[tuple[float, int]], requests: int, limited: int) -> dict[str, float]:
    times = sorted(admitted)
    start, end = times[0][0], times[-1][0]
    full = int((end - start) // WINDOW)
    per_window = [sum(c for t, c in times if start + k * WINDOW <= t < start + (k + 1) * WINDOW) for k in range(full)]
    steady = per_window[1:-1] or per_window
    peak = max(sum(c for t, c in times if s <= t < s + WINDOW) for s, _ in times)
    return {
        "U": sum(steady) / len(steady) / LIMIT_TOKENS,
        "r429": limited / max(requests, 1),
        "peak": peak / LIMIT_TOKENS,
        "largest": max(c for _, c in times) / LIMIT_TOKENS,
        "windows": len(steady),
        "tokens": sum(c for _, c in times),
        "seconds": end - start,
    }


def simulator() -> SimulatorServer:
    return SimulatorServer(
        SimulatorConfig(
            rpm=LIMIT_REQUESTS, tpm=LIMIT_TOKENS, window_seconds=WINDOW, latency_seconds=LATENCY, send_retry_after=True
        )
    )


def run_service(wide_map: bool = False) -> dict[str, float]:
    """The whole stack; `wide_map`: the Map planned as wide as the reach, one call per invocation
    (invocations beyond the cap start only to wait for a slot), instead of no wider than the
    planned parallelism with the rest of the reach as calls per invocation (core/headroom.py)."""
    from core import headroom

    shape = headroom.shape
    if wide_map:
        headroom.shape = lambda reach, batches, parts, other_items=0, width=0: shape(
            reach, batches, parts, other_items, width=headroom.MAP_LIMIT
        )
    try:
        return _run_service()
    finally:
        headroom.shape = shape


def _run_service() -> dict[str, float]:
    from fastapi.testclient import TestClient

    from app.main import create_app

    with EmbeddedAWS() as aws, simulator() as sim:
        settings = stack_settings(
            aws.endpoint_url,
            sim.base_url,
            "bg",
            part_max_tokens=PART_TOKENS,
            completion_max_tokens=MAX_TOKENS,
            governor_window_seconds=WINDOW,
            lease_seconds=30,
            openai_timeout_seconds=20,  # a lease must outlive a call
            sfn_retry_max_delay_seconds=4,
        )
        set_parameters(
            settings,
            {
                "target-tpm": LIMIT_TOKENS,
                "target-rpm": LIMIT_REQUESTS,
                "throttle-threshold": THRESHOLD,
                "max-parallelism": PARALLELISM,
            },
        )
        with TestClient(create_app(settings)) as api:
            api.headers.update({"Authorization": "Bearer bench"})
            keys = {}
            for user in ("alice", "bob"):
                made = api.post(
                    "/admin/users",
                    json={
                        "user_id": user,
                        "quota": {
                            "capacity_tokens": 10_000_000,
                            "refill_tokens_per_minute": 10_000_000,
                            "max_running": 5,
                        },
                    },
                )
                keys[user] = {"Authorization": f"Bearer {made.json()['api_key']}"}
            ids = []
            for user, docs in documents():
                answer = api.post(
                    "/validations",
                    json={"documents": [{"name": n, "content": c} for n, c in docs.items()], "rules": RULES},
                    headers=keys[user],
                )
                assert answer.status_code == 202, answer.text
                ids.append(answer.json()["id"])
            deadline = time.monotonic() + 1_800
            while time.monotonic() < deadline:
                states = [api.get(f"/validations/{v}").json()["status"] for v in ids]
                if all(s in ("SUCCEEDED", "FAILED", "CANCELLED") for s in states):
                    break
                time.sleep(1)
            assert states == ["SUCCEEDED"] * len(ids), states
            metric = cast(Any, api.app).state.metrics.registry.get_sample_value  # the in-process Lambdas' metrics
            waits = {
                "slot_waits": metric("validation_slot_waits_total") or 0.0,
                "capacity_unavailable": metric("validation_capacity_unavailable_total") or 0.0,
            }
        stats = sim.stats
        return {**measure(list(stats.admitted), stats.requests, stats.rate_limited), **waits}


def workload() -> list[list[dict[str, str]]]:
    requests = []
    for _, docs in documents():
        for name, text in docs.items():
            encoded = text.encode()
            spans = split_file(name, encoded, PART_TOKENS)
            for i, span in enumerate(spans):
                part = decode_part(encoded[span.start_byte : span.end_byte], span.start_byte)
                view = prompt.PartView(name, span.first_line, span.last_line, i + 1, len(spans))
                requests.append(prompt.part_messages(view, part, RULES, prompt.new_nonce()))
    return requests


async def run_baseline() -> dict[str, float]:
    """The cookbook's throttler: continuous refill, reserve prompt + max_tokens, pause after a 429."""
    with simulator() as sim:
        client = openai.AsyncOpenAI(base_url=sim.base_url, api_key="bench", max_retries=0)
        tokens_per_second = BASELINE_SHARE * LIMIT_TOKENS / WINDOW
        requests_per_second = BASELINE_SHARE * LIMIT_REQUESTS / WINDOW
        buckets = {"tokens": BASELINE_SHARE * LIMIT_TOKENS, "requests": BASELINE_SHARE * LIMIT_REQUESTS}
        state = {"updated": time.monotonic(), "paused_until": 0.0}
        lock = asyncio.Lock()
        queue: asyncio.Queue[list[dict[str, str]]] = asyncio.Queue()
        for messages in workload():
            queue.put_nowait(messages)

        async def reserve(cost: int) -> None:
            while True:
                async with lock:
                    now = time.monotonic()
                    elapsed, state["updated"] = now - state["updated"], now
                    buckets["tokens"] = min(
                        BASELINE_SHARE * LIMIT_TOKENS, buckets["tokens"] + elapsed * tokens_per_second
                    )
                    buckets["requests"] = min(
                        BASELINE_SHARE * LIMIT_REQUESTS, buckets["requests"] + elapsed * requests_per_second
                    )
                    if now >= state["paused_until"] and buckets["tokens"] >= cost and buckets["requests"] >= 1:
                        buckets["tokens"] -= cost
                        buckets["requests"] -= 1
                        return
                await asyncio.sleep(0.001)  # the cookbook's loop sleeps 1 ms between checks

        async def worker() -> None:
            while not queue.empty():
                messages = queue.get_nowait()
                cost = count_message_tokens(messages) + MAX_TOKENS
                while True:
                    await reserve(cost)
                    try:
                        # The prompt's plain dicts, typed as the SDK's (as lambdas/common/model.py does).
                        await client.chat.completions.create(
                            model="simulator",
                            messages=cast("list[ChatCompletionMessageParam]", messages),
                            max_tokens=MAX_TOKENS,
                            response_format=cast(ResponseFormatJSONSchema, prompt.PART_RESPONSE_FORMAT),
                        )
                        break
                    except openai.RateLimitError:
                        state["paused_until"] = time.monotonic() + WINDOW / 4  # "15 s" of a scaled minute

        await asyncio.gather(*(worker() for _ in range(PARALLELISM)))
        stats = sim.stats
        return measure(list(stats.admitted), stats.requests, stats.rate_limited)


def main() -> None:
    limit = f"limit {LIMIT_TOKENS:,} tokens and {LIMIT_REQUESTS} requests per {WINDOW:.0f} s window"
    print(f"\n## TPM governor ({limit}, 3 validations, 2 users)")
    baseline = asyncio.run(run_baseline())
    service = run_service()
    wide = run_service(wide_map=True)
    print(
        "| client | U (used ÷ limit) | r429 | peak window ÷ limit | largest call ÷ limit | windows averaged "
        "| tokens | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, row in (
        (f"service (governor, threshold {THRESHOLD})", service),
        ("service, the Map as wide as the reach", wide),
        (f"baseline (cookbook throttler at {BASELINE_SHARE:.0%})", baseline),
    ):
        cells = [
            f"{row['U']:.3f}",
            f"{row['r429']:.2%}",
            f"{row['peak']:.3f}",
            f"{row['largest']:.3f}",
            str(row["windows"]),
            f"{row['tokens']:,}",
            f"{row['seconds']:.0f}",
        ]
        print(f"| {name} | {' | '.join(cells)} |")
    utilization, peak = service["U"] / baseline["U"], service["peak"] / baseline["peak"]
    print(f"| service ÷ baseline | {utilization:.2f}× | | {peak:.2f}× | | | | |")
    print("\n| service | waits for a call slot | invocations that gave up waiting (CapacityUnavailable) |")
    print("|---|---:|---:|")
    for name, row in (("Map no wider than the planned parallelism", service), ("Map as wide as the reach", wide)):
        print(f"| {name} | {row['slot_waits']:.0f} | {row['capacity_unavailable']:.0f} |")
    bound = THRESHOLD + service["largest"]
    print(f"\nThe schedule's bound on the service's peak: threshold + largest call = {bound:.3f} × the limit.")


if __name__ == "__main__":
    main()

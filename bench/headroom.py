"""Headroom: one validation holding more calls in flight than the inline Map's 40 iterations.

The whole stack (API, Step Functions, validator Lambdas, the governor) against the simulator,
one validation at a time. Calls last LATENCY seconds; the limit is what N calls in flight
use: `N × tokens per call × WINDOW ÷ LATENCY ÷ threshold` tokens per WINDOW (a minute), so a
validation holding N calls in flight spends the governor's budget, and no validation can
hold more for long. Two rows, each on its own stack and simulator in the same run:

- headroom: max-parallelism N (the controller plans the Map's width and k calls per
  invocation, core/headroom.py), until the validation ends;
- baseline: max-parallelism 40, k = 1: one call per Map iteration, the ceiling before
  headroom; stopped (cancelled) after as long as the headroom row took, so both rows span
  the same time.

Before each row a one-part warm-up validation lets the governor measure a call (its
duration and tokens), as a running deployment has, so the controller plans with
LATENCY-long calls, not its 3 s default. The limit is sized from the workload's own parts
(their prompts counted as the simulator counts them, plus the completion allowance).
LATENCY is long because the embedded engine runs everything in one process and starts
only a few calls per second (README): N calls in flight need N ÷ LATENCY calls started per
second, here 3. Reported per row: peak = the most calls the simulator had in flight at
once ÷ N; busiest = the most tokens the simulator admitted in any WINDOW-long span ÷ the
limit; U = tokens admitted per window from the first call's start to the last call's end
÷ the limit; 429s; parts done; the row's wall time (to the validation's end, combine step
and all), and how many calls started in each 20 s.
"""

from __future__ import annotations

import math
import time
from typing import Any

from bench import set_parameters, stack_settings
from local.aws.server import EmbeddedAWS
from local.simulator.app import SimulatorConfig
from local.simulator.server import SimulatorServer

N = 120  # calls in flight the limit allows: three times an inline Map's 40
LATENCY = 40.0  # seconds a call takes
WINDOW = 60.0  # the limit's window: a minute
THRESHOLD = 0.95
FILES, LINES = 12, 1_500  # 12 files of 15 parts (180: one and a half rounds of N calls); each
# file's 15 reports fit one combine call, and the 12 combine calls run at once
PART_TOKENS = 1_500  # the default part size
COMPLETION_TOKENS = 512  # the default completion allowance (settings' completion_max_tokens)
BASELINE_PARALLELISM = 40
RULES = [{"id": "no-secret", "text": "No line may contain the word secret."}]
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


def lines(count: int) -> str:
    return "".join(f"row {i}: plain value {i * 7}\n" for i in range(1, count + 1))


def call_tokens(lines_each: int) -> float:
    """What the simulator charges a part call of a file of `lines_each` lines, on average: its
    prompt (as core/prompt builds it for the part) + the completion allowance."""
    from core import prompt
    from core.lines import decode_part
    from core.parts import split_file
    from core.tokens import count_message_tokens

    content = lines(lines_each).encode()
    spans = split_file("file-0.txt", content, PART_TOKENS)
    costs = []
    for i, span in enumerate(spans):
        view = prompt.PartView("file-0.txt", span.first_line, span.last_line, i + 1, len(spans))
        text = decode_part(content[span.start_byte : span.end_byte], span.start_byte)
        costs.append(count_message_tokens(prompt.part_messages(view, text, RULES, prompt.new_nonce())))
    return sum(costs) / len(costs) + COMPLETION_TOKENS


def submit(api: Any, files: int, lines_each: int) -> str:
    documents = [{"name": f"file-{i}.txt", "content": lines(lines_each)} for i in range(files)]
    answer = api.post("/validations", json={"documents": documents, "rules": RULES, "reuse": False})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def wait(api: Any, validation_id: str, timeout: float) -> dict[str, Any]:
    """The validation once it ended, or as it is when `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        view: dict[str, Any] = api.get(f"/validations/{validation_id}").json()
        if view["status"] in TERMINAL or time.monotonic() > deadline:
            return view
        time.sleep(0.5)


def busiest_window(admitted: list[tuple[float, int]]) -> int:
    """The most tokens admitted in any WINDOW-long span (starting at an admission)."""
    times = sorted(admitted)
    best, end, inside = 0, 0, 0
    for start in range(len(times)):
        while end < len(times) and times[end][0] < times[start][0] + WINDOW:
            inside += times[end][1]
            end += 1
        best = max(best, inside)
        inside -= times[start][1]
    return best


def run(aws: EmbeddedAWS, parallelism: int, seconds: float | None) -> dict[str, Any]:
    """One row: its own stack and simulator; the validation runs to its end, or `seconds`."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    config = SimulatorConfig(rpm=1_000_000, tpm=100_000_000, window_seconds=WINDOW, latency_seconds=LATENCY)
    with SimulatorServer(config) as sim:
        settings = stack_settings(
            aws.endpoint_url,
            sim.base_url,
            "bh",
            part_max_tokens=PART_TOKENS,
            completion_max_tokens=COMPLETION_TOKENS,
            governor_window_seconds=WINDOW,
            openai_timeout_seconds=2 * LATENCY,
            lease_seconds=4 * LATENCY,  # a lease must outlive a call
            config_cache_seconds=1,
            sfn_retry_max_delay_seconds=4,
        )
        set_parameters(
            settings,
            {
                "target-tpm": config.tpm,
                "target-rpm": config.rpm,
                "throttle-threshold": THRESHOLD,
                "max-parallelism": parallelism,
            },
        )
        with TestClient(create_app(settings)) as api:
            api.headers.update({"Authorization": "Bearer bench"})
            warm = wait(api, submit(api, 1, 95), timeout=10 * LATENCY)  # one part: the governor measures a call
            assert warm["status"] == "SUCCEEDED", warm
            limit = math.ceil(N * call_tokens(LINES) * WINDOW / LATENCY / THRESHOLD)
            # Through the admin API: it copies the value to where the Lambdas read it at once.
            api.patch("/admin/parallelism", json={"target_tpm": limit}).raise_for_status()
            sim.reconfigure(tpm=limit)  # fresh buckets at the limit
            time.sleep(2 * settings.config_cache_seconds)  # the Lambdas' cached values expire
            first = len(sim.stats.admitted)
            sim.simulator.reset_peak()

            started = time.monotonic()
            vid = submit(api, FILES, LINES)
            done = wait(api, vid, timeout=seconds if seconds is not None else 30 * LATENCY)
            elapsed = time.monotonic() - started
            if done["status"] not in TERMINAL:  # the baseline's time is up
                api.delete(f"/validations/{vid}")
                done = wait(api, vid, timeout=10 * LATENCY)
            else:
                assert done["status"] == "SUCCEEDED", done
        admitted = list(sim.stats.admitted)[first:]
        t0 = min(t for t, _ in admitted)
        starts = [0] * (int((max(t for t, _ in admitted) - t0) // 20) + 1)
        for t, _ in admitted:
            starts[int((t - t0) // 20)] += 1
        return {
            "starts": starts,
            "parts": done["progress"]["total"],
            "done": done["progress"]["succeeded"],
            "k": done["parallelism"]["calls_per_invocation"],
            "map": done["parallelism"]["map_concurrency"],
            "peak": sim.stats.peak_in_flight / N,
            "busiest": busiest_window(admitted) / limit,
            "U": sum(t for _, t in admitted) / ((max(t for t, _ in admitted) + LATENCY - t0) / WINDOW) / limit,
            "rate_limited": sim.stats.rate_limited,
            "limit": limit,
            "seconds": elapsed,
        }


def main() -> None:
    print(
        f"\n## Headroom (one validation of {FILES} files, 15 parts each; {LATENCY:.0f} s calls; a limit for N = {N} "
        f"calls in flight, threshold {THRESHOLD})"
    )
    with EmbeddedAWS() as aws:
        headroom = run(aws, N, None)
        baseline = run(aws, BASELINE_PARALLELISM, headroom["seconds"])
    print(
        "| run | max-parallelism | Map width × k | peak in flight ÷ N (goal ≥ 0.9) | busiest window ÷ limit "
        "| U | 429s | parts done | seconds |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, parallelism, row in (
        ("headroom", N, headroom),
        (f"baseline (k = 1, the inline Map's {BASELINE_PARALLELISM})", BASELINE_PARALLELISM, baseline),
    ):
        cells = [
            str(parallelism),
            f"{row['map']} × {row['k']}",
            f"{row['peak']:.3f}",
            f"{row['busiest']:.3f}",
            f"{row['U']:.3f}",
            str(row["rate_limited"]),
            f"{row['done']} of {row['parts']}",
            f"{row['seconds']:.0f}",
        ]
        print(f"| {name} | {' | '.join(cells)} |")
    print(
        f"| headroom ÷ baseline | | | {headroom['peak'] / baseline['peak']:.2f}× | "
        f"{headroom['busiest'] / baseline['busiest']:.2f}× | {headroom['U'] / baseline['U']:.2f}× | | "
        f"{headroom['done'] / max(1, baseline['done']):.2f}× | |"
    )
    print(
        f"limit: {headroom['limit']:,} tokens per {WINDOW:.0f} s (headroom row; the baseline's: {baseline['limit']:,})"
    )
    for name, row in (("headroom", headroom), ("baseline", baseline)):
        print(f"calls started per 20 s, {name}: {row['starts']}")


if __name__ == "__main__":
    main()

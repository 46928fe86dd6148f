"""Embedded engine throughput: Map items per second through the in-process Lambda route.

A Map of N items, each a 50 ms handler, at MaxConcurrency 10. The ideal is
10 / 0.05 s = 200 items/s; we print the measured rate as a ratio to it, and also to a
baseline measured in the same run: the same handler called from 10 Python threads
directly (no Step Functions, no HTTP), which is what the machine can do at best.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

from local.aws.server import EmbeddedAWS
from tests.local_aws.handlers import probe, sleepy
from tests.support.stack import Aws

ITEMS = 400
CONCURRENCY = 10
HANDLER_SECONDS = 0.05


def run_map(aws: Aws) -> float:
    function = aws.function("tests.local_aws.handlers.sleepy")
    machine = aws.map_machine(function, max_concurrency=CONCURRENCY, sleep=HANDLER_SECONDS, ResultPath=None)
    name = uuid.uuid4().hex
    started = time.perf_counter()
    execution = aws.start(machine, {"probe": name, "items": list(range(ITEMS))})
    result = aws.wait_until(execution, timeout=600)
    elapsed = time.perf_counter() - started
    assert result["status"] == "SUCCEEDED" and probe.calls[name] == ITEMS, result
    return ITEMS / elapsed


def run_threads() -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(
            pool.map(
                lambda i: sleepy(
                    {"probe": "baseline", "sleep": HANDLER_SECONDS}, SimpleNamespace(function_name="baseline")
                ),
                range(ITEMS),
            )
        )
    return ITEMS / (time.perf_counter() - started)


def main() -> None:
    with EmbeddedAWS() as server:
        aws = Aws(server.endpoint_url)
        baseline = run_threads()
        engine = run_map(aws)
    ideal = CONCURRENCY / HANDLER_SECONDS
    handler_ms = HANDLER_SECONDS * 1000
    print(f"\n## Embedded engine: Map of {ITEMS} items, {handler_ms:.0f} ms handler, concurrency {CONCURRENCY}")
    print("| runner | items/s | ÷ ideal | ÷ threads baseline |")
    print("|---|---:|---:|---:|")
    print(f"| threads calling the handler (baseline) | {baseline:.0f} | {baseline / ideal:.2f} | 1.00 |")
    print(f"| Step Functions Map → Lambda route | {engine:.0f} | {engine / ideal:.2f} | {engine / baseline:.2f} |")


if __name__ == "__main__":
    main()

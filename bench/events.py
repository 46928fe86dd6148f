"""Server-sent events: memory per idle open stream, and delivery latency.

The API runs as its own process (`python -m app`, pointed at an embedded AWS in this
process) so its RSS is its own. Memory: RSS growth of the API process after opening
1,000 idle streams (a validation whose model calls take minutes), divided by 1,000.
Latency: for a running validation, the time from an event being stored (its `at`,
written right after the part's result) to the client receiving it, p50 and p99, as a
ratio to the poll interval (one feed reads the log once per interval, so ~0.5 is the
expected median of a uniform wait).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid

import httpx

from bench import aws_client
from local.aws.server import EmbeddedAWS
from local.simulator.app import SimulatorConfig
from local.simulator.server import SimulatorServer
from tests.servers import free_port, process

STREAMS = 1000
POLL_SECONDS = 0.5
HEADERS = {"Authorization": "Bearer bench"}


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


async def open_idle_streams(base: str, vid: str, count: int, hold: asyncio.Event) -> None:
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, headers=HEADERS, timeout=None, limits=limits) as client:
        opened = asyncio.Semaphore(0)

        async def one() -> None:
            async with client.stream("GET", f"/validations/{vid}/events") as answer:
                opened.release()
                async for _ in answer.aiter_lines():
                    if hold.is_set():
                        return

        tasks = [asyncio.create_task(one()) for _ in range(count)]
        for _ in range(count):
            await opened.acquire()
        await asyncio.sleep(2)
        hold.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    with EmbeddedAWS() as aws, SimulatorServer(SimulatorConfig(latency_seconds=0.05)) as simulator:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        prefix = f"ev{uuid.uuid4().hex[:6]}"
        env = {
            **os.environ,
            "PORT": str(port),
            "AWS_ENDPOINT_URL": aws.endpoint_url,
            "ADMIN_API_KEY": "bench",
            "NAME_PREFIX": prefix,
            "OPENAI_BASE_URL": simulator.base_url,
            "SSE_POLL_SECONDS": str(POLL_SECONDS),
            "PART_MAX_TOKENS": "100",
            "METRICS_PORT": "0",  # not 9464: a `make run` may be listening there
        }
        # `python -m app` until the block ends, ready once /readyz answers; always reaped (tests/servers.py).
        with process(["-m", "app"], f"{base}/readyz", env=env, timeout=60) as api:
            # Latency: a 60-part validation at parallelism 2.
            rows = "".join(f"row {i}: plain value\n" for i in range(600))
            vid = httpx.post(
                f"{base}/validations",
                headers=HEADERS,
                json={"documents": [{"name": "a.txt", "content": rows}], "rules": ["t"]},
            ).json()["id"]
            received: dict[int, float] = {}
            with httpx.stream("GET", f"{base}/validations/{vid}/events", headers=HEADERS, timeout=300) as answer:
                for line in answer.iter_lines():
                    if line.startswith("id:"):
                        received[int(line[3:].strip())] = time.time()
                    if line.startswith("event: end"):
                        break
            db = aws_client("dynamodb", aws.endpoint_url)
            stored = db.query(
                TableName=f"{prefix}-events",
                KeyConditionExpression="validation_id = :v",
                ExpressionAttributeValues={":v": {"S": vid}},
            )["Items"]
            latencies = sorted(
                received[int(i["seq"]["N"])] - float(i["at"]["S"]) for i in stored if int(i["seq"]["N"]) in received
            )

            # Memory: 1,000 idle streams on a validation whose model calls take minutes.
            simulator.reconfigure(latency_seconds=120)
            idle = httpx.post(
                f"{base}/validations",
                headers=HEADERS,
                json={"documents": [{"name": "b.txt", "content": "row\n"}], "rules": ["t"]},
            ).json()["id"]
            time.sleep(1)
            before = rss_kib(api.pid)
            hold = asyncio.Event()
            peak: dict[str, int] = {}

            async def measure() -> None:
                task = asyncio.create_task(open_idle_streams(base, idle, STREAMS, hold))
                while not hold.is_set():
                    await asyncio.sleep(0.5)
                    peak["rss"] = max(peak.get("rss", 0), rss_kib(api.pid))
                await task

            asyncio.run(measure())
            httpx.delete(f"{base}/validations/{idle}", headers=HEADERS, timeout=30)

    p50, p99 = (
        statistics.median(latencies),
        latencies[int(len(latencies) * 0.99) - 1] if len(latencies) > 1 else latencies[0],
    )
    print("\n## Server-sent events (`bench/events.py`)")
    print("| measure | value | ratio |")
    print("|---|---:|---:|")
    print(f"| RSS per idle open stream ({STREAMS} streams) | {(peak['rss'] - before) / STREAMS:.1f} KiB | — |")
    latency = f"delivery latency p50 (event stored → received), {len(latencies)} events"
    print(f"| {latency} | {p50 * 1000:.0f} ms | {p50 / POLL_SECONDS:.2f} × poll interval |")
    print(f"| delivery latency p99 | {p99 * 1000:.0f} ms | {p99 / POLL_SECONDS:.2f} × poll interval |")


if __name__ == "__main__":
    main()

"""Hostile clients against the API process: its peak memory, and /healthz latency meanwhile.

The API runs as its own process (`python -m app`, pointed at an embedded AWS and a
simulator in this process) so its RSS is its own; the peak is the kernel's high-water
mark (`VmHWM`, reset through `/proc/<pid>/clear_refs` before each scenario; sampled
every 20 ms where the reset is not allowed). Scenarios, each with 4 concurrent clients:

- maximum-size uploads: multipart, `max_request_bytes` of text lines in 10 files each,
  by the bootstrap admin (no quota, so each is read, split, tokenized and stored; each
  validation is cancelled as soon as it is accepted);
- 1 GB chunked bodies, authenticated (refused 413 once past `max_request_bytes`) and
  anonymous (refused 401 before a byte is read).

Baselines from the same run: the API's RSS before each scenario, and /healthz p99 on the
idle API (one client, sequential requests); during a scenario the same client measures
p99 again. `BENCH_MAX_REQUEST_MIB` sets the size (default 50, the product's default).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from local.aws.server import EmbeddedAWS
from local.simulator.app import SimulatorConfig
from local.simulator.server import SimulatorServer
from tests.servers import free_port, process

CLIENTS = 4
GIB = 1024**3
MIB = 1024**2
ADMIN_KEY = "bench"
HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


class PeakRss:
    """The process's peak RSS over a block: the kernel's high-water mark when it can be reset, else sampled."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.sampled = 0
        self._task: asyncio.Task[None] | None = None
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as refs:
                refs.write("5")  # resets VmHWM to the current RSS
            self.exact = True
        except OSError:
            self.exact = False

    async def _sample(self) -> None:
        while True:
            self.sampled = max(self.sampled, rss_kib(self.pid))
            await asyncio.sleep(0.02)

    async def __aenter__(self) -> PeakRss:
        self.before = rss_kib(self.pid)
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.peak = max(self.sampled, rss_kib(self.pid, "VmHWM") if self.exact else 0)

    @property
    def growth_bytes(self) -> int:
        return (self.peak - self.before) * 1024


async def healthz_latencies(base: str, stop: asyncio.Event, count: int | None = None) -> list[float]:
    """Sequential GET /healthz on one keep-alive connection until `stop` (or `count` requests)."""
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        while not stop.is_set() and (count is None or len(latencies) < count):
            start = time.perf_counter()
            answer = await client.get("/healthz")
            latencies.append(time.perf_counter() - start)
            assert answer.status_code == 200
            if count is None:
                await asyncio.sleep(0.01)
    return latencies


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98] if len(latencies) >= 2 else latencies[0]


def chunked_post(base: str, path: str, total: int, headers: dict[str, str]) -> tuple[int, int]:
    """POST up to `total` bytes with Transfer-Encoding: chunked over a blocking socket, stopping
    as soon as the server answers (as curl does); (status, bytes sent)."""
    host, port = base.removeprefix("http://").split(":")
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    part = b'{"documents": [{"name": "a.txt", "content": "' + b"x" * (MIB - 64)
    framed = f"{len(part):x}\r\n".encode() + part + b"\r\n"
    sent = 0
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Transfer-Encoding: chunked\r\n{head}\r\n".encode()
        )
        with contextlib.suppress(OSError):  # the server answered and closed
            while sent < total and not select.select([sock], [], [], 0)[0]:
                sock.sendall(framed)
                sent += len(part)
        answer = b""
        sock.settimeout(120)
        with contextlib.suppress(OSError):
            while b"\r\n" not in answer and (more := sock.recv(65536)):
                answer += more
    return (int(answer.split()[1]) if answer.startswith(b"HTTP/") else 0), sent


def text_file(size: int, seed: int) -> bytes:
    line = f"row {seed}: a plain line of text with a few words in it, value {seed * 7}\n".encode()
    return (line * (size // len(line) + 1))[:size]


async def max_size_upload(base: str, max_request_bytes: int, seed: int) -> tuple[int, int]:
    size = max_request_bytes // 10
    files = [("files", (f"f{seed}-{i}.txt", text_file(size, seed * 10 + i), "text/plain")) for i in range(10)]
    async with httpx.AsyncClient(base_url=base, headers=HEADERS, timeout=600) as client:
        answer = await client.post("/validations", files=files, data={"rules": '["be tidy"]'})
        if answer.status_code == 202:
            await client.delete(f"/validations/{answer.json()['id']}")
    return answer.status_code, max_request_bytes


@dataclass
class Row:
    scenario: str
    statuses: list[int]
    growth: int
    p99: float


async def scenario(name: str, pid: int, base: str, run: Callable[[int], Awaitable[tuple[int, int]]]) -> Row:
    await asyncio.sleep(1)  # let the previous scenario's memory settle
    stop = asyncio.Event()
    async with PeakRss(pid) as peak:
        probe = asyncio.create_task(healthz_latencies(base, stop))
        results = await asyncio.gather(*(run(i) for i in range(CLIENTS)))
        stop.set()
        latencies = await probe
    return Row(name, sorted(status for status, _ in results), peak.growth_bytes, p99(latencies))


def main() -> None:
    max_request_mib = int(os.environ.get("BENCH_MAX_REQUEST_MIB", "50"))
    max_request_bytes = max_request_mib * MIB
    with EmbeddedAWS() as aws, SimulatorServer(SimulatorConfig(latency_seconds=0.05)) as simulator:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "PORT": str(port),
            "AWS_ENDPOINT_URL": aws.endpoint_url,
            "ADMIN_API_KEY": ADMIN_KEY,
            "NAME_PREFIX": f"ho{uuid.uuid4().hex[:6]}",
            "OPENAI_BASE_URL": simulator.base_url,
            "MAX_REQUEST_BYTES": str(max_request_bytes),
            "MAX_FILE_BYTES": str(max_request_bytes // 10),
        }
        # `python -m app` until the block ends, ready once /readyz answers; always reaped (tests/servers.py).
        with process(["-m", "app"], f"{base}/readyz", env=env, timeout=120) as api:

            async def run() -> tuple[float, list[Row]]:
                await max_size_upload(base, MIB, 99)  # warm up: the tokenizer, the clients, one validation
                idle = p99(await healthz_latencies(base, asyncio.Event(), count=500))
                rows = [
                    await scenario(
                        f"4 × max-size upload ({max_request_mib} MiB, multipart, 10 files)",
                        api.pid,
                        base,
                        lambda i: max_size_upload(base, max_request_bytes, i),
                    ),
                    await scenario(
                        "4 × 1 GB chunked, authenticated",
                        api.pid,
                        base,
                        lambda i: asyncio.to_thread(chunked_post, base, "/validations", GIB, HEADERS),
                    ),
                    await scenario(
                        "4 × 1 GB chunked, anonymous",
                        api.pid,
                        base,
                        lambda i: asyncio.to_thread(chunked_post, base, "/validations", GIB, {}),
                    ),
                ]
                return idle, rows

            idle, rows = asyncio.run(run())

    print(f"\n## Hostile clients (`bench/hostile.py`), max_request_bytes = {max_request_mib} MiB")
    print(f"/healthz p99 on the idle API (baseline): {idle * 1000:.1f} ms")
    print("| scenario | answers | API peak RSS growth | ÷ max_request_bytes | /healthz p99 | ÷ idle p99 |")
    print("|---|---|---:|---:|---:|---:|")
    for row in rows:
        answers = ", ".join(f"{s}×{row.statuses.count(s)}" for s in sorted(set(row.statuses)))
        print(
            f"| {row.scenario} | {answers} | {row.growth / MIB:.1f} MiB | {row.growth / max_request_bytes:.2f} "
            f"| {row.p99 * 1000:.1f} ms | {row.p99 / idle:.2f} |"
        )


if __name__ == "__main__":
    main()

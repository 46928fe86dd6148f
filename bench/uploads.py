"""Uploads straight to S3: the API's latency and memory while large files go past it, and what
planning a 1 GiB log file asks of Lambda and Step Functions.

1. The API as its own process (`python -m app`), pointed at the embedded AWS in another
   process of its own (`python -m local.aws`), so S3's work shares neither the API's GIL nor
   this process's, as on AWS. Scenarios of 4 concurrent clients, each a process of its own
   (their sending shares no GIL with the /healthz probe either):
   - straight to S3: `POST /uploads` for a `BENCH_UPLOAD_GIB` log file, every part PUT to its
     presigned URL streaming from the generated file on disk (1 MiB at a time), then
     `POST /uploads/{id}/complete`. The embedded S3 joins a multipart upload in memory (two
     copies of the object), so the clients complete one at a time; on AWS, S3 joins it.
   - inline, side by side: `max_request_bytes` (`BENCH_MAX_REQUEST_MIB`, default 50) in one
     multipart form, bench/hostile.py's maximum-size submission.
   Measured as bench/hostile.py measures (its helpers): the API's peak RSS growth (the kernel's
   high-water mark, reset before each scenario) and /healthz p99 during the scenario ÷ p99 on
   the idle API, in the same run and placement; beside it a bare Starlette /healthz, a process
   of its own, probed the same way over the same time (what this machine's scheduling alone
   does to a latency). The inline clients are processes of their own too. Both scenarios run
   in two placements of the processes on the CPUs:
   - shared: every process on every CPU, the embedded AWS and the clients at nice
     `BENCH_LOAD_NICE` (default 19; 0 puts them on equal terms);
   - isolated (two CPUs or more): the API, the bare control and this process's probes on the
     first CPU at nice -10 (a CPU of the API's own, as its task has on AWS, where neither S3 nor
     the clients run beside it), the embedded AWS and the clients on the others.
   Then two small validations of uploaded files (by a user with the default quota, a Map as
   wide as their parts) run through the embedded engine, simulator answering, and the
   difference between their histories gives the events one Map item adds; a third, with the
   control function's `INLINE_MAP_MAX_ITEMS` and `PARTS_PER_ITEM` at 1, goes through the
   Distributed Map and gives the parent's events.
2. The same log file planned as `PlanFile` plans a line-oriented upload (bench/plan_ranges.py:
   in ranges, in a process of its own), no part validated: its parts, invocations, seconds and
   peak RSS, then what its validation takes on the Distributed Map (`core/part_ranges.shape`
   at the default and the highest max-parallelism: items, manifest, state, a child's history,
   hours of calls) and in the combine step's rounds, against Step Functions' and Lambda's limits.

`BENCH_ONLY=latency` runs the placements' table alone (no history, no plan).

Temporary files (the log file, the embedded S3's spooled objects) live in one temporary
directory, removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing.synchronize import Lock
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.settings import Settings
from bench import aws_client, set_parameters, stack_settings
from bench.hostile import CLIENTS, GIB, HEADERS, MIB, PeakRss, Row, healthz_latencies, max_size_upload, p99, scenario
from core import headroom, part_ranges, planning
from lambdas.common.config import LambdaConfig
from lambdas.plan_files.handler import _routes as planned_state  # what `Planned` answers: the state from then on
from local.aws.provision import load_resources
from local.simulator.app import SimulatorConfig
from local.simulator.server import SimulatorServer
from tests.servers import free_port, process

RULES = ["No line contains a password"]
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
# Step Functions' quotas (standard workflows).
STATE_BYTES = 256 * 1024  # an execution's input, a state's input or output
HISTORY_EVENTS = 25_000
API_NICE = -10  # the API's own CPU, in the isolated placement
DEFAULT_QUOTA_CAPACITY = 1_000_000  # tokens: a user's default quota capacity (docs/guide/uploads.md)
# The Lambdas' settings as deployed by default (the names play no part here).
LAMBDA_DEFAULTS = LambdaConfig(validations_table="", parts_table="", uploads_bucket="")


# --- a realistic log file ----------------------------------------------------------------------

_PATHS = ["orders", "customers", "invoices", "carts", "products", "sessions", "shipments"]
_AGENTS = ["Mozilla/5.0 (X11; Linux x86_64)", "okhttp/4.12.0", "python-httpx/0.27.0", "curl/8.5.0"]
_TRACE = [
    "Traceback (most recent call last):",
    '  File "/srv/app/worker/jobs.py", line 214, in run',
    "    result = handler(payload)",
    '  File "/srv/app/payments/client.py", line 88, in charge',
    "    response = self.session.post(url, json=body, timeout=30)",
]


def log_lines(seed: int) -> Iterator[str]:
    """An application's log: access lines, queries, cache, sign-ins, retries and the odd traceback."""
    rng = random.Random(seed)
    ms = 12 * 3_600_000
    while True:
        ms += rng.randrange(1, 40)
        s, milli = divmod(ms, 1000)
        ts = f"2026-03-14T{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}.{milli:03d}Z"
        pick = rng.random()
        request = f"{rng.getrandbits(48):012x}"
        if pick < 0.55:
            status = rng.choice((200, 200, 200, 201, 204, 304, 400, 404, 500))
            yield (
                f"{ts} INFO  http.access [req={request}] {rng.choice(('GET', 'GET', 'POST', 'PUT'))} "
                f"/api/v1/{rng.choice(_PATHS)}/{rng.randrange(100_000)} {status} {rng.randrange(1, 900)}ms "
                f"user=u-{rng.randrange(10_000)} ip=10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)} "
                f'ua="{rng.choice(_AGENTS)}"\n'
            )
        elif pick < 0.75:
            yield (
                f'{ts} DEBUG db.pool [req={request}] query="SELECT id, status, total FROM orders WHERE '
                f'customer_id = $1 LIMIT 50" rows={rng.randrange(50)} took={rng.randrange(1, 300)}ms '
                f"conn={rng.randrange(20)}\n"
            )
        elif pick < 0.88:
            yield (
                f"{ts} INFO  cache.redis {rng.choice(('hit', 'hit', 'miss'))} key=session:{rng.getrandbits(64):016x} "
                f"ttl={rng.randrange(60, 3600)}s\n"
            )
        elif pick < 0.95:
            yield (
                f"{ts} INFO  auth.login user user{rng.randrange(10_000)}@example.com signed in from "
                f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)} (mfa={rng.random() < 0.7})\n"
            )
        elif pick < 0.995:
            yield (
                f"{ts} WARN  payments.client [req={request}] retrying charge for order {rng.randrange(100_000)}: "
                f"upstream answered 503 (attempt {rng.randrange(1, 4)}/3)\n"
            )
        else:
            error = f"TimeoutError: read timed out after {rng.choice((10, 30, 60))}s"
            yield f"{ts} ERROR worker.jobs job {rng.getrandbits(32):08x} failed: {error}\n"
            yield from (line + "\n" for line in _TRACE)
            yield error + "\n"


def write_log(path: Path, size: int, seed: int = 1) -> None:
    """`size` bytes of log lines (the last one cut at the size)."""
    lines = log_lines(seed)
    written = 0
    with path.open("wb") as file:
        while written < size:
            chunk = "".join(next(lines) for _ in range(20_000)).encode()[: size - written]
            file.write(chunk)
            written += len(chunk)


# --- one client uploading straight to S3 (run in a process of its own) --------------------------

_complete_lock: Lock | None = None


def _worker_init(lock: Lock, nice: int, started: multiprocessing.Queue[int]) -> None:
    global _complete_lock
    _complete_lock = lock
    os.nice(nice)  # a client: on AWS it is not on the API's CPU
    started.put(os.getpid())


def _worker_ready() -> int:
    time.sleep(0.5)  # busy long enough that the pool starts a process for every warm-up call
    return os.getpid()


def _inline(base: str, max_request_bytes: int, seed: int) -> tuple[int, int]:
    """bench/hostile.py's maximum-size submission, from a client process of its own (its sending
    shares no GIL with the /healthz probe)."""
    return asyncio.run(max_size_upload(base, max_request_bytes, seed))


def place(pid: int, cpus: set[int], nice: int) -> None:
    """Every thread of a process on `cpus` at `nice` (on Linux both are a thread's; threads it
    starts later inherit them). A nice below 0 needs root: without it the nice is left as is."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), cpus)
            with contextlib.suppress(PermissionError):
                os.setpriority(os.PRIO_PROCESS, int(tid), nice)


def cpus_of(pid: int) -> str:
    with open(f"/proc/{pid}/status") as status:
        return next(line.split(":", 1)[1].strip() for line in status if line.startswith("Cpus_allowed_list"))


def _chunks(file: BinaryIO, offset: int, size: int) -> Iterator[bytes]:
    file.seek(offset)
    while size > 0:
        chunk = file.read(min(MIB, size))
        size -= len(chunk)
        yield chunk


def upload(base: str, path: str, name: str, auth: dict[str, str] = HEADERS) -> tuple[int, str]:
    """Declare `path` with `POST /uploads`, PUT its bytes to the presigned URL(s), complete it:
    (the complete call's status, the upload id)."""
    size = os.path.getsize(path)
    # Presigned URLs carry their own authorization: the S3 client sends no API key.
    with httpx.Client(base_url=base, headers=auth, timeout=600) as api, httpx.Client(timeout=600) as s3:
        declared = api.post("/uploads", json={"files": [{"name": name, "size": size}]})
        declared.raise_for_status()
        ticket = declared.json()["uploads"][0]
        parts: list[dict[str, Any]] = []
        with open(path, "rb") as file:
            if ticket["kind"] == "single":
                headers = {**ticket["headers"], "Content-Length": str(size)}
                s3.put(ticket["url"], content=_chunks(file, 0, size), headers=headers).raise_for_status()
            offset = 0
            for part in ticket.get("parts", []):
                headers = {"Content-Length": str(part["size"])}
                answer = s3.put(part["url"], content=_chunks(file, offset, part["size"]), headers=headers)
                answer.raise_for_status()
                parts.append({"number": part["number"], "etag": answer.headers["ETag"]})
                offset += part["size"]
        with _complete_lock or contextlib.nullcontext():
            done = api.post(f"/uploads/{ticket['upload_id']}/complete", json={"parts": parts} if parts else None)
    return done.status_code, str(ticket["upload_id"])


# --- 1. the API under uploads, against the inline path ----------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve_bare(port: int) -> None:
    """A bare Starlette /healthz under uvicorn, as a process of its own: the control that says how
    much of the API's latency under load is this machine's scheduling, not the API's work."""

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    uvicorn.run(Starlette(routes=[Route("/healthz", healthz)]), host="127.0.0.1", port=port, log_level="warning")


@dataclass
class Measured:
    row: Row
    seconds: float  # first client's start to last client's end
    api_cpu: float
    aws_cpu: float
    aws_growth: int
    bare_p99: float  # the bare process's /healthz p99 over the same time


async def measured(
    name: str,
    api_pid: int,
    aws_pid: int,
    base: str,
    bare: str,
    client: Callable[[int], Awaitable[tuple[int, int]]],
) -> Measured:
    """bench/hostile.py's scenario, plus its wall time, both processes' CPU, the AWS process's
    peak, and the bare process's /healthz p99 while the clients run."""
    spans: list[tuple[float, float]] = []
    stop = asyncio.Event()
    probes: list[asyncio.Task[list[float]]] = []

    async def timed(i: int) -> tuple[int, int]:
        if not probes:  # the first client starts: so does the bare process's probe
            probes.append(asyncio.create_task(healthz_latencies(bare, stop)))
        start = time.perf_counter()
        answer = await client(i)
        spans.append((start, time.perf_counter()))
        if len(spans) == CLIENTS:
            stop.set()
        return answer

    api_cpu, aws_cpu = cpu_seconds(api_pid), cpu_seconds(aws_pid)
    async with PeakRss(aws_pid) as aws_peak:
        row = await scenario(name, api_pid, base, timed)
    return Measured(
        row,
        max(end for _, end in spans) - min(start for start, _ in spans),
        cpu_seconds(api_pid) - api_cpu,
        cpu_seconds(aws_pid) - aws_cpu,
        aws_peak.growth_bytes,
        p99(await probes[0]),
    )


@dataclass
class History:
    """Events of two validations of one uploaded multi-part file each through the inline Map,
    differing only in their parts' Map items (what one item adds, and the rest: plan step,
    combine step, the states), and of the larger one through the Distributed Map (the parent's)."""

    items: tuple[int, int]
    events: tuple[int, int]
    item_types: list[str]
    failed: int  # Task attempts that failed (retries): none expected
    distributed_parent: int  # the parent execution's events on the distributed path

    @property
    def per_item(self) -> float:
        return (self.events[1] - self.events[0]) / (self.items[1] - self.items[0])


def history(settings: Settings, base: str, tmp: Path) -> History:
    """Two small uploaded log files validated through the embedded engine, then a larger one with
    the control function's `INLINE_MAP_MAX_ITEMS` and `PARTS_PER_ITEM` at 1 (the Distributed
    Map); their histories compared."""
    sizes = (12 * 1024, 36 * 1024)
    items, counts = [], []
    endpoint = str(settings.aws_endpoint_url)
    sfn, lam = aws_client("stepfunctions", endpoint), aws_client("lambda", endpoint)
    machine = next(
        m["stateMachineArn"]
        for m in sfn.list_state_machines()["stateMachines"]
        if m["name"] == settings.state_machine_name
    )
    with httpx.Client(base_url=base, headers=HEADERS, timeout=60) as admin:
        # A user with the default quota: the bootstrap admin has none, and its validations of
        # uploaded files end without a final status (the plan step's transaction expects QUEUED).
        key = admin.post("/admin/users", json={"user_id": "history"}).json()["api_key"]
    auth = {"Authorization": f"Bearer {key}"}
    # A Map as wide as the items, one part an item: the items differ as the parts do.
    set_parameters(settings, {"max-parallelism": headroom.MAP_LIMIT})

    def validate(api: httpx.Client, path: Path) -> tuple[int, Counter[str]]:
        status, upload_id = upload(base, str(path), path.name, auth)
        assert status == 200, status
        created = api.post("/validations", json={"rules": RULES, "uploads": [upload_id], "reuse": False})
        assert created.status_code == 202, created.text
        vid = created.json()["id"]
        deadline = time.monotonic() + 900
        while (v := api.get(f"/validations/{vid}").json())["status"] not in TERMINAL:
            assert time.monotonic() < deadline, f"validation {vid} still {v['status']}"
            time.sleep(0.3)
        assert v["status"] == "SUCCEEDED", v
        arn = f"{machine.replace(':stateMachine:', ':execution:', 1)}:{vid}"
        pages = sfn.get_paginator("get_execution_history").paginate(executionArn=arn)
        return int(v["files"][0]["parts"]), Counter(e["type"] for page in pages for e in page["events"])

    with httpx.Client(base_url=base, headers=auth, timeout=60) as api:
        for n, size in enumerate(sizes):
            path = tmp / f"small-{n}.log"
            write_log(path, size, seed=10 + n)
            parts, events = validate(api, path)
            # The parts' Map items as the plan shaped them: every iteration but the plan step's (one
            # for the one file) and the combine step's (one for a multi-part file).
            items.append(events["MapIterationStarted"] - 1 - (parts > 1))
            counts.append(events)
        control = next(
            f for f in lam.list_functions()["Functions"] if f["FunctionName"] == f"{settings.name_prefix}-control"
        )
        variables = control["Environment"]["Variables"]
        lam.update_function_configuration(
            FunctionName=control["FunctionName"],
            Environment={"Variables": {**variables, "INLINE_MAP_MAX_ITEMS": "1", "PARTS_PER_ITEM": "1"}},
        )
        try:  # more parts than one item's calls at once (at most 10 here): more than one item
            large = tmp / "small-distributed.log"
            write_log(large, 96 * 1024, seed=12)
            _, distributed = validate(api, large)
        finally:
            restored = {"Variables": variables}
            lam.update_function_configuration(FunctionName=control["FunctionName"], Environment=restored)
    assert items[0] != items[1], items
    assert distributed["MapRunStarted"] == 1, distributed  # the Distributed Map ran
    fewer, more = sorted(range(2), key=lambda i: items[i])  # which validation had more Map items
    grew = counts[more] - counts[fewer]
    step = items[more] - items[fewer]
    return History(
        (items[fewer], items[more]),
        (sum(counts[fewer].values()), sum(counts[more].values())),
        [f"{kind} ×{n // step}" if n != step else kind for kind, n in sorted(grew.items(), key=lambda kv: kv[0])],
        sum(c["TaskFailed"] + c["LambdaFunctionFailed"] for c in (*counts, distributed)),
        sum(distributed.values()),
    )


@dataclass
class Pass:
    """The two scenarios with one placement of the processes on the CPUs."""

    placement: str
    idle: float
    bare_idle: float
    uploads: Measured
    inline: Measured


@dataclass
class LatencyRun:
    passes: list[Pass]
    history: History | None  # None with BENCH_ONLY=latency


def api_latency(log: Path, tmp: Path, max_request_bytes: int, load_nice: int, with_history: bool = True) -> LatencyRun:
    aws_port = free_port()
    endpoint = f"http://127.0.0.1:{aws_port}"
    spool = tmp / "aws"
    spool.mkdir()
    # The embedded S3 spools objects to files (moto): in our directory, removed with it.
    aws_env = {"TMPDIR": str(spool)}
    with (
        process(["-m", "local.aws", "--port", str(aws_port)], f"{endpoint}/moto-api/", env=aws_env) as aws,
        SimulatorServer(SimulatorConfig(latency_seconds=0.05)) as simulator,
    ):
        # S3 is not on the API's CPU on AWS: here the embedded AWS (and the clients) yield the CPU to
        # the API and the probes, so that the ratio measures the API's own work.
        os.setpriority(os.PRIO_PROCESS, aws.pid, load_nice)
        settings = stack_settings(endpoint, simulator.base_url, "up")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {
            "PORT": str(port),
            "METRICS_PORT": "0",
            "AWS_ENDPOINT_URL": endpoint,
            "ADMIN_API_KEY": "bench",
            "NAME_PREFIX": settings.name_prefix,
            "SSM_PREFIX": settings.ssm_prefix,
            "OPENAI_BASE_URL": simulator.base_url,
            "OPENAI_MODEL": settings.openai_model,
            "SFN_RETRY_INTERVAL_SECONDS": "1",
            "MAX_REQUEST_BYTES": str(max_request_bytes),
            "MAX_FILE_BYTES": str(max_request_bytes // 10),
        }
        spawn = multiprocessing.get_context("spawn")
        lock, started = spawn.Lock(), spawn.Queue()
        bare_port = free_port()
        bare = f"http://127.0.0.1:{bare_port}"
        with (
            process(["-m", "app"], f"{base}/readyz", env=env, timeout=120) as api,
            process(["-c", f"from bench.uploads import serve_bare; serve_bare({bare_port})"], f"{bare}/healthz") as ctl,
            ProcessPoolExecutor(CLIENTS, spawn, _worker_init, (lock, load_nice, started)) as pool,
        ):
            # The governor aims at the simulator's limit, as local mode sets it (the history's validations).
            set_parameters(settings, {"target-tpm": simulator.simulator.config.tpm})

            async def one_pass(placement: str) -> Pass:
                loop = asyncio.get_running_loop()
                idle = p99(await healthz_latencies(base, asyncio.Event(), count=500))
                bare_idle = p99(await healthz_latencies(bare, asyncio.Event(), count=500))

                async def straight(i: int) -> tuple[int, int]:
                    status, _ = await loop.run_in_executor(pool, upload, base, str(log), f"app-{i}.log")
                    return status, log.stat().st_size

                async def inline_client(i: int) -> tuple[int, int]:
                    return await loop.run_in_executor(pool, _inline, base, max_request_bytes, i)

                size = log.stat().st_size
                parts = max(1, math.ceil(size / Settings.model_fields["upload_part_bytes"].default))
                uploads = await measured(
                    f"{CLIENTS} × {size / GIB:g} GiB straight to S3 ({parts} part PUTs each)",
                    api.pid,
                    aws.pid,
                    base,
                    bare,
                    straight,
                )
                inline = await measured(
                    f"{CLIENTS} × {max_request_bytes / MIB:g} MiB inline (multipart form, 10 files)",
                    api.pid,
                    aws.pid,
                    base,
                    bare,
                    inline_client,
                )
                return Pass(placement, idle, bare_idle, uploads, inline)

            async def run() -> list[Pass]:
                loop = asyncio.get_running_loop()
                # Warm up: the client processes started, the API's first upload and submission.
                await asyncio.gather(*(loop.run_in_executor(pool, _worker_ready) for _ in range(CLIENTS)))
                clients = {started.get(timeout=60) for _ in range(CLIENTS)}  # each worker's pid, once started
                warm = tmp / "warm.log"
                write_log(warm, MIB)
                await loop.run_in_executor(pool, upload, base, str(warm), warm.name)
                await max_size_upload(base, MIB, 99)
                passes = [await one_pass("shared: every process on every CPU, the load at low priority")]
                cpus = sorted(os.sched_getaffinity(0))
                if len(cpus) >= 2:
                    # On AWS the API's task has a CPU of its own: S3 and the clients are elsewhere.
                    # Here the API, the bare control and this process (the probes) get the first
                    # CPU at a high priority (what else runs on this shared machine does not leave
                    # it), and the load (the embedded AWS, the clients) the others at nice 19.
                    api_cpus, rest = {cpus[0]}, set(cpus[1:])
                    for pid in (api.pid, ctl.pid, os.getpid()):
                        place(pid, api_cpus, API_NICE)
                    for pid in (aws.pid, *clients):
                        place(pid, rest, load_nice)
                    try:
                        passes.append(
                            await one_pass(
                                f"isolated: the API, the control and the probes on CPU {cpus_of(api.pid)} at nice "
                                f"{os.getpriority(os.PRIO_PROCESS, api.pid)}, the load on CPU {cpus_of(aws.pid)}"
                            )
                        )
                    finally:
                        for pid in (api.pid, ctl.pid, os.getpid()):
                            place(pid, set(cpus), 0)
                        for pid in (aws.pid, *clients):
                            place(pid, set(cpus), load_nice)
                return passes

            passes = asyncio.run(run())
            place(aws.pid, os.sched_getaffinity(0), 0)  # the history's validations are not a load
            events = history(settings, base, tmp) if with_history else None
    return LatencyRun(passes, events)


# --- 2. the 1 GiB log file planned ------------------------------------------------------------


@dataclass
class Planned:
    size: int
    lines: int
    parts: int
    estimate: int
    combine_calls: int
    seconds: float
    invocations: int
    longest_invocation: float
    peak_rss: float  # MiB, the planning process's high-water mark (interpreter and tokenizer included)


def plan_log(log: Path) -> Planned:
    """The log planned as `PlanFile` plans a line-oriented upload (bench/plan_ranges.py: ranged
    reads, a check pass then a split pass, as many invocations as the timeout needs), in a
    process of its own; the combine tree's calls as the plan step counts them."""
    from bench import plan_ranges  # it imports this module's log generator

    result = plan_ranges.run("ranges", log)
    rules = [{"id": f"r{i}", "text": r} for i, r in enumerate(RULES)]
    calls, _ = planning.combine_plan(log.name, result["parts"], rules, LAMBDA_DEFAULTS.part_max_tokens)
    return Planned(
        log.stat().st_size,
        int(result["last_line"]),
        int(result["parts"]),
        int(result["estimate"]),
        calls,
        float(result["seconds"]),
        int(result["invocations"]),
        float(result["longest_invocation_seconds"]),
        float(result["peak_rss_mib"]),
    )


@dataclass
class Limit:
    measure: str
    used: str
    limit: str = ""
    ratio: float | None = None


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")))


def limits(planned: Planned, events: History, call_seconds: float) -> list[Limit]:
    """What validating the planned file takes on the path the service gives it (planning in
    ranges, the Distributed Map, the combine step in rounds), against each limit."""
    resources = load_resources()
    functions = resources["functions"]
    config = LAMBDA_DEFAULTS
    plan_timeout, plan_memory = functions["plan_files"]["timeout"], functions["plan_files"]["memory"]
    rows = [
        Limit("file: bytes, lines", f"{planned.size:,} B, {planned.lines:,} lines"),
        Limit(
            f"plan in ranges: `PlanFile` invocations ({planned.seconds:.0f} s in all on this machine)",
            f"{planned.invocations}",
        ),
        Limit(
            "… the longest invocation",
            f"{planned.longest_invocation:.0f} s",
            f"{plan_timeout} s (plan_files timeout)",
            planned.longest_invocation / plan_timeout,
        ),
        Limit(
            "… peak RSS of the planning process (interpreter and tokenizer included)",
            f"{planned.peak_rss:,.0f} MiB",
            f"{plan_memory:,} MB (plan_files memory)",
            planned.peak_rss * MIB / (plan_memory * 10**6),
        ),
        Limit(f"parts (budget {config.part_max_tokens:,} tokens)", f"{planned.parts:,}"),
        Limit(
            "tokens reserved (parts and combine, prompt + completion)",
            f"{planned.estimate:,}",
            f"{DEFAULT_QUOTA_CAPACITY:,} (default quota capacity)",
            planned.estimate / DEFAULT_QUOTA_CAPACITY,
        ),
    ]
    # The execution's state once the file is planned (what `Planned` answers), then after `Plan`.
    files = [{"parts": planned.parts}]
    state = planned_state("0" * 32, 1, files)
    limit = f"{STATE_BYTES:,} B"
    rows.append(Limit("state from `Planned` on", f"{_json_bytes(state):,} B", limit, _json_bytes(state) / STATE_BYTES))
    timeout = functions["validate_part"]["timeout"]
    attempt = timeout - config.reserve_millis / 1000  # a validator answers `more` with this much left
    combine_timeout = functions["combine_file"]["timeout"]
    combine_attempt = combine_timeout - config.reserve_millis / 1000
    max_parallelism = int(resources["parameters"]["max-parallelism"])
    for parallelism in (max_parallelism, headroom.MAX_PARALLELISM):
        reach = max(parallelism, config.map_concurrency_ceiling)
        inline = headroom.shape(reach, len(state["batches"]), planned.parts, len(state["combine"]), parallelism)
        width, k = inline.map_concurrency, inline.calls_per_invocation
        shaped, items = part_ranges.shape(state["batches"], [planned.parts], width, k, config.parts_per_item)
        k, width = shaped.calls_per_invocation, shaped.map_concurrency
        after_plan = {
            **state,
            "plan": {
                "map_concurrency": width,
                "parallelism": parallelism,
                "calls_per_invocation": k,
                "batches": [],
                "distributed": True,
                "manifest": {"bucket": "validation-uploads", "key": f"validations/{'0' * 32}/map-items/run-1.json"},
            },
        }
        largest = max(part_ranges.count(items, [planned.parts]))
        item_input = {"validation_id": "0" * 32, "run": 1, "parts": items[0], "calls_per_invocation": k}
        item_seconds = math.ceil(largest / k) * call_seconds
        rounds = math.ceil(item_seconds / attempt)
        label = f"max-parallelism {parallelism} (reach {reach}): a Map {width} wide, {k} calls at once"
        rows += [
            Limit(f"**{label}**", ""),
            Limit(
                "… state after `Plan` (the manifest's key, no items)",
                f"{_json_bytes(after_plan):,} B",
                limit,
                _json_bytes(after_plan) / STATE_BYTES,
            ),
            Limit(
                f"… Distributed Map items (`core/part_ranges.shape`), ≤ {largest} parts each",
                f"{len(items):,}",
                "none binds (Distributed Map)",
            ),
            Limit("… the manifest in S3", f"{_json_bytes(items):,} B"),
            Limit("… one item's input", f"{_json_bytes(item_input)} B", limit, _json_bytes(item_input) / STATE_BYTES),
            Limit(
                f"… one item: ⌈{largest} ÷ {k}⌉ calls of {call_seconds:g} s",
                f"{item_seconds:,.0f} s",
                f"{attempt:.0f} s (validate_part's {timeout} s less the reserve)",
                item_seconds / attempt,
            ),
            Limit(
                f"… a child's history ({events.per_item:g} events a round, measured inline, + its start and end)",
                f"{events.per_item * rounds + 2:,.0f}",
                f"{HISTORY_EVENTS:,}",
                (events.per_item * rounds + 2) / HISTORY_EVENTS,
            ),
            Limit(
                f"… the parts: {planned.parts:,} calls, {width * k} at once",
                f"{math.ceil(planned.parts / (width * k)) * call_seconds / 3600:,.1f} h",
            ),
        ]
        # The combine step: the file's one item, in rounds of one invocation (CombineMore), each
        # level's calls k at a time (the invocation is the combine Map's only one: k workers).
        combine_rounds = math.ceil(planned.combine_calls * call_seconds / k / combine_attempt)
        parent = events.distributed_parent + combine_rounds * events.per_item
        rows += [
            Limit(
                f"… combine step: {planned.combine_calls:,} calls, {k} at once, {call_seconds:g} s a call",
                f"{planned.combine_calls * call_seconds / k / 3600:,.1f} h in {combine_rounds:,} rounds "
                f"of {combine_attempt:.0f} s",
            ),
            Limit(
                f"… the parent's history ({events.distributed_parent} measured on the distributed path, "
                f"+ {events.per_item:g} a combine round)",
                f"{parent:,.0f}",
                f"{HISTORY_EVENTS:,}",
                parent / HISTORY_EVENTS,
            ),
        ]
    return rows


# --- the tables --------------------------------------------------------------------------------


def _goal(met: bool) -> str:
    return "met" if met else "**missed**"


def latency_table(run: LatencyRun, max_request_bytes: int) -> list[str]:
    def answers(row: Row) -> str:
        return ", ".join(f"{s} × {row.statuses.count(s)}" for s in sorted(set(row.statuses)))

    lines = [
        "| placement | scenario | answers | seconds | API CPU s | API peak RSS growth | goal | `/healthz` p99 "
        "| ÷ idle p99 | goal | bare process: p99 ÷ its idle p99 |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---|---:|",
    ]
    for run_pass in run.passes:
        placement = run_pass.placement.split(":", 1)[0]
        lines.append(
            f"| {placement} | idle (baseline) | | | | | | {run_pass.idle * 1000:.1f} ms | 1.00 | "
            f"| {run_pass.bare_idle * 1000:.1f} ms: 1.00 |"
        )
        for m, rss_limit, rss_goal in (
            (run_pass.uploads, 16 * MIB, "≤ 16 MiB"),
            (run_pass.inline, 2 * max_request_bytes, "≤ 2 × `max_request_bytes`"),
        ):
            ratio = m.row.p99 / run_pass.idle
            lines.append(
                f"| {placement} | {m.row.scenario} | {answers(m.row)} | {m.seconds:.1f} | {m.api_cpu:.1f} "
                f"| {m.row.growth / MIB:.1f} MiB | {rss_goal}: {_goal(m.row.growth <= rss_limit)} "
                f"| {m.row.p99 * 1000:.1f} ms | {ratio:.2f} | ≤ 3: {_goal(ratio <= 3)} "
                f"| {m.bare_p99 * 1000:.1f} ms: {m.bare_p99 / run_pass.bare_idle:.2f} |"
            )
    return lines


def main() -> None:
    upload_gib = float(os.environ.get("BENCH_UPLOAD_GIB", "1"))
    max_request_mib = int(os.environ.get("BENCH_MAX_REQUEST_MIB", "50"))
    call_seconds = float(os.environ.get("BENCH_CALL_SECONDS", "2"))
    load_nice = int(os.environ.get("BENCH_LOAD_NICE", "19"))  # 0: the load competes with the API as equals
    only_latency = os.environ.get("BENCH_ONLY") == "latency"  # the placements' table alone
    max_request_bytes = max_request_mib * MIB
    load = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench-uploads-"))
    try:
        log = tmp / "app.log"
        started = time.perf_counter()
        write_log(log, int(upload_gib * GIB))
        generated, log_size = time.perf_counter() - started, log.stat().st_size
        run = api_latency(log, tmp, max_request_bytes, load_nice, with_history=not only_latency)
        planned = None if only_latency else plan_log(log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    machine = f"{os.cpu_count()} cores, {_cpu_model()}, load average {load:.1f} before, {os.getloadavg()[0]:.1f} after"

    print(f"\n## Uploads (`bench/uploads.py`): {machine}; log file generated in {generated:.0f} s")
    print(
        f"{CLIENTS} clients at once, max_request_bytes = {max_request_mib} MiB; the embedded AWS and the "
        f"clients at nice {load_nice}"
    )
    for run_pass in run.passes:
        print(f"- {run_pass.placement}")
    print("\n".join(latency_table(run, max_request_bytes)))
    for run_pass in run.passes:
        up, inline = run_pass.uploads, run_pass.inline
        print(
            f"\n{run_pass.placement.split(':', 1)[0]}: straight to S3 "
            f"{CLIENTS * log_size / MIB / up.seconds:,.0f} MiB/s in all; the embedded AWS process used "
            f"{up.aws_cpu:.1f} CPU s and grew {up.aws_growth / MIB:,.0f} MiB at its peak "
            f"(inline: {inline.aws_cpu:.1f} CPU s, {inline.aws_growth / MIB:,.0f} MiB)"
        )
    h = run.history
    if h is None or planned is None:
        return
    print(
        f"\nhistory: {h.events[0]} and {h.events[1]} events for {h.items[0]} and {h.items[1]} inline Map items "
        f"(failed attempts: {h.failed}); one Map item adds {h.per_item:g}: {', '.join(h.item_types)}; "
        f"the larger through the Distributed Map: {h.distributed_parent} events in the parent"
    )
    print(f"\nA {planned.size / GIB:g} GiB log file planned; {call_seconds:g} s a model call")
    print("| measure | used | limit | used ÷ limit | fits |")
    print("|---|---:|---:|---:|---|")
    for row in limits(planned, h, call_seconds):
        ratio, fits = ("", "") if row.ratio is None else (f"{row.ratio:.2f}", "yes" if row.ratio <= 1 else "**no**")
        print(f"| {row.measure} | {row.used} | {row.limit} | {ratio} | {fits} |")


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as info:
        return next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "unknown CPU")


if __name__ == "__main__":
    main()

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
   the idle API, in the same run; beside it a bare Starlette /healthz, a process of its own,
   probed the same way over the same time (what this machine's scheduling alone does to a
   latency). The embedded AWS and the client processes run at nice `BENCH_LOAD_NICE` (default
   19): on AWS neither S3 nor the clients share the API's CPU, and at the lowest priority here
   they take only what the API and the probes leave, so the ratio is the API's own work (0 puts
   them on equal terms, the machine's contention included). Then two small validations of
   uploaded files (by a user with the default quota) run through the embedded engine, simulator
   answering, and the difference between their histories gives the events one Map item adds.
2. The same log file planned in this process with the plan step's code (core/text.check, then
   core/planning.plan_file with the default part budget and completion allowance, as
   lambdas/plan_files runs them), no part validated: its parts, seconds and peak RSS, and what
   the validation would need against Step Functions' and Lambda's limits.

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
from core import headroom, text
from core.planning import plan_file
from core.records import MAX_MAP_ITEMS, batches
from lambdas.common.config import LambdaConfig
from lambdas.plan_files.handler import _routes as planned_state  # what `Planned` answers: the state from then on
from local.aws.provision import load_resources
from local.simulator.app import SimulatorConfig
from local.simulator.server import SimulatorServer
from tests.servers import free_port, process

RULES = ["No line contains a password"]
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
# Step Functions' quotas (standard workflows) and Lambda's longest timeout.
STATE_BYTES = 256 * 1024  # an execution's input, a state's input or output
HISTORY_EVENTS = 25_000
LAMBDA_MAX_SECONDS = 900
DEFAULT_QUOTA_CAPACITY = 1_000_000  # tokens: a user's default quota capacity (docs/guide/uploads.md)
RETRY_EVENTS = 3  # a Task retried: TaskFailed, then TaskScheduled and TaskStarted again
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


def _worker_init(lock: Lock, nice: int) -> None:
    global _complete_lock
    _complete_lock = lock
    os.nice(nice)  # a client: on AWS it is not on the API's CPU


def _worker_ready() -> int:
    time.sleep(0.5)  # busy long enough that the pool starts a process for every warm-up call
    return os.getpid()


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
    """Events of two validations of one uploaded multi-part file each, differing only in their
    parts' Map items: what one item adds, and the rest (plan step, combine step, the states)."""

    items: tuple[int, int]
    events: tuple[int, int]
    item_types: list[str]
    failed: int  # Task attempts that failed (retries): none expected

    @property
    def per_item(self) -> float:
        return (self.events[1] - self.events[0]) / (self.items[1] - self.items[0])

    @property
    def fixed(self) -> float:
        return self.events[0] - self.per_item * self.items[0]


def history(settings: Settings, base: str, tmp: Path) -> History:
    """Two small uploaded log files validated through the embedded engine; their histories compared."""
    sizes = (6 * 1024, 18 * 1024)
    items, counts = [], []
    sfn = aws_client("stepfunctions", str(settings.aws_endpoint_url))
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
    with httpx.Client(base_url=base, headers=auth, timeout=60) as api:
        for n, size in enumerate(sizes):
            path = tmp / f"small-{n}.log"
            write_log(path, size, seed=10 + n)
            status, upload_id = upload(base, str(path), path.name, auth)
            assert status == 200, status
            created = api.post("/validations", json={"rules": RULES, "uploads": [upload_id], "reuse": False})
            assert created.status_code == 202, created.text
            vid = created.json()["id"]
            deadline = time.monotonic() + 300
            while (v := api.get(f"/validations/{vid}").json())["status"] not in TERMINAL:
                assert time.monotonic() < deadline, f"validation {vid} still {v['status']}"
                time.sleep(0.3)
            assert v["status"] == "SUCCEEDED", v
            parts = int(v["files"][0]["parts"])
            items.append(len(batches([f"{i:06d}" for i in range(parts)])))
            arn = f"{machine.replace(':stateMachine:', ':execution:', 1)}:{vid}"
            pages = sfn.get_paginator("get_execution_history").paginate(executionArn=arn)
            counts.append(Counter(e["type"] for page in pages for e in page["events"]))
    assert items[0] != items[1], items
    grew = counts[1] - counts[0]
    step = items[1] - items[0]
    return History(
        (items[0], items[1]),
        (sum(counts[0].values()), sum(counts[1].values())),
        [f"{kind} ×{n // step}" if n != step else kind for kind, n in sorted(grew.items(), key=lambda kv: kv[0])],
        sum(c["TaskFailed"] + c["LambdaFunctionFailed"] for c in counts),
    )


@dataclass
class LatencyRun:
    idle: float
    bare_idle: float
    uploads: Measured
    inline: Measured
    history: History


def api_latency(log: Path, tmp: Path, max_request_bytes: int, load_nice: int) -> LatencyRun:
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
        lock = multiprocessing.get_context("spawn").Lock()
        bare_port = free_port()
        bare = f"http://127.0.0.1:{bare_port}"
        with (
            process(["-m", "app"], f"{base}/readyz", env=env, timeout=120) as api,
            process(["-c", f"from bench.uploads import serve_bare; serve_bare({bare_port})"], f"{bare}/healthz"),
            ProcessPoolExecutor(CLIENTS, multiprocessing.get_context("spawn"), _worker_init, (lock, load_nice)) as pool,
        ):
            # The governor aims at the simulator's limit, as local mode sets it (the history's validations).
            set_parameters(settings, {"target-tpm": simulator.simulator.config.tpm})

            async def run() -> tuple[float, float, Measured, Measured]:
                loop = asyncio.get_running_loop()
                # Warm up: the client processes started, the API's first upload and submission.
                await asyncio.gather(*(loop.run_in_executor(pool, _worker_ready) for _ in range(CLIENTS)))
                warm = tmp / "warm.log"
                write_log(warm, MIB)
                await loop.run_in_executor(pool, upload, base, str(warm), warm.name)
                await max_size_upload(base, MIB, 99)
                idle = p99(await healthz_latencies(base, asyncio.Event(), count=500))
                bare_idle = p99(await healthz_latencies(bare, asyncio.Event(), count=500))

                async def straight(i: int) -> tuple[int, int]:
                    status, _ = await loop.run_in_executor(pool, upload, base, str(log), f"app-{i}.log")
                    return status, log.stat().st_size

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
                    lambda i: max_size_upload(base, max_request_bytes, i),
                )
                return idle, bare_idle, uploads, inline

            idle, bare_idle, uploads, inline = asyncio.run(run())
            events = history(settings, base, tmp)
    return LatencyRun(idle, bare_idle, uploads, inline, events)


# --- 2. the 1 GiB log file planned ------------------------------------------------------------


@dataclass
class Planned:
    size: int
    lines: int
    parts: int
    estimate: int
    combine_calls: int
    check_seconds: float
    plan_seconds: float
    peak_growth: int  # the file's bytes included, as the Lambda holds them
    part_ids: list[str]


async def plan_log(log: Path) -> Planned:
    config = LAMBDA_DEFAULTS
    async with PeakRss(os.getpid()) as peak:  # from before the file is read: its bytes count
        content = await asyncio.to_thread(log.read_bytes)
        started = time.perf_counter()
        await asyncio.to_thread(text.check, log.name, content)
        checked = time.perf_counter()
        planned = await asyncio.to_thread(
            plan_file,
            "0" * 32,
            0,
            log.name,
            "uploads/owner/upload",
            content,
            [{"id": f"r{i}", "text": r} for i, r in enumerate(RULES)],
            config.part_max_tokens,
            config.completion_max_tokens,
        )
        ended = time.perf_counter()
    return Planned(
        len(content),
        int(planned.file["last_line"]),
        len(planned.parts),
        planned.estimate,
        int(planned.file["combine_calls"]),
        checked - started,
        ended - checked,
        peak.growth_bytes,
        [p["part_id"] for p in planned.parts],
    )


@dataclass
class Limit:
    measure: str
    used: str
    limit: str = ""
    ratio: float | None = None


def limits(planned: Planned, events: History, call_seconds: float) -> list[Limit]:
    """What validating the planned file would need, against each limit."""
    resources = load_resources()
    functions = resources["functions"]
    config = LAMBDA_DEFAULTS
    retries = Settings.model_fields["sfn_retry_max_attempts"].default
    items = batches(planned.part_ids, MAX_MAP_ITEMS)
    state = planned_state("0" * 32, 1, [{"parts": planned.parts}])
    per_item = math.ceil(planned.parts / len(items))
    rows = [
        Limit("file: bytes, lines", f"{planned.size:,} B, {planned.lines:,} lines"),
        Limit("text check (`core/text.check`)", f"{planned.check_seconds:.1f} s"),
        Limit(
            "plan (`core/planning.plan_file`): seconds on this machine",
            f"{planned.plan_seconds:.0f} s",
            f"{functions['plan_files']['timeout']} s (plan_files timeout)",
            planned.plan_seconds / functions["plan_files"]["timeout"],
        ),
        Limit(
            "plan: peak RSS growth, the file's bytes included",
            f"{planned.peak_growth / MIB:,.0f} MiB",
            f"{functions['plan_files']['memory']:,} MB (plan_files memory; Lambda allows 10,240)",
            planned.peak_growth / (functions["plan_files"]["memory"] * 10**6),
        ),
        Limit(f"parts (budget {config.part_max_tokens:,} tokens)", f"{planned.parts:,}"),
        Limit(
            "tokens reserved (parts and combine, prompt + completion)",
            f"{planned.estimate:,}",
            f"{DEFAULT_QUOTA_CAPACITY:,} (default quota capacity)",
            planned.estimate / DEFAULT_QUOTA_CAPACITY,
        ),
        Limit(
            "Map items (`core/records.batches`)",
            f"{len(items):,}",
            f"{MAX_MAP_ITEMS:,} (`MAX_MAP_ITEMS`)",
            len(items) / MAX_MAP_ITEMS,
        ),
        Limit("parts per Map item", f"{per_item:,}"),
    ]
    # The state from `Planned` on, and after `Plan` (its ResultSelector keeps the batches a second time).
    after_planned = len(json.dumps(state, separators=(",", ":")))
    max_parallelism = int(resources["parameters"]["max-parallelism"])
    shapes = {
        f"max-parallelism {p}": headroom.shape(max(p, config.map_concurrency_ceiling), len(items), planned.parts, 1)
        for p in (max_parallelism, headroom.MAX_PARALLELISM)
    }
    default = shapes[f"max-parallelism {max_parallelism}"]
    plan = {
        "map_concurrency": default.map_concurrency,
        "parallelism": max_parallelism,
        "calls_per_invocation": default.calls_per_invocation,
        "batches": headroom.regroup(state["batches"], default.group),
    }
    after_plan = len(json.dumps({**state, "plan": plan}, separators=(",", ":")))
    limit = f"{STATE_BYTES:,} B"
    rows += [
        Limit("state from `Planned` on", f"{after_planned:,} B", limit, after_planned / STATE_BYTES),
        Limit("… after `Plan` (the batches twice)", f"{after_plan:,} B", limit, after_plan / STATE_BYTES),
    ]
    history_events = events.fixed + events.per_item * len(items)
    rows.append(
        Limit(
            f"history events ({events.fixed:.0f} + {events.per_item:g} per Map item)",
            f"{history_events:,.0f}",
            f"{HISTORY_EVENTS:,}",
            history_events / HISTORY_EVENTS,
        )
    )
    timeout = functions["validate_part"]["timeout"]
    attempt = timeout - config.reserve_millis / 1000  # a validator stops with this much left (BatchIncomplete)
    for label, shaped in shapes.items():
        k, parts_per_item = shaped.calls_per_invocation, per_item * shaped.group
        seconds = math.ceil(parts_per_item / k) * call_seconds
        attempts = math.ceil(seconds / attempt)
        rows += [
            Limit(
                f"one Map item at {label}: {parts_per_item:,} parts, {k} call{'s' if k > 1 else ''} at once, "
                f"{call_seconds:g} s a call",
                f"{seconds:,.0f} s",
                f"{LAMBDA_MAX_SECONDS} s (Lambda's longest timeout)",
                seconds / LAMBDA_MAX_SECONDS,
            ),
            Limit(
                f"… in validate_part invocations of {attempt:.0f} s ({timeout} s timeout less the reserve)",
                f"{attempts:,}",
                f"{1 + retries} (1 + {retries} retries)",
                attempts / (1 + retries),
            ),
        ]
        if attempts > 1:
            retried = history_events + len(items) * RETRY_EVENTS * (attempts - 1)
            rows.append(
                Limit(
                    f"… history events with those retries ({RETRY_EVENTS} per retry)",
                    f"{retried:,.0f}",
                    f"{HISTORY_EVENTS:,}",
                    retried / HISTORY_EVENTS,
                )
            )
    combine = planned.combine_calls * call_seconds
    rows.append(
        Limit(
            f"the combine Map item: {planned.combine_calls:,} calls one at a time, {call_seconds:g} s a call",
            f"{combine:,.0f} s",
            f"{LAMBDA_MAX_SECONDS} s",
            combine / LAMBDA_MAX_SECONDS,
        )
    )
    combine_timeout = functions["combine_file"]["timeout"]
    combine_attempts = math.ceil(combine / (combine_timeout - config.reserve_millis / 1000))
    rows.append(
        Limit(
            f"… in combine_file invocations ({combine_timeout} s timeout less the reserve)",
            f"{combine_attempts:,}",
            f"{1 + retries} (1 + {retries} retries)",
            combine_attempts / (1 + retries),
        )
    )
    return rows


# --- the tables --------------------------------------------------------------------------------


def _goal(met: bool) -> str:
    return "met" if met else "**missed**"


def latency_table(run: LatencyRun, max_request_bytes: int) -> list[str]:
    def answers(row: Row) -> str:
        return ", ".join(f"{s} × {row.statuses.count(s)}" for s in sorted(set(row.statuses)))

    up, inline = run.uploads, run.inline
    lines = [
        "| scenario | answers | seconds | API CPU s | API peak RSS growth | goal | `/healthz` p99 | ÷ idle p99 | goal "
        "| bare process: p99 ÷ its idle p99 |",
        "|---|---|---:|---:|---:|---|---:|---:|---|---:|",
        f"| idle (baseline) | | | | | | {run.idle * 1000:.1f} ms | 1.00 | | {run.bare_idle * 1000:.1f} ms: 1.00 |",
    ]
    for m, rss_limit, rss_goal in (
        (up, 16 * MIB, "≤ 16 MiB"),
        (inline, 2 * max_request_bytes, "≤ 2 × `max_request_bytes`"),
    ):
        ratio = m.row.p99 / run.idle
        lines.append(
            f"| {m.row.scenario} | {answers(m.row)} | {m.seconds:.1f} | {m.api_cpu:.1f} "
            f"| {m.row.growth / MIB:.1f} MiB | {rss_goal}: {_goal(m.row.growth <= rss_limit)} "
            f"| {m.row.p99 * 1000:.1f} ms | {ratio:.2f} | ≤ 3: {_goal(ratio <= 3)} "
            f"| {m.bare_p99 * 1000:.1f} ms: {m.bare_p99 / run.bare_idle:.2f} |"
        )
    return lines


def main() -> None:
    upload_gib = float(os.environ.get("BENCH_UPLOAD_GIB", "1"))
    max_request_mib = int(os.environ.get("BENCH_MAX_REQUEST_MIB", "50"))
    call_seconds = float(os.environ.get("BENCH_CALL_SECONDS", "2"))
    load_nice = int(os.environ.get("BENCH_LOAD_NICE", "19"))  # 0: the load competes with the API as equals
    max_request_bytes = max_request_mib * MIB
    load = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench-uploads-"))
    try:
        log = tmp / "app.log"
        started = time.perf_counter()
        write_log(log, int(upload_gib * GIB))
        generated, log_size = time.perf_counter() - started, log.stat().st_size
        run = api_latency(log, tmp, max_request_bytes, load_nice)
        planned = asyncio.run(plan_log(log))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    machine = f"{os.cpu_count()} cores, {_cpu_model()}, load average {load:.1f} before, {os.getloadavg()[0]:.1f} after"

    print(f"\n## Uploads (`bench/uploads.py`): {machine}; log file generated in {generated:.0f} s")
    print(
        f"{CLIENTS} clients at once, max_request_bytes = {max_request_mib} MiB; the embedded AWS and the "
        f"clients at nice {load_nice}"
    )
    print("\n".join(latency_table(run, max_request_bytes)))
    up, size = run.uploads, log_size
    print(
        f"\nStraight to S3: {CLIENTS * size / MIB / up.seconds:,.0f} MiB/s in all; the embedded AWS process "
        f"used {up.aws_cpu:.1f} CPU s and grew {up.aws_growth / MIB:,.0f} MiB at its peak (inline: "
        f"{run.inline.aws_cpu:.1f} CPU s, {run.inline.aws_growth / MIB:,.0f} MiB)"
    )
    h = run.history
    print(
        f"\nhistory: {h.events[0]} and {h.events[1]} events for {h.items[0]} and {h.items[1]} Map items "
        f"(failed attempts: {h.failed}); one Map item adds {h.per_item:g}: {', '.join(h.item_types)}"
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

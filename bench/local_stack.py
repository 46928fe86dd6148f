"""The local stack's throughput: one-part files per second through everything, with an instant model.

One validation of N one-part CSV files and one rule goes through the whole local stack in
one process, as `make run` has it: the API (uvicorn), the embedded AWS (moto, the Step
Functions interpreter, the Lambda handlers in-process) and the simulator answering at once;
`max-parallelism` 20 and a Map as wide. Timed from POST to the validation's end, after a
two-file warm-up (imports, first clients). Each configuration runs in a fresh process, all
in the same run, so the rows compare on the same machine and load:

- baseline: werkzeug's development server as moto serves it (a TCP connection and a server
  thread per AWS call) and moto's own DynamoDB response serializer;
- keep-alive: connections kept (`local/aws/keepalive.py`);
- then, one by one, `moto_patches.COST_FIXES`: an updated item copied only for a reader
  (`_copy_updated_items_only_for_a_reader`), attribute values serialized in one pass
  (`_serialize_attribute_values_in_one_pass`), a projected read converting only what it names
  (`_project_items_from_one_conversion`). The last row is what the embedded AWS runs.

Per part it prints the AWS calls the embedded AWS served, the TCP connections it accepted,
the Lambda invocations and the CPU seconds of the whole process. `--profile` then samples
the last configuration with py-spy (the thread holding the GIL, 100 Hz) during the timed run
and prints where the CPU went, by component.

    python -m bench bench.local_stack                         # the table
    python -m bench.local_stack --files 90 --profile          # and the profile
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from app.settings import PROJECT_ROOT

FILES = 90
PARALLELISM = 20
RULES = ['The file must not contain "secret".']


@dataclass(frozen=True)
class Configuration:
    name: str
    label: str
    keep_alive: bool
    cost_fixes: int  # how many of moto_patches.COST_FIXES are on, in order


CONFIGURATIONS = (
    Configuration("baseline", "a connection per call, moto as it is (baseline)", False, 0),
    Configuration("keep-alive", "keep-alive", True, 0),
    Configuration("copies", "+ an updated item copied only for a reader", True, 1),
    Configuration("one-pass", "+ attribute values serialized in one pass", True, 2),
    Configuration("current", "+ a projected read converting only what it names", True, 3),
)


def run_configuration(config: Configuration, files: int, wait_for_profiler: bool) -> dict[str, Any]:
    """In this process: the stack, the warm-up, the timed validation; returns the row's numbers."""
    import httpx

    from app.main import create_app
    from local.aws import lambda_router, moto_patches
    from local.aws.server import EmbeddedAWS
    from local.serving import ThreadedServer
    from local.simulator.app import SimulatorConfig
    from local.simulator.server import SimulatorServer
    from tests.support.stack import ADMIN, Aws, local_settings, set_parallelism

    moto_patches.apply(without=moto_patches.COST_FIXES[config.cost_fixes :])  # in this process only
    documents = [{"name": f"file-{i:03d}.csv", "content": f"id,name\n{i},row {i}\n"} for i in range(files)]
    with (
        EmbeddedAWS(keep_alive=config.keep_alive) as embedded,
        SimulatorServer(SimulatorConfig(latency_seconds=0.0)) as simulator,
    ):
        settings = local_settings(embedded.endpoint_url, simulator, map_concurrency_ceiling=PARALLELISM)
        set_parallelism(Aws(embedded.endpoint_url), settings, PARALLELISM)
        api = ThreadedServer(create_app(settings), lifespan="on").start()
        try:
            with httpx.Client(base_url=api.url, headers=ADMIN, timeout=120) as client:

                def validate(batch: list[dict[str, str]]) -> dict[str, Any]:
                    created = client.post("/validations", json={"documents": batch, "rules": RULES})
                    created.raise_for_status()
                    url = f"/validations/{created.json()['id']}"
                    while (ended := client.get(url).json())["status"] not in ("SUCCEEDED", "FAILED", "CANCELLED"):
                        time.sleep(0.1)
                    if ended["status"] != "SUCCEEDED":
                        raise RuntimeError(f"{config.name}: the validation ended {ended['status']}: {ended}")
                    return ended

                validate(documents[:2])
                if wait_for_profiler:
                    print(f"warm {os.getpid()}", flush=True)
                    sys.stdin.readline()
                traffic, invocations = embedded.traffic(), sum(lambda_router.invocations().values())
                cpu, started = time.process_time(), time.perf_counter()
                validate(documents)
                seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
                after = embedded.traffic()
                calls = after.calls - traffic.calls
        finally:
            api.stop()
    return {
        "name": config.name,
        "parts": files,
        "seconds": seconds,
        "cpu": cpu,
        "calls": dict(calls),
        "connections": after.connections - traffic.connections,
        "invocations": sum(lambda_router.invocations().values()) - invocations,
    }


def _child(config: Configuration, files: int, profile_to: str | None) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.local_stack", "--row", config.name, "--files", str(files)]
    if profile_to is None:
        done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"{config.name} failed:\n{done.stderr[-3000:]}")
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
    child = subprocess.Popen(
        [*command, "--wait-for-profiler"],
        cwd=PROJECT_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    line = ""
    while not line.startswith("warm "):  # local mode's banner comes first
        line = child.stdout.readline()
        if not line:
            child.wait(timeout=60)
            raise RuntimeError(f"{config.name}: ended before its warm-up did")
    py_spy = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or "py-spy"
    profiler = subprocess.Popen(
        [py_spy, "record", "--pid", str(child.pid), "--gil", "--nonblocking", "--rate", "100"]
        + ["--format", "raw", "--output", profile_to],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(2)  # py-spy attached
    child.stdin.write("go\n")
    child.stdin.flush()
    out = child.stdout.read()
    child.wait(timeout=1800)
    profiler.wait(timeout=60)
    return dict(json.loads(out.strip().splitlines()[-1]))


# What each sampled stack was doing, first match wins: (component, frames that must all be
# there, frames of which one must be there). py-spy's raw frames read `function (path:line)`.
COMPONENTS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("Lambda handlers: their boto3 clients (botocore, urllib3)", ("lambda_router.py",), ("botocore/", "urllib3/")),
    ("Lambda handlers: our code, Powertools, openai", ("lambda_router.py",), ()),
    ("embedded AWS: DynamoDB (moto's handler and serializer)", ("EmbeddedApp.__call__",), ("moto/dynamodb/",)),
    ("embedded AWS: DynamoDB (moto's handler and serializer)", ("EmbeddedApp.__call__",), ("serialize.py",)),
    (
        "embedded AWS: S3, SSM, Step Functions API",
        ("EmbeddedApp.__call__",),
        ("moto/s3/", "moto/ssm/", "moto/stepfunctions/"),
    ),
    ("embedded AWS: request dispatch (Flask, moto core)", ("EmbeddedApp.__call__",), ()),
    ("embedded AWS: HTTP (werkzeug, http.server, sockets)", ("socketserver.py",), ()),
    ("Step Functions interpreter: its boto3 clients", ("moto/stepfunctions/parser",), ("botocore/", "urllib3/")),
    ("Step Functions interpreter", ("moto/stepfunctions/parser",), ()),
    ("simulator", ("local/simulator",), ()),
    ("API (uvicorn, FastAPI, aiobotocore)", (), ("uvicorn/", "starlette/", "fastapi/", "aiobotocore/", "/app/")),
    ("this benchmark's client", ("bench/local_stack.py",), ()),
    ("no Python frame (native code holding the GIL)", (), ("",)),
)


def components(raw_profile: str) -> list[tuple[str, float]]:
    """Share of the samples per component, largest first."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    with open(raw_profile) as lines:
        for line in lines:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not count.isdigit():
                continue
            total += int(count)
            if not stack.strip():
                counts[COMPONENTS[-1][0]] += int(count)
                continue
            for name, within, any_of in COMPONENTS[:-1]:
                if all(w in stack for w in within) and (not any_of or any(a in stack for a in any_of)):
                    counts[name] += int(count)
                    break
            else:
                counts["other (a stack py-spy read only in part, imports, ...)"] += int(count)
    return [(name, n / total) for name, n in counts.most_common()] if total else []


def machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores, {platform.machine()} {model}, Python {platform.python_version()}, load {load}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=FILES, help=f"one-part files (default {FILES})")
    parser.add_argument("--profile", action="store_true", help="sample the last configuration with py-spy")
    parser.add_argument("--profile-output", help="keep py-spy's raw samples in this file (implies --profile)")
    parser.add_argument("--row", choices=[c.name for c in CONFIGURATIONS], help=argparse.SUPPRESS)
    parser.add_argument("--wait-for-profiler", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv if argv is not None else [a for a in sys.argv[1:] if a != "bench.local_stack"])
    if args.row:
        config = next(c for c in CONFIGURATIONS if c.name == args.row)
        print(json.dumps(run_configuration(config, args.files, args.wait_for_profiler)), flush=True)
        return

    print(f"\n## Local stack: {args.files} one-part files, instant model, max-parallelism {PARALLELISM}")
    print(f"machine: {machine()} (before)")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        profile = args.profile_output or (os.path.join(scratch, "profile.txt") if args.profile else None)
        for index, config in enumerate(CONFIGURATIONS):
            last = index == len(CONFIGURATIONS) - 1
            rows.append((config, _child(config, args.files, profile if last else None)))
        print(f"machine: {machine()} (after)\n")
        base = rows[0][1]
        print(
            "| configuration | parts/s | ÷ baseline | CPU s per part | AWS calls per part | connections per part "
            "| Lambda invocations per part |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for config, row in rows:
            rate, base_rate = row["parts"] / row["seconds"], base["parts"] / base["seconds"]
            per_part = {k: row[k] / row["parts"] for k in ("cpu", "connections", "invocations")}
            calls = sum(row["calls"].values()) / row["parts"]
            print(
                f"| {config.label} | {rate:.2f} | {rate / base_rate:.2f} | {per_part['cpu']:.3f} | {calls:.1f} "
                f"| {per_part['connections']:.2f} | {per_part['invocations']:.2f} |"
            )
        last_calls = collections.Counter(rows[-1][1]["calls"])
        parts = rows[-1][1]["parts"]
        print(
            "\nAWS calls per part by operation (last row): "
            + ", ".join(f"{name} {n / parts:.1f}" for name, n in last_calls.most_common())
        )
        if profile is not None and os.path.exists(profile):
            print(f"\nWhere the CPU went (py-spy, the GIL holder sampled at 100 Hz, {rows[-1][0].label}):\n")
            print("| component | share of samples |")
            print("|---|---:|")
            for name, share in components(profile):
                print(f"| {name} | {share:.1%} |")


if __name__ == "__main__":
    main()

"""A log file planned whole (core/planning.plan_file, as `PlanFile` plans JSON and Markdown)
against the same file planned in ranges (lambdas/plan_files.plan_one on a line-oriented
upload: ranged reads, a check pass and a split pass, as many invocations as its time allows),
in the same run: seconds, peak RSS, invocations, and the ratios. Each plan runs in a process
of its own (its peak RSS is its own); the file is read from local disk, parts are counted,
not written. The two plans must agree part for part (same count, same estimate).

    .venv/bin/python -m bench.plan_ranges --size-mib 256
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.uploads import RULES, write_log

MIB = 1024 * 1024
TIMEOUT_MILLIS = 900_000  # the plan_files function's timeout (infra/terraform/resources.json)


@dataclass
class _Disk:
    path: Path
    ranges: int = 0

    def range(self, key: str, start: int, end: int, etag: str | None = None) -> tuple[bytes, int]:
        self.ranges += 1
        with self.path.open("rb") as file:
            file.seek(start)
            return file.read(end - start), self.path.stat().st_size

    def whole(self, key: str, etag: str | None = None) -> bytes:
        return self.path.read_bytes()


@dataclass
class _Parts:
    count: int = 0
    estimate: int = 0

    def put_planned(self, parts: list[dict[str, Any]], expires_at: int) -> None:
        self.count += len(parts)
        self.estimate += sum(int(p["estimate"]) for p in parts)


@dataclass
class _Validations:
    record: dict[str, Any] = field(default_factory=dict)

    def get(self, validation_id: str, *names: str) -> dict[str, Any]:
        return {n: self.record[n] for n in names}


@dataclass
class _Store:
    validations: _Validations
    files: _Disk
    parts: _Parts


def _rules() -> list[dict[str, str]]:
    return [{"id": f"r{i}", "text": r} for i, r in enumerate(RULES)]


def plan_whole(path: Path) -> dict[str, Any]:
    from core import text
    from core.planning import plan_file
    from lambdas.common.config import LambdaConfig

    config = LambdaConfig(validations_table="v", parts_table="p", uploads_bucket="u")
    started = time.perf_counter()
    content = path.read_bytes()
    text.check(path.name, content)
    planned = plan_file("0" * 32, 0, path.name, "k", content, _rules(), config.part_max_tokens, 512)
    return {"seconds": time.perf_counter() - started, "parts": len(planned.parts), "estimate": planned.estimate}


def plan_ranges(path: Path) -> dict[str, Any]:
    from lambdas.common.config import LambdaConfig
    from lambdas.plan_files.handler import plan_one

    config = LambdaConfig(validations_table="v", parts_table="p", uploads_bucket="u")
    size = path.stat().st_size
    record = {"run": 1, "status": "QUEUED", "rules": _rules(), "expires_at": 0}
    record["files"] = [{"name": path.name, "key": "k", "size": size}]
    store = _Store(_Validations(record), _Disk(path), _Parts())
    started = time.perf_counter()
    cursor, invocations, longest = None, 0, 0.0
    while True:
        invocations += 1
        began = time.perf_counter()
        clock = lambda began=began: int(TIMEOUT_MILLIS - (time.perf_counter() - began) * 1000)  # noqa: E731
        answer = plan_one(store, config, "0" * 32, 1, 0, cursor, clock)  # type: ignore[arg-type]  # fakes
        longest = max(longest, time.perf_counter() - began)
        if not answer.get("more"):
            break
        cursor = json.loads(json.dumps(answer["cursor"]))
    assert answer.get("parts") == store.parts.count, answer
    return {
        "seconds": time.perf_counter() - started,
        "parts": store.parts.count,
        "estimate": answer["estimate"],
        "last_line": answer["last_line"],
        "invocations": invocations,
        "longest_invocation_seconds": longest,
        "ranges": store.files.ranges,
    }


def _child(mode: str, path: Path) -> None:
    result = (plan_whole if mode == "whole" else plan_ranges)(path)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def run(mode: str, path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.plan_ranges", "--child", mode, str(path)], capture_output=True, text=True
    )
    if out.returncode:
        raise RuntimeError(out.stderr)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"))
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], Path(args.child[1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "app.log"
        write_log(path, args.size_mib * MIB)
        whole, ranged = run("whole", path), run("ranges", path)
    assert (whole["parts"], whole["estimate"]) == (ranged["parts"], ranged["estimate"]), (whole, ranged)
    print(f"{args.size_mib} MiB log, {whole['parts']:,} parts, estimate {whole['estimate']:,} tokens (both plans)")
    print("| plan | seconds | peak RSS | invocations |")
    print("|---|---:|---:|---:|")
    print(f"| whole (plan_file) | {whole['seconds']:.0f} | {whole['peak_rss_mib']:,.0f} MiB | 1 |")
    print(
        f"| in ranges ({ranged['ranges']} ranged reads) | {ranged['seconds']:.0f} | "
        f"{ranged['peak_rss_mib']:,.0f} MiB | {ranged['invocations']} |"
    )
    print(
        f"| ratio ranges / whole | {ranged['seconds'] / whole['seconds']:.2f} | "
        f"{ranged['peak_rss_mib'] / whole['peak_rss_mib']:.3f} | |"
    )


if __name__ == "__main__":
    main()

"""`make bench`: run every benchmark and print its table."""

import importlib
import sys

BENCHMARKS = [
    "bench.engine",
    "bench.api",
    "bench.quotas",
    "bench.events",
    "bench.fidelity",
    "bench.reuse",
    "bench.cost",
    "bench.observability",
    "bench.first_run",
    "bench.queue",
    "bench.hostile",
    "bench.uploads",
    "bench.headroom",
    "bench.local_stack",
    "bench.ceiling",
    "bench.lanes",
]


def main() -> None:
    selected = sys.argv[1:] or BENCHMARKS
    for name in selected:
        importlib.import_module(name).main()


if __name__ == "__main__":
    main()

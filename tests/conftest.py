"""Fixtures that build on each other: embedded_aws -> aws (boto3 factory) -> settings -> api.

The suite runs on pytest-xdist workers (pyproject.toml): each worker is one process with
its own embedded AWS; what workers share (the Lambda wheel cache) is taken under `exclusive`.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import botocore.loaders
import botocore.session
import pytest

from app.settings import Settings
from local.aws.server import EmbeddedAWS
from local.simulator.app import SimulatorConfig
from local.simulator.server import SimulatorServer
from tests.support.stack import (
    REGION,
    Aws,
    HeldCalls,
    MakeApi,
    aws_at,
    local_settings,
    running_api,
)

# Every API a test starts (in-process or `python -m app`) serves /metrics on a free port, not
# on the default 9464 that parallel workers would fight over.
os.environ.setdefault("METRICS_PORT", "0")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: two workers per core. Many tests spend much of their time waiting (model latency,
    polling, Step Functions' waits), so one core serves two; on 2 cores, 2 workers took 295 s,
    3 took 190 s and 4 took 172 s of an earlier, smaller suite. The suite has since become
    CPU-bound: 596 tests took 341 s on 4 workers of a quiet 2-core machine, with ~650 s of CPU
    (1.9 cores busy on average; the Terraform proof ran ~175 s beside the rest). More workers cannot
    help then; each costs its start (~8 s of CPU: imports, collection, its embedded AWS)."""
    return 2 * (os.cpu_count() or 1)


def _group_of(item: pytest.Item) -> str | None:
    """The item's `xdist_group` name (several marks: their names joined, as xdist does), or None."""
    names = {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")}
    return "_".join(sorted(names)) or None


def _join_group(item: pytest.Item, group: str) -> None:
    """Suffix the item's nodeid with `@group`, from which `--dist loadgroup` groups it.

    xdist 3.8 writes the suffix to `item._nodeid`, which pytest 9.2 no longer reads: a node's
    id is a structured `Node._id` and `nodeid` is `str(_id)`. The mark then did nothing and a
    module's tests ran on several workers (pytest-dev/pytest-xdist#1386). Here the suffix goes
    where this pytest reads it, unless xdist already put it there (a pytest or xdist that works).
    tests/test_scheduling.py runs a session with these hooks and fails if groups split again.
    """
    if item.nodeid.endswith(f"@{group}"):
        return
    suffixed = f"{item.nodeid}@{group}"
    structured = getattr(item, "_id", None)
    if structured is not None and hasattr(structured, "parse"):  # pytest >= 9.2
        item._id = type(structured).parse(suffixed)
    else:
        item._nodeid = suffixed  # type: ignore[attr-defined]  # what older pytest reads (and xdist writes)


# What a test needs for the `stack` mark (`make test-fast` leaves those out): the embedded AWS,
# directly or through a fixture built on it (api, aws, settings, make_api, ...).
STACK_FIXTURES = frozenset({"embedded_aws"})


def pytest_itemcollected(item: pytest.Item) -> None:
    """Mark the tests that need the embedded AWS `stack` (before `-m` selects: at collection)."""
    if STACK_FIXTURES & set(getattr(item, "fixturenames", ())):
        item.add_marker(pytest.mark.stack)


def _slow_seconds(item: pytest.Item) -> float:
    marker = item.get_closest_marker("slow")
    return float(marker.args[0]) if marker and marker.args else 0.0


@pytest.hookimpl(trylast=True)  # after xdist's own suffixing, which this one completes
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker: group the `xdist_group` tests, and start the longest work first.

    A group runs on one worker from start to end, so it is one unit of work whose seconds are
    its tests' `slow` seconds added up; every other test is a unit of its own. `--dist loadgroup`
    (with --no-loadscope-reorder: in this order) hands each worker one unit, then one more
    queued behind it, then one whenever it has at most two tests left: so the N longest units
    go first (one each), then N short ones (queued behind them), then the other long ones,
    then the rest in collection order.
    """
    if getattr(config.option, "loadgroup", False):  # set on xdist's workers under --dist loadgroup
        for item in items:
            if group := _group_of(item):
                _join_group(item, group)

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers < 2:
        return

    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        group = _group_of(item)
        units.setdefault(f"@{group}" if group else item.nodeid, []).append(item)

    def seconds(unit: list[pytest.Item]) -> float:
        return sum(_slow_seconds(item) for item in unit)

    slow = sorted((u for u in units.values() if seconds(u) > 0), key=seconds, reverse=True)
    rest = [u for u in units.values() if seconds(u) == 0]
    ordered = slow[:workers] + rest[:workers] + slow[workers:] + rest[workers:]
    items[:] = [item for unit in ordered for item in unit]


@pytest.fixture(scope="session")
def exclusive(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Any]:
    """`with exclusive(name):` holds a lock shared by every xdist worker of this run."""
    # Under xdist each worker's basetemp is <run dir>/popen-gwN: the run dir is shared.
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent

    @contextmanager
    def hold(name: str) -> Iterator[None]:
        with open(shared / f"{name}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    return hold


class _SearchPaths(list[str]):
    """A loader's search paths, each once: every boto3 session appends its data path to the loader it gets."""

    def append(self, path: str) -> None:
        if path not in self:
            super().append(path)


@pytest.fixture(scope="session", autouse=True)
def one_botocore_loader() -> Iterator[None]:
    """One botocore data loader for every session of the test process (as one session's clients share one).

    The API opens its aioboto3 clients with a session of its own, once per process in production
    but once per API start here: each new session parsed the same JSON service models and endpoint
    rules again: ~0.3 s of CPU per API start, 7-9% of the suite's CPU.
    Loaded once, they are the same data, cached as botocore caches them for one session's clients.
    """
    shared = botocore.loaders.Loader(extra_search_paths=_SearchPaths())

    def create_loader(search_path_string: str | None = None) -> botocore.loaders.Loader:
        return shared if search_path_string is None else botocore.loaders.create_loader(search_path_string)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(botocore.session, "create_loader", create_loader)
        yield


@pytest.fixture(scope="session")
def embedded_aws() -> Iterator[EmbeddedAWS]:
    """One embedded AWS per test process (moto keeps its state in module globals)."""
    with EmbeddedAWS(region=REGION) as server:
        yield server


@pytest.fixture(scope="session")
def aws(embedded_aws: EmbeddedAWS) -> Aws:
    return aws_at(embedded_aws.endpoint_url)


@pytest.fixture
def simulator() -> Iterator[SimulatorServer]:
    """A fresh OpenAI-compatible simulator per test, so its counts are the test's own."""
    with SimulatorServer(SimulatorConfig(latency_seconds=0.01)) as server:
        yield server


@pytest.fixture
def hold_calls(simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], HeldCalls]]:
    """`hold_calls(passing)`: hold the simulator's calls after the first `passing`; released at teardown."""
    held: list[HeldCalls] = []

    def hold(passing: int) -> HeldCalls:
        calls = HeldCalls(simulator, passing)
        monkeypatch.setattr(simulator.simulator, "complete", calls.complete)
        held.append(calls)
        return calls

    yield hold
    for calls in held:  # before the simulator stops: no request is left hanging
        calls.release()


@pytest.fixture
def settings(embedded_aws: EmbeddedAWS, simulator: SimulatorServer) -> Settings:
    """Local-mode settings against the shared embedded AWS, with names unique to the test.

    The governor's target is the simulator's limit (provisioning keeps a parameter that
    exists), so tests not about the TPM budget are not slowed by the 50,000 TPM default.
    """
    return local_settings(embedded_aws.endpoint_url, simulator)


@pytest.fixture
def make_api(settings: Settings) -> Iterator[MakeApi]:
    """Start the API with settings overrides (part size, retry timing); stopped after the test."""
    with ExitStack() as stack:

        def start(**overrides: Any) -> Any:
            return stack.enter_context(running_api(settings, **overrides))

        yield start


@pytest.fixture
def api(make_api: MakeApi) -> Any:
    """The API in local mode against the shared embedded AWS, provisioned for this test."""
    return make_api()

"""A combine tree level's groups asked side by side, up to k at once in one invocation
(lambdas/combine_file/combiner.py over lambdas/common/calls.py), without AWS: the store is an
in-memory stand-in of what the combiner reads and writes, the workers' Askers are stand-ins whose
answers are the simulator's own (local/simulator: the same verdicts, in-process). Calls coordinate
with the test through conditions and events, each wait bounded by WAIT, so nothing here depends
on timing: a broken test fails, it does not hang."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from core import headroom
from core.grounding import absence_finding, text_finding
from core.records import PartStatus, combine_node_id
from lambdas.combine_file import combiner
from lambdas.common.config import LambdaConfig
from lambdas.common.errors import BatchIncomplete, CapacityUnavailable, ModelUnavailable
from lambdas.common.model import Answer, Asker, Askers, Stopped
from lambdas.common.stores import Store
from local.simulator.app import answer as simulated_answer
from local.simulator.verdicts import read_call

WAIT = 30  # seconds: a bound on a broken test, never a measurement
VID, RUN, FILE = "v-1", 1, 0
RULES = [
    {"id": "no-secret", "text": 'The file must not contain "secret".'},
    {"id": "copyright", "text": 'The file must contain "Copyright".'},
]
BUDGET = 300  # part_max_tokens: small, so that a file of a few dozen parts is a tree of several levels
PLENTY = 10**9


def _part(i: int) -> dict[str, Any]:
    """Part i's stored result: lines 10i..10i+9; every third part holds a secret, part 0 the copyright."""
    secrets = [
        text_finding(i * 10 + 1, i * 10 + 1, 'contains "secret"', "the secret", "the secret") for _ in range(i % 3 == 1)
    ]
    verdicts = [
        {"id": "no-secret", "passed": not secrets, "findings": secrets, "evidence": []},
        {
            "id": "copyright",
            "passed": i == 0,
            "findings": [] if i == 0 else [absence_finding(i * 10, i * 10 + 9, 'does not contain "Copyright"')],
            "evidence": [{"line": 1, "quote": "Copyright 2026", "note": 'holds "Copyright"'}] if i == 0 else [],
        },
    ]
    return {
        "part_id": f"{i:06d}",
        "status": PartStatus.SUCCEEDED,
        "first_line": i * 10,
        "last_line": i * 10 + 9,
        "rules": verdicts,
    }


class _Store:
    """What the combiner reads and writes: the validation, a file's parts, its tree's nodes (stored
    once: a second put gets the first back), its verdict; reuse is off."""

    def __init__(self, parts: int) -> None:
        self.parts_of_file = [_part(i) for i in range(parts)]
        last = self.parts_of_file[-1]["last_line"]
        self.record = {
            "rules": RULES,
            "files": [{"name": "big.log", "parts": parts, "last_line": last}],
            "reuse": False,
        }
        self.nodes: dict[str, dict[str, Any]] = {}
        self.puts: list[str] = []
        self.verdicts: dict[int, dict[str, Any]] = {}
        self.checks: dict[int, dict[str, int]] = {}
        self.lock = threading.Lock()
        self.validations, self.parts, self.events, self.answers = self, self, self, self

    # store.validations
    def get(self, validation_id: str, *names: str) -> dict[str, Any]:
        return {name: self.record[name] for name in names if name in self.record}

    # store.parts
    def verdict(self, validation_id: str, index: int) -> dict[str, Any] | None:
        return self.verdicts.get(index)

    def of_file(self, validation_id: str, index: int) -> list[dict[str, Any]]:
        return list(self.parts_of_file)

    def combine_node(self, validation_id: str, node: str) -> dict[str, Any] | None:
        with self.lock:
            return self.nodes.get(node)

    def put_combine_node(self, validation_id: str, node: str, index: int, report: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.puts.append(node)
            return self.nodes.setdefault(node, {"file_index": index, **report})

    def record_verdict(
        self, validation_id: str, index: int, run: int, fields: dict[str, Any], *, failed: bool, checks: dict[str, int]
    ) -> bool:
        self.verdicts[index], self.checks[index] = fields, dict(checks)
        return True

    # store.events
    def report_file(self, *args: Any) -> None:
        pass


@dataclass
class _Lease:
    closed: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        self.closed.set()


class _Model:
    """Answers combine calls as the simulator does, and sees them: how many at once (`peak`), from
    which threads, the spans (first line, last line) of the reports each call combined.

    `gather`: the first `gather` calls each wait until that many have arrived (so that many were
    in flight at once), then answer. `fail`: the call combining that span raises ModelUnavailable
    once `gather` arrived, and the others of the first `gather` answer only once the failing worker
    has left (its lease closed): its error is recorded before they could take another group."""

    def __init__(self, gather: int = 0, fail: tuple[int, int] | None = None) -> None:
        self.gather, self.fail = gather, fail
        self.changed = threading.Condition()
        self.arrived = self.now = self.peak = 0
        self.spans: list[tuple[int, int]] = []
        self.threads: set[int] = set()
        self.failed_lease: _Lease | None = None

    def ask(self, lease: _Lease, messages: list[dict[str, str]], response_format: dict[str, Any]) -> Answer:
        call = read_call({"messages": messages, "response_format": response_format})
        with self.changed:
            self.arrived += 1
            first = self.arrived <= self.gather
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.spans.append(call.span)
            self.threads.add(threading.get_ident())
            if call.span == self.fail:
                self.failed_lease = lease
            self.changed.notify_all()
            gathered = self.changed.wait_for(lambda: self.arrived >= self.gather, timeout=WAIT)
        try:
            assert gathered, f"{self.gather} calls never were in flight at once ({self.arrived} arrived)"
            if call.span == self.fail:
                raise ModelUnavailable("injected: the model failed this group's call")
            if self.fail is not None and first:
                with self.changed:
                    failing = self.changed.wait_for(lambda: self.failed_lease is not None, timeout=WAIT)
                assert failing and self.failed_lease is not None
                assert self.failed_lease.closed.wait(WAIT), "the failing worker never left"
            content, completion, _ = simulated_answer(call, None, 100_000)
            return Answer(content, {"prompt_tokens": 10, "completion_tokens": completion}, "simulator", {}, "stop")
        finally:
            with self.changed:
                self.now -= 1


@dataclass
class _Asker:
    model: _Model
    lease: _Lease = field(default_factory=_Lease)
    model_name: str = "simulator"

    def ask(
        self,
        messages: list[dict[str, str]],
        response_format: dict[str, Any],
        prompt_estimate: int,
        allowance: int | None = None,
    ) -> Answer:
        return self.model.ask(self.lease, messages, response_format)


class _Invocation:
    """One combine invocation's way to the model: k, the live cap, and new Askers (counted)."""

    def __init__(self, model: _Model, k: int, cap: int | None = None) -> None:
        self.model, self.made = model, 0
        # The combine Map runs this one item: the invocation's part of the cap is the whole cap.
        plan = {"map_concurrency": 4, "calls_per_invocation": k, "combine_items": 1}
        live = k if cap is None else cap
        self.askers = Askers(self._new, lambda: live, plan, "simulator")

    def _new(self) -> Asker:
        self.made += 1
        return cast(Asker, _Asker(self.model))


def _config() -> LambdaConfig:
    return LambdaConfig(validations_table="v", parts_table="p", uploads_bucket="u", part_max_tokens=BUDGET)


def _combine(
    store: _Store,
    model: _Model,
    k: int,
    monkeypatch: pytest.MonkeyPatch,
    remaining: Callable[[], int] = lambda: PLENTY,
    cap: int | None = None,
) -> tuple[dict[str, Any], _Invocation]:
    invocation = _Invocation(model, k, cap)
    monkeypatch.setattr(combiner, "askers_for", lambda *args, **kwargs: invocation.askers)
    done = combiner.combine_files(cast(Store, store), _config(), VID, RUN, {"first": FILE, "last": FILE}, remaining)
    return done, invocation


def _levels(parts: int) -> list[list[tuple[int, int]]]:
    """The tree's levels, each group by the span (first line, last line) it combines: as a run one
    call at a time asks and stores them (each call's node in order; the last call is the top)."""
    store, model = _Store(parts), _Model()
    invocation = _Invocation(model, 1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(combiner, "askers_for", lambda *args, **kwargs: invocation.askers)
        combiner.combine_files(cast(Store, store), _config(), VID, RUN, {"first": FILE, "last": FILE}, lambda: PLENTY)
    levels: list[list[tuple[int, int]]] = []
    for node, span in zip(store.puts, model.spans, strict=False):
        level, position = (int(x) for x in node.split("#")[2:])
        if level > len(levels):
            levels.append([])
        assert position == len(levels[level - 1])
        levels[level - 1].append(span)
    assert len(model.spans) == len(store.puts) + 1
    return [*levels, [model.spans[-1]]]


def _nodes(levels: list[list[tuple[int, int]]]) -> set[str]:
    """Every intermediate node of the tree (the top, the file's verdict, is not one)."""
    return {combine_node_id(FILE, level, p) for level, groups in enumerate(levels[:-1], 1) for p in range(len(groups))}


PARTS = 40


def test_the_tree_has_levels_of_several_groups() -> None:
    levels = _levels(PARTS)
    assert len(levels) >= 3 and len(levels[0]) >= 6 and len(levels[-1]) == 1


@pytest.mark.parametrize(("k", "cap", "at_once"), [(3, None, 3), (4, 2, 2)])
def test_a_level_s_groups_are_asked_up_to_k_at_once_and_each_stored(
    k: int, cap: int | None, at_once: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    levels = _levels(PARTS)
    store, model = _Store(PARTS), _Model(gather=at_once)

    done, invocation = _combine(store, model, k, monkeypatch, cap=cap)

    assert model.peak == at_once  # that many in flight together (gathered), never more: k, or the live cap below it
    assert set(store.nodes) == _nodes(levels) and len(store.puts) == len(store.nodes)  # each group stored once
    assert sorted(model.spans) == sorted(s for level in levels for s in level)  # each group asked once
    assert done == {"combined": 1, "skipped": 0, "calls": sum(map(len, levels)), "stopped": False, "more": False}
    assert store.verdicts[FILE]["combine_calls"] == sum(map(len, levels))
    assert invocation.made >= at_once  # an Asker (a lease) per worker


def test_a_level_is_stored_whole_before_the_next_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    levels = _levels(PARTS)
    store, model = _Store(PARTS), _Model(gather=3)

    _combine(store, model, 3, monkeypatch)

    level_of = {span: n for n, level in enumerate(levels) for span in level}
    asked = [level_of[span] for span in model.spans]
    assert asked == sorted(asked)  # no call of a level before every call of the one below


def test_the_verdict_is_the_one_asked_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    one, many = _Store(PARTS), _Store(PARTS)

    _combine(one, _Model(), 1, monkeypatch)
    _combine(many, _Model(gather=3), 3, monkeypatch)

    assert many.verdicts == one.verdicts
    assert {n: (v["first_line"], v["last_line"], v["rules"]) for n, v in many.nodes.items()} == {
        n: (v["first_line"], v["last_line"], v["rules"]) for n, v in one.nodes.items()
    }
    assert many.checks == one.checks
    verdict = {v["id"]: v for v in one.verdicts[FILE]["rules"]}
    assert verdict["copyright"]["passed"] is True
    assert verdict["no-secret"]["passed"] is False
    assert [f["line"] for f in verdict["no-secret"]["findings"]] == [i * 10 + 1 for i in range(PARTS) if i % 3 == 1]


def test_with_k_1_every_call_is_made_in_the_invocation_s_thread_in_order_with_one_asker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    levels = _levels(PARTS)
    store, model = _Store(PARTS), _Model()

    done, invocation = _combine(store, model, 1, monkeypatch)

    assert model.threads == {threading.get_ident()}
    assert model.spans == [span for level in levels for span in level]  # level by level, in the groups' order
    assert invocation.made == 1 and model.peak == 1
    in_order = [combine_node_id(FILE, n, p) for n, level in enumerate(levels[:-1], 1) for p in range(len(level))]
    assert store.puts == in_order
    assert done["calls"] == sum(map(len, levels))


def test_a_failed_call_stops_new_ones_and_is_raised_once_those_in_flight_are_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    levels = _levels(PARTS)
    failing = levels[0][0]
    store, model = _Store(PARTS), _Model(gather=3, fail=failing)

    with pytest.raises(ModelUnavailable):
        _combine(store, model, 3, monkeypatch)

    assert len(model.spans) == 3  # the failing call and the two in flight with it; no later group was asked
    assert set(store.nodes) == {combine_node_id(FILE, 1, p) for p in (1, 2)}  # those two were stored
    assert FILE not in store.verdicts

    # A retried invocation asks only what is not stored, and ends with the verdict of a whole run.
    again, whole = _Model(), _Store(PARTS)
    done, _ = _combine(store, again, 3, monkeypatch)
    _combine(whole, _Model(), 1, monkeypatch)
    asked = [s for level in levels for s in level]
    assert sorted(again.spans) == sorted(s for s in asked if s not in (levels[0][1], levels[0][2]))
    assert done["calls"] == store.verdicts[FILE]["combine_calls"] == len(asked) - 2  # this invocation's calls
    assert store.verdicts[FILE]["rules"] == whole.verdicts[FILE]["rules"]


class _Clock:
    """`remaining_millis` with time for `looks` looks (one per group asked), then none."""

    def __init__(self, looks: int) -> None:
        self.looks, self.lock = looks, threading.Lock()

    def __call__(self) -> int:
        with self.lock:
            self.looks -= 1
            return PLENTY if self.looks >= 0 else 0


def test_time_running_short_stores_what_was_asked_and_the_next_invocation_asks_only_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    levels = _levels(PARTS)
    store, first = _Store(PARTS), _Model(gather=3)

    done, _ = _combine(store, first, 3, monkeypatch, remaining=_Clock(4))

    assert done == {"combined": 0, "skipped": 0, "calls": 4, "stopped": False, "more": True}
    assert len(first.spans) == len(store.nodes) == 4  # every group asked was stored (the ones in flight too)
    stored = {store.nodes[n]["first_line"] for n in store.nodes}
    assert {s[0] for s in first.spans} == stored

    second = _Model()
    done, _ = _combine(store, second, 3, monkeypatch)

    asked = [s for level in levels for s in level]
    assert sorted(second.spans) == sorted(s for s in asked if s not in first.spans)  # none asked twice
    assert done == {"combined": 1, "skipped": 0, "calls": len(asked) - 4, "stopped": False, "more": False}
    whole = _Store(PARTS)
    _combine(whole, _Model(), 1, monkeypatch)
    assert store.verdicts[FILE]["rules"] == whole.verdicts[FILE]["rules"]


def test_an_invocation_with_no_time_for_a_call_raises_for_the_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    store, model = _Store(PARTS), _Model()

    with pytest.raises(BatchIncomplete):
        _combine(store, model, 3, monkeypatch, remaining=_Clock(0))

    assert model.spans == [] and store.nodes == {}


def test_a_stop_ends_the_invocation_quietly_with_what_it_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    store = _Store(PARTS)

    class _Stopping(_Model):
        """Answers two calls; every later one finds the run cancelled."""

        allowed = 2

        def ask(self, lease: _Lease, messages: list[dict[str, str]], response_format: dict[str, Any]) -> Answer:
            with self.changed:
                self.allowed -= 1
                stop = self.allowed < 0
            if stop:
                raise Stopped()  # what the Asker's check before a call raises once the run is cancelled
            return super().ask(lease, messages, response_format)

    model = _Stopping()
    done, _ = _combine(store, model, 3, monkeypatch)

    assert done["stopped"] is True and done["more"] is False and done["combined"] == 0
    assert len(store.nodes) == len(model.spans) == 2
    assert FILE not in store.verdicts


class _NoCapacity(_Model):
    """Answers `answered` calls; every later one finds no slot or tokens within its wait (what the
    Asker raises when the governor's wait gives up)."""

    def __init__(self, answered: int) -> None:
        super().__init__()
        self.answered = answered

    def ask(self, lease: _Lease, messages: list[dict[str, str]], response_format: dict[str, Any]) -> Answer:
        with self.changed:
            self.answered -= 1
            refused = self.answered < 0
        if refused:
            raise CapacityUnavailable("no call slot within the wait left")
        return super().ask(lease, messages, response_format)


@pytest.mark.parametrize("k", [1, 3])
def test_no_capacity_after_stored_nodes_is_another_round_and_with_none_the_retrys(
    k: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _Store(PARTS)
    with pytest.raises(CapacityUnavailable):  # nothing stored: Step Functions retries with backoff
        _combine(store, _NoCapacity(0), k, monkeypatch)
    assert store.nodes == {}

    first = _NoCapacity(2)
    done, _ = _combine(store, first, k, monkeypatch)

    assert done == {"combined": 0, "skipped": 0, "calls": 2, "stopped": False, "more": True}
    assert len(store.nodes) == 2
    second = _Model()
    done, _ = _combine(store, second, k, monkeypatch)
    asked = [s for level in _levels(PARTS) for s in level]
    assert done == {"combined": 1, "skipped": 0, "calls": len(asked) - 2, "stopped": False, "more": False}
    assert not set(second.spans) & set(first.spans)  # the stored ones are not asked again


def test_a_combine_invocation_s_part_of_the_cap_counts_the_invocations_that_run_at_once() -> None:
    plan = {"map_concurrency": 5, "calls_per_invocation": 2}
    assert headroom.workers(5, plan) == 1  # the parts' Map: five invocations share the cap of 5
    assert headroom.workers(5, plan, 1) == 2  # one combine item: k at the planned cap
    assert headroom.workers(5, plan, 10) == 1  # more items than the width: the width runs at once
    assert headroom.workers(1, plan, 1) == 1  # a cap lowered to 1
    assert headroom.workers(5, {**plan, "calls_per_invocation": 1}, 1) == 1  # k = 1

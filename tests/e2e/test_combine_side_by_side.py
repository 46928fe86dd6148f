"""In the embedded stack, a file's combine tree level is asked k calls at a time: the plan's
`calls_per_invocation` (k = 3 for this file at the defaults) and its `combine_items` (one file: the
invocation's part of the cap is the whole cap) reach the combiner through the plan record, and
its workers' calls go through the real governor (a lease and a slot each) to the simulator."""

from __future__ import annotations

import asyncio
from typing import Any

from local.simulator.server import SimulatorServer
from local.simulator.verdicts import COMBINE, read_call
from tests.support.stack import MakeApi, all_results, lines_document, wait_for_status

NO_SECRET = {"id": "no-secret", "text": 'The file must not contain "secret".'}
K = 3  # the plan's calls per invocation for this file (its parts, a Map 5 wide at the defaults)
WAIT = 30  # seconds: a bound on a broken test, never a measurement


class _CombineCalls:
    """The simulator's combine calls: how many at once (`peak`). The first `gather` wait (in the
    simulator's event loop) until that many have arrived, each at most WAIT (`gathered` False then)."""

    def __init__(self, simulator: SimulatorServer, gather: int) -> None:
        self._simulator = simulator.simulator
        self._complete = self._simulator.complete
        self.gather = gather
        self.arrived = self.now = self.peak = 0
        self.gathered = True
        self._all: asyncio.Event | None = None
        self._simulator.complete = self.complete  # type: ignore[method-assign]  # the app calls the instance's attribute

    async def complete(self, body: dict[str, Any]) -> Any:
        if read_call(body).kind != COMBINE:
            return await self._complete(body)
        self._all = self._all or asyncio.Event()
        self.arrived += 1
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            if self.arrived >= self.gather:
                self._all.set()
            elif not self._all.is_set():
                try:
                    await asyncio.wait_for(self._all.wait(), WAIT)
                except TimeoutError:
                    self.gathered = False
            return await self._complete(body)
        finally:
            self.now -= 1

    def close(self) -> None:
        self._simulator.complete = self._complete  # type: ignore[method-assign]


def test_a_tree_level_s_calls_are_asked_k_at_once_with_the_verdict_of_the_parts(
    make_api: MakeApi, simulator: SimulatorServer
) -> None:
    api = make_api(part_max_tokens=100)
    combine = _CombineCalls(simulator, gather=K)
    try:
        created = api.post(
            "/validations",
            json={
                "documents": [{"name": "many.txt", "content": lines_document(240, marker_every=50)}],
                "rules": [NO_SECRET],
                "reuse": False,
            },
        ).json()
        done = wait_for_status(api, created["id"], timeout=240)
    finally:
        combine.close()

    assert done["status"] == "SUCCEEDED", done
    assert done["parallelism"]["calls_per_invocation"] == K
    assert combine.gathered and combine.peak == K  # k combine calls in flight together, never more
    assert simulator.stats.combine_calls == combine.arrived > 3  # a tree of several levels
    (result,) = all_results(api, created["id"])
    (verdict,) = result["rules"]
    assert verdict["passed"] is False
    assert [f["line"] for f in verdict["findings"]] == [50, 100, 150, 200]

"""Headroom through the whole stack (core/headroom.py): one validation with more calls in
flight than the inline Map's 40 iterations, counted by the simulator, and a live lowering
of max-parallelism that reaches invocations running several calls at once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from app.settings import Settings
from lambdas.common import observability
from lambdas.validate_part.handler import lambda_handler  # noqa: F401 - imported here once, not by 24 threads at once
from local.simulator.server import SimulatorServer
from tests.governor.fleet import spent
from tests.support.stack import Aws, HeldCalls, MakeApi, lines_document, set_parallelism, wait_for, wait_for_status

NO_SECRET = {"id": "no-secret", "text": "No line may contain the word secret."}


def _lowered_to_two(api: Any, vid: str, simulator: SimulatorServer) -> None:
    """Once max-parallelism went down to 2: the validation shows it, the calls started before the
    change have ended, and the simulator's peak counts from here."""
    wait_for(
        lambda: api.get(f"/validations/{vid}").json()["parallelism"]["effective"] == 2,
        timeout=60,
        what="parallelism 2 shown",
    )
    wait_for(lambda: simulator.stats.in_flight <= 2, timeout=60, what="the calls started before the change to end")
    simulator.simulator.reset_peak()


def _budget_spent(aws: Aws, settings: Settings) -> int:
    """granted − returned over the governor's budget shards: the tokens validators sent."""
    return spent(aws.client("dynamodb"), settings.table("governor"))


@pytest.mark.slow(20)
def test_one_validation_holds_more_than_forty_calls_in_flight_and_lowering_shrinks_it_live(
    make_api: MakeApi,
    aws: Aws,
    settings: Settings,
    simulator: SimulatorServer,
    hold_calls: Callable[[int], HeldCalls],
) -> None:
    limit, requests = (
        20_000_000,
        1_000_000,
    )  # the budget's burst holds every call at once: the call slots alone bound them
    for name, value in (("target-tpm", limit), ("target-rpm", requests)):
        aws.client("ssm").put_parameter(
            Name=f"{settings.ssm_prefix}/{name}", Value=str(value), Type="String", Overwrite=True
        )
    simulator.reconfigure(tpm=limit, rpm=requests, latency_seconds=1.0)
    api = make_api(part_max_tokens=100, config_cache_seconds=1)
    set_parallelism(aws, settings, 48)  # 24 invocations of two calls each
    calls = hold_calls(0)  # every call waits at the model until released: the slots alone decide how many

    documents = [{"name": f"part-{i}.txt", "content": lines_document(300)} for i in range(3)]
    answer = api.post("/validations", json={"documents": documents, "rules": [NO_SECRET], "reuse": False})
    assert answer.status_code == 202, answer.text
    vid, total = answer.json()["id"], answer.json()["progress"]["total"]
    wait_for(lambda: calls.waiting == 48, timeout=90, what="48 calls of one validation held at once")
    planned = api.get(f"/validations/{vid}").json()["parallelism"]
    assert api.patch("/admin/parallelism", json={"max_parallelism": 2}).status_code == 200  # while they are held
    calls.release()  # the 48 reach the simulator together and stay there its latency (1 s)
    wait_for(lambda: simulator.stats.peak_in_flight > 40, timeout=30, what="the simulator to count them")
    peak_before = simulator.stats.peak_in_flight

    def succeeded() -> int:
        return int(api.get(f"/validations/{vid}").json()["progress"]["succeeded"])

    # Within a cache period plus a call, invocations shrink to one call each and the slots to two.
    _lowered_to_two(api, vid, simulator)
    before = succeeded()
    wait_for(lambda: succeeded() >= before + 4, timeout=60, what="four more parts at the new limit")
    peak_after = simulator.stats.peak_in_flight
    assert api.delete(f"/validations/{vid}").status_code in (200, 202)
    wait_for_status(api, vid, statuses=("CANCELLED",))

    assert total > 48 + 4
    assert planned == {
        "effective": 48,
        "planned": 48,
        "map_concurrency": 24,
        "calls_per_invocation": 2,
        "reason": "max_parallelism",
    }
    assert calls.peak_waiting == 48  # the limit was reached, never passed
    assert peak_before > 40  # one validation, more calls in flight than the Map has iterations
    assert peak_after <= 2
    # Every call had its own grant: once the stopped invocations have closed their leases, what
    # the budget granted and did not get back is what the simulator admitted (exact when no
    # attempt failed without an answer; such an attempt keeps its grant).
    usage = api.get(f"/validations/{vid}").json()["usage"]
    assert usage["attempts"] == usage["model_calls"]
    wait_for(
        lambda: _budget_spent(aws, settings) == sum(tokens for _, tokens in simulator.stats.admitted),
        timeout=30,
        what="every grant sent or given back",
    )


class SlotWaits:
    """The validators' metric documents (the sink the EMF documents go to in local mode): how
    many of their invocations waited for a call slot, and how many ended without one."""

    def __init__(self) -> None:
        self.documents: list[dict[str, Any]] = []

    def receive(self, document: dict[str, Any]) -> None:
        self.documents.append(document)

    def invocations(self, name: str) -> int:
        """Invocations whose document counts `name` (EMF: one value or a list of them)."""

        def counted(value: Any) -> float:
            return sum(map(float, value)) if isinstance(value, list) else float(value or 0)

        return sum(1 for d in list(self.documents) if counted(d.get(name)) > 0)


@pytest.fixture
def slot_waits(settings: Settings) -> Iterator[SlotWaits]:
    waits = SlotWaits()
    remove = observability.add_sink(settings.name_prefix, waits.receive)
    yield waits
    remove()


def _one_part_files(count: int) -> list[dict[str, str]]:
    return [{"name": f"file-{i}.txt", "content": lines_document(3)} for i in range(count)]


@pytest.mark.slow(15)
def test_at_the_planned_cap_no_invocation_starts_only_to_wait_for_a_slot(
    api: Any, simulator: SimulatorServer, slot_waits: SlotWaits
) -> None:
    # The defaults: max-parallelism 5, MAP_CONCURRENCY_CEILING 10. The Map is 5 wide (two parts
    # an item, two calls an invocation at a raise), so each of its invocations finds a slot.
    answer = api.post("/validations", json={"documents": _one_part_files(20), "rules": [NO_SECRET], "reuse": False})
    assert answer.status_code == 202, answer.text
    vid = answer.json()["id"]
    wait_for_status(api, vid, statuses=("SUCCEEDED",))

    shown = api.get(f"/validations/{vid}").json()["parallelism"]
    assert (shown["planned"], shown["map_concurrency"], shown["calls_per_invocation"]) == (5, 5, 2)
    assert slot_waits.invocations("ModelCalls") >= 10  # the validators' documents were seen
    assert slot_waits.invocations("SlotWaits") == 0
    assert slot_waits.invocations("CapacityUnavailable") == 0
    assert simulator.stats.peak_in_flight <= 5


@pytest.mark.slow(20)
def test_a_raise_reaches_a_running_validation_through_more_calls_per_invocation_and_a_lower_bounds_it(
    make_api: MakeApi, simulator: SimulatorServer, slot_waits: SlotWaits, hold_calls: Callable[[int], HeldCalls]
) -> None:
    api = make_api(config_cache_seconds=1)
    calls = hold_calls(0)  # every call waits at the model until released: the slots alone decide how many
    answer = api.post("/validations", json={"documents": _one_part_files(20), "rules": [NO_SECRET], "reuse": False})
    assert answer.status_code == 202, answer.text
    vid = answer.json()["id"]
    wait_for(lambda: calls.waiting == 5, timeout=60, what="five calls held: the planned cap")
    assert slot_waits.invocations("SlotWaits") == 0  # five invocations, five slots

    # Raised while every call is still held: the running invocations take their second part.
    assert api.patch("/admin/parallelism", json={"max_parallelism": 10}).status_code == 200
    wait_for(lambda: calls.waiting == 10, timeout=30, what="ten calls held after the raise, none ended")
    assert calls.arrived == 10

    # Lowered while they are held: once they end, at most two are in flight.
    assert api.patch("/admin/parallelism", json={"max_parallelism": 2}).status_code == 200
    calls.release()
    _lowered_to_two(api, vid, simulator)
    wait_for_status(api, vid, statuses=("SUCCEEDED",))

    assert calls.peak_waiting == 10  # the raise reached the running validation, never more
    assert simulator.stats.peak_in_flight <= 2

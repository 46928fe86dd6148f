"""The batch lane through the real stack: parts answered by the Batch API (split at the batch
limits and the model's queue limit), what the batches leave done synchronously, cancel, expiry,
malformed output and per-request errors; the simulator's batch clock and knobs drive each case."""

from __future__ import annotations

import time
from typing import Any, cast

import httpx
import pytest

from app.settings import Settings
from core import pricing
from lambdas.batch import lane
from lambdas.common import observability
from lambdas.common.errors import StoreUnavailable
from lambdas.common.stores.batches import Batches
from local.aws import upload_patches
from local.simulator.server import SimulatorServer
from tests.support.stack import Aws, MakeApi, all_results, lines_document, wait_for, wait_for_status
from tests.uploads.test_api import declare

RULES = ['must not contain "secret"']
# Short polls (the Wait state's spacing is templated like the retry intervals) and a quick batch.
FAST = {"batch_poll_first_seconds": 1, "batch_poll_max_seconds": 2}
ROOM = 40  # completion tokens a passing one-rule answer fits, one with a finding does not, and twice this does


def documents(count: int) -> list[dict[str, str]]:
    return [
        {"name": f"d{i}.txt", "content": f"alpha {i}\n{'the secret is here' if i % 2 else 'nothing'}\n"}
        for i in range(count)
    ]


def body(count: int, tier: str = "batch") -> dict[str, Any]:
    return {"documents": documents(count), "rules": RULES, "tier": tier, "reuse": False}


def cost_at(tier: str, usage: dict[str, Any]) -> float:
    price = pricing.DEFAULT_PRICES["simulator"][tier]  # type: ignore[index]
    cost = price.cost(usage["prompt_tokens"], usage["cached_prompt_tokens"], usage["completion_tokens"])
    return float(cost.quantize(pricing.QUANTUM))


def exact_cost(tier: str, usage: dict[str, Any]) -> Any:
    price = pricing.DEFAULT_PRICES["simulator"][tier]  # type: ignore[index]
    return price.cost(usage["prompt_tokens"], usage["cached_prompt_tokens"], usage["completion_tokens"])


def verdicts(api: Any, validation_id: str) -> dict[str, list[bool]]:
    return {r["file"]: [rule["passed"] for rule in r["rules"]] for r in all_results(api, validation_id)}


def counted(documents: list[dict[str, Any]], name: str) -> float:
    """A counter summed over the Lambdas' metric documents (one value, or a list of them, per document)."""
    values = [d.get(name, 0) for d in documents]
    return sum(sum(v) if isinstance(v, list) else v for v in values)


def run(api: Any, payload: dict[str, Any]) -> dict[str, Any]:
    created = api.post("/validations", json=payload)
    assert created.status_code == 202, created.text
    return wait_for_status(api, created.json()["id"])


def test_a_batch_validation_succeeds_with_the_standard_verdicts_at_half_the_price(
    make_api: MakeApi, simulator: SimulatorServer
) -> None:
    api = make_api(**FAST)
    simulator.reconfigure(batch_completion_seconds=1)

    standard = run(api, body(3, "standard"))
    batch = run(api, body(3))

    stats = simulator.stats.snapshot()
    assert batch["status"] == "SUCCEEDED" and batch["tier"] == "batch"
    assert verdicts(api, batch["id"]) == verdicts(api, standard["id"])
    assert stats["batches"]["created"] == 1 and stats["batches"]["completed"] == 1
    assert stats["batch_requests"]["completed"] == 3 == batch["usage"]["model_calls"]
    # Its files deleted at the provider once it ended: the input uploaded, the output the provider wrote.
    assert stats["files"] == {"uploaded": 1, "written": 1, "deleted": 2}
    assert batch["batch"] == {
        "status": "completed",
        "request_counts": {"total": 3, "completed": 3, "failed": 0},
        "batches": 1,
        "open": 0,
    }
    assert batch["usage"]["cost_usd"] == cost_at("batch", batch["usage"])
    assert exact_cost("batch", batch["usage"]) * 2 == exact_cost("standard", batch["usage"])


def test_parts_past_the_batch_request_limit_are_split_into_several_batches(
    make_api: MakeApi, simulator: SimulatorServer, settings: Settings
) -> None:
    api = make_api(batch_max_requests=2, **FAST)
    simulator.reconfigure(batch_completion_seconds=1)
    documents: list[dict[str, Any]] = []  # the Lambdas' metric documents (EMF) of this deployment
    remove = observability.add_sink(settings.name_prefix, documents.append)
    try:
        ended = run(api, body(5))
    finally:
        remove()

    stats = simulator.stats.snapshot()
    assert ended["status"] == "SUCCEEDED" and ended["progress"]["succeeded"] == 5
    assert stats["batches"]["created"] == 3 == ended["batch"]["batches"]  # 2 + 2 + 1
    assert stats["batch_requests"]["completed"] == 5 and stats["requests"] == 0  # nothing asked synchronously
    assert ended["batch"]["request_counts"] == {"total": 5, "completed": 5, "failed": 0}
    assert counted(documents, "BatchesSubmitted") == 3 and counted(documents, "BatchRequestsLeft") == 0


def test_batches_wait_for_room_in_the_models_queue_and_never_pass_its_limit(
    make_api: MakeApi, simulator: SimulatorServer
) -> None:
    # About 420 prompt tokens a part: two parts fit the deployment's queue limit at once, not three.
    api = make_api(batch_queue_limit_tokens=1000, **FAST)
    simulator.reconfigure(batch_completion_seconds=1, batch_enqueued_token_limit=1000)

    ended = run(api, body(5))

    stats = simulator.stats.snapshot()
    assert ended["status"] == "SUCCEEDED" and ended["progress"]["succeeded"] == 5
    assert stats["batches"]["created"] == 3 and stats["batches"]["failed"] == 0  # the provider never refused one
    assert stats["batch_requests"]["completed"] == 5 and stats["requests"] == 0


def test_expired_requests_are_resubmitted_once_then_their_parts_fail_with_the_reason(
    make_api: MakeApi, simulator: SimulatorServer
) -> None:
    api = make_api(**FAST)
    # The first batch answers one request of three; the resubmission of the other two answers none.
    simulator.reconfigure(batch_completion_seconds=1, batch_faults=["expire/1", "expire/0"])

    ended = run(api, body(3))

    stats = simulator.stats.snapshot()
    results = all_results(api, ended["id"])
    assert ended["status"] == "FAILED"
    assert stats["batches"]["created"] == 2 and stats["batches"]["expired"] == 2
    assert stats["batch_requests"] == {"completed": 1, "failed": 0, "expired": 4, "cancelled": 0}
    assert sorted(r["status"] for r in results) == ["FAILED", "FAILED", "SUCCEEDED"]
    assert {r["error"]["type"] for r in results if r["status"] == "FAILED"} == {"BatchExpired"}
    assert stats["requests"] == 0  # an expired request is not asked synchronously
    assert ended["usage"]["model_calls"] == 1


def test_a_resubmission_after_expiry_completes_the_validation(make_api: MakeApi, simulator: SimulatorServer) -> None:
    api = make_api(**FAST)
    simulator.reconfigure(batch_completion_seconds=1, batch_faults=["expire/1"])

    ended = run(api, body(3))

    stats = simulator.stats.snapshot()
    assert ended["status"] == "SUCCEEDED" and ended["progress"]["succeeded"] == 3
    assert stats["batches"]["created"] == 2 and stats["batch_requests"]["completed"] == 3
    assert ended["usage"]["cost_usd"] == cost_at("batch", ended["usage"])


def test_a_malformed_output_line_sends_its_part_the_synchronous_way(
    make_api: MakeApi, simulator: SimulatorServer
) -> None:
    api = make_api(**FAST)
    simulator.reconfigure(batch_completion_seconds=1, batch_faults=["malformed_output"])

    ended = run(api, body(3))

    stats = simulator.stats.snapshot()
    assert ended["status"] == "SUCCEEDED" and ended["progress"]["succeeded"] == 3
    assert stats["batch_requests"]["completed"] == 3
    assert stats["requests"] == 1  # the part of the cut line, asked at the standard tier
    assert ended["usage"]["model_calls"] == 3  # two batch answers read, one synchronous call


def test_per_request_errors_send_their_parts_the_synchronous_way(make_api: MakeApi, simulator: SimulatorServer) -> None:
    api = make_api(**FAST)
    simulator.reconfigure(batch_completion_seconds=1, batch_failure_rate=1.0)  # every request answered 500

    ended = run(api, body(3))

    stats = simulator.stats.snapshot()
    assert ended["status"] == "SUCCEEDED" and ended["progress"]["succeeded"] == 3
    assert stats["batch_requests"]["failed"] == 3 and stats["requests"] == 3
    assert ended["batch"]["request_counts"] == {"total": 3, "completed": 0, "failed": 3}
    # Asked again synchronously at the validation's batch_sync_tier: flex, half price like the batch.
    assert ended["usage"]["cost_usd"] == cost_at("flex", ended["usage"])


def test_cancel_mid_batch_cancels_the_open_batch_and_keeps_the_answers_that_came_back(
    make_api: MakeApi, simulator: SimulatorServer
) -> None:
    # One batch of two parts at a time (the queue limit): the first completes, the second is open.
    api = make_api(batch_queue_limit_tokens=1000, batch_cancel_wait_seconds=20, **FAST)
    simulator.reconfigure(batch_completion_seconds=1)
    created = api.post("/validations", json=body(4)).json()
    wait_for(lambda: (api.get(f"/validations/{created['id']}").json().get("batch") or {}).get("batches") == 1)
    simulator.reconfigure(batch_completion_seconds=30)  # the batches made from now on answer late
    wait_for(
        lambda: (
            (v := api.get(f"/validations/{created['id']}").json())["progress"]["succeeded"] == 2
            and (v.get("batch") or {}).get("batches") == 2
            and v["batch"]["open"] == 1
        )
    )

    cancelled = api.delete(f"/validations/{created['id']}")
    ended = wait_for_status(api, created["id"])

    stats = simulator.stats.snapshot()
    results = all_results(api, created["id"])
    assert cancelled.status_code in (200, 202) and ended["status"] == "CANCELLED"
    assert stats["batches"]["cancel_requests"] == 1 and stats["batches"]["cancelled"] == 1
    assert stats["batches"]["completed"] == 1
    assert sum(r["status"] == "SUCCEEDED" for r in results) == 2  # the first batch's answers are kept
    assert ended["usage"]["model_calls"] == 2 and stats["requests"] == 0
    assert ended["batch"]["open"] == 0 and ended["batch"]["status"] == "cancelled"


def test_the_batch_tier_is_refused_naming_tier_when_the_quota_or_the_model_leaves_it_out(make_api: MakeApi) -> None:
    api = make_api()
    user = api.post(
        "/admin/users",
        json={
            "user_id": "no-batch",
            "quota": {"capacity_tokens": 100_000, "refill_tokens_per_minute": 60_000, "max_running": 2},
        },
    ).json()
    headers = {"Authorization": f"Bearer {user['api_key']}"}
    by_quota = api.post("/validations", json=body(1), headers=headers)
    models = api.patch(
        "/admin/models",
        json={
            "models": [
                {"name": "simulator", "target_tpm": 100_000, "target_rpm": 1000, "tiers": ["standard"], "default": True}
            ]
        },
    )
    assert models.status_code == 200, models.text
    by_model = api.post("/validations", json=body(1))

    assert by_quota.status_code == 422 and by_quota.json()["field"] == "tier"
    assert by_model.status_code == 422 and by_model.json()["field"] == "tier"
    assert "batch" in by_model.json()["detail"]


def test_a_batch_validations_combine_calls_go_at_flex_unless_it_asks_standard(
    make_api: MakeApi, simulator: SimulatorServer
) -> None:
    """The synchronous calls of a batch validation (here the combine call of a file of several parts)
    take its `batch_sync_tier`: flex by default (half price, as the batch), or standard when asked."""
    api = make_api(part_max_tokens=100, **FAST)
    simulator.reconfigure(batch_completion_seconds=1)
    file = {"name": "long.txt", "content": lines_document(40, marker_every=15)}

    by_default = run(api, {"documents": [file], "rules": RULES, "tier": "batch", "reuse": False})
    flex_then = simulator.stats.served_tiers.get("flex", 0)
    asked = run(
        api, {"documents": [file], "rules": RULES, "tier": "batch", "reuse": False, "batch_sync_tier": "standard"}
    )
    flex_after = simulator.stats.served_tiers.get("flex", 0)

    assert by_default["files"][0]["parts"] > 1 and by_default["status"] == asked["status"] == "SUCCEEDED"
    assert (by_default["batch_sync_tier"], asked["batch_sync_tier"]) == ("flex", "standard")
    assert verdicts(api, by_default["id"]) == verdicts(api, asked["id"])
    assert flex_then >= 1 and flex_after == flex_then  # the combine calls: at flex, then none at flex
    assert by_default["usage"]["cost_usd"] == cost_at("batch", by_default["usage"])  # every call at half price
    assert asked["usage"]["cost_usd"] > cost_at("batch", asked["usage"])  # its combine calls at standard


def test_a_cut_batch_answer_is_asked_anew_with_twice_the_room(make_api: MakeApi, simulator: SimulatorServer) -> None:
    """An answer the Batch API cut at `completion_max_tokens` is asked anew synchronously with twice that
    allowance at once, as the synchronous path's second attempt would be: one call more, not two."""
    api = make_api(completion_max_tokens=ROOM, **FAST)
    simulator.reconfigure(batch_completion_seconds=1)

    standard = run(api, body(2, "standard"))
    batch = run(api, body(2))

    assert standard["status"] == batch["status"] == "SUCCEEDED"
    assert verdicts(api, batch["id"]) == verdicts(api, standard["id"])
    # d0 passes (its answer fits ROOM); d1's finding does not: cut at ROOM, then answered at twice ROOM.
    assert standard["usage"]["model_calls"] == 3
    assert batch["usage"]["model_calls"] == 3  # d1: the batch's cut answer, then one call at twice ROOM
    assert simulator.stats.snapshot()["batch_requests"]["completed"] == 2


def test_a_run_that_fails_while_its_batches_are_open_cancels_them_and_frees_the_models_queue(
    make_api: MakeApi, simulator: SimulatorServer, aws: Aws, settings: Settings
) -> None:
    """PollBatches fails for good (the provider refuses the key: 401, not retried): the failure goes
    through CloseBatches before MarkFailed, so the open batch's record ends and its tokens leave the
    model's queue, instead of holding the queue's room forever."""
    api = make_api(**FAST)
    simulator.reconfigure(batch_completion_seconds=300)  # open for the whole test
    created = api.post("/validations", json=body(2)).json()
    wait_for(lambda: (api.get(f"/validations/{created['id']}").json().get("batch") or {}).get("open") == 1)
    queue = {"pk": {"S": "batch-queue#simulator"}, "sk": {"S": "enqueued"}}
    governor = aws.client("dynamodb")

    def enqueued() -> int:
        item = governor.get_item(TableName=settings.table("governor"), Key=queue, ConsistentRead=True).get("Item")
        return int(item["enqueued"]["N"]) if item else 0

    assert enqueued() > 0
    simulator.reconfigure(api_key="another-key")  # every call from now on: 401

    ended = wait_for_status(api, created["id"])

    assert ended["status"] == "FAILED"
    assert ended["batch"]["open"] == 0  # the record ended: no batch left open on the validation
    assert enqueued() == 0  # its tokens back in the model's queue


def test_a_batch_is_cut_where_the_invocation_would_run_out_of_time_to_build_it(
    make_api: MakeApi, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building a batch stops UPLOAD_MARGIN_MILLIS before the invocation's reserve, so the upload and
    the create always have time: with no time at all to build, every batch holds its first request
    only, and the rest go in the next polls' batches."""
    monkeypatch.setattr(lane, "UPLOAD_MARGIN_MILLIS", 10**9)  # the embedded Lambdas run in this process
    api = make_api(**FAST)
    simulator.reconfigure(batch_completion_seconds=1)

    ended = run(api, body(3))

    stats = simulator.stats.snapshot()
    assert ended["status"] == "SUCCEEDED" and stats["batches"]["created"] == 3 == ended["batch"]["batches"]
    assert stats["batch_requests"]["completed"] == 3 and stats["requests"] == 0


def test_a_models_own_batch_queue_limit_from_the_models_list_holds_its_batches(
    make_api: MakeApi, simulator: SimulatorServer
) -> None:
    """The deployment's BATCH_QUEUE_LIMIT_TOKENS is the default; a model's `batch_queue_tokens` in the
    admin's list replaces it for that model (here 1,000: two parts at once, so five parts take three
    batches where the deployment's limit would take one)."""
    api = make_api(**FAST)
    simulator.reconfigure(batch_completion_seconds=1, batch_enqueued_token_limit=1000)
    listed = {"name": "simulator", "target_tpm": 2_000_000, "target_rpm": 10_000, "default": True}
    changed = api.patch(
        "/admin/models", json={"models": [{**listed, "tiers": ["standard", "batch"], "batch_queue_tokens": 1000}]}
    )
    refused = api.patch("/admin/models", json={"models": [{**listed, "tiers": ["batch"], "batch_queue_tokens": 5}]})

    ended = run(api, body(5))

    assert changed.status_code == 200 and changed.json()["models"][0]["batch_queue_tokens"] == 1000
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "body.models.0.batch_queue_tokens"
    stats = simulator.stats.snapshot()
    assert ended["status"] == "SUCCEEDED" and stats["batches"]["created"] == 3 and stats["batches"]["failed"] == 0


def test_a_batch_created_but_not_recorded_is_found_by_its_metadata_and_adopted(
    make_api: MakeApi, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch Lambda dies between the provider's create and recording the batch's id: the retried
    task's poll finds the batch by its metadata (validation, run, sequence) and records it, so its
    parts are not submitted again in a second batch (billed twice, the first never collected)."""
    original, failures = Batches.created, cast("list[tuple[Any, ...]]", [])

    def dies_once(self: Batches, *args: Any, **kwargs: Any) -> bool:
        if not failures:
            failures.append(args)
            raise StoreUnavailable("the invocation died here")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Batches, "created", dies_once)  # the embedded Lambdas run in this process
    api = make_api(**FAST)
    simulator.reconfigure(batch_completion_seconds=1)

    ended = run(api, body(3))

    stats = simulator.stats.snapshot()
    assert len(failures) == 1 and ended["status"] == "SUCCEEDED"
    assert stats["batches"]["created"] == 1 and stats["batch_requests"]["completed"] == 3  # no second batch
    assert ended["usage"]["model_calls"] == 3 and ended["batch"]["batches"] == 1


class _BatchClock:
    """The simulator's batch clock, moved by the test: a batch answers when the test says so."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def test_an_upload_overwritten_while_its_batch_runs_fails_its_parts_with_file_changed(
    make_api: MakeApi, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload_patches.apply()  # once per process; a no-op where the embedded AWS applies it itself
    clock = _BatchClock()
    monkeypatch.setattr(simulator.simulator.batches, "_clock", clock)
    simulator.reconfigure(batch_completion_seconds=600)  # in progress until the clock moves
    api = make_api(part_max_tokens=100, **FAST)
    planned = "".join(f"row {i:03d}: {'secret' if i == 5 else 'public'} value\n" for i in range(1, 61)).encode()
    (ticket,) = declare(api, ("admin", {}), {"name": "app.log", "size": len(planned)})
    assert httpx.put(ticket["url"], content=planned, headers=ticket["headers"]).status_code == 200
    created = api.post(
        "/validations", json={"uploads": [ticket["upload_id"]], "rules": RULES, "tier": "batch", "reuse": False}
    )
    assert created.status_code == 202, created.text
    vid = created.json()["id"]
    wait_for(lambda: (api.get(f"/validations/{vid}").json().get("batch") or {}).get("open") == 1)

    overwritten = planned.replace(b"public", b"secret")  # the same size, other bytes
    assert httpx.put(ticket["url"], content=overwritten, headers=ticket["headers"]).status_code == 200
    clock.offset = 10_000  # the batch answers: its answers are collected against the object planned
    ended = wait_for_status(api, vid)

    total = ended["progress"]["total"]
    assert ended["status"] == "FAILED" and total >= 3
    assert ended["progress"]["failed"] == total  # every part's text changed before its answer was grounded
    assert ended["usage"]["model_calls"] == total and simulator.stats.requests == 0  # kept, none asked again
    (result,) = all_results(api, vid)
    assert result["error"]["type"] == "file_changed", result["error"]

"""The simulator's Files and Batch APIs (local/simulator/files.py, batches.py), through the OpenAI SDK.

Most tests drive the batches' timeline with a hand-moved clock (the simulator's `clock`), so a step is
taken when the test moves the clock past it and calls the API, never by waiting.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any, Final

import openai
import pytest
from fastapi.testclient import TestClient
from openai.types import Batch

from core.tokens import count_message_tokens
from local.simulator.app import Simulator, SimulatorConfig, create_simulator_app
from local.simulator.server import SimulatorServer
from local.simulator.tally import Tally
from tests.simulator.test_prompt_cache import Clock, prompt
from tests.test_simulator import body, part_call

SECONDS = 10.0  # batch_completion_seconds: validating to 1 s, requests from 1 s to 9 s, finalizing to 10 s
ENDPOINT: Final = "/v1/chat/completions"
TEXTS = ["a secret\ntotal 3", "nothing here", "the secret is out\nsecret again", "total: 1", "fine"]
UNANSWERED = ("id", "created")  # the only fields a repeated identical call answers differently


def line(custom_id: str, request: dict[str, Any], **override: Any) -> dict[str, Any]:
    """One line of a batch input file."""
    return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": request, **override}


def requests(count: int = len(TEXTS)) -> list[dict[str, Any]]:
    """Part calls of core/prompt.py, one per text, custom_ids r0, r1, …"""
    return [line(f"r{i}", body(part_call(TEXTS[i % len(TEXTS)]))) for i in range(count)]


def jsonl(items: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(item) + "\n" for item in items).encode()


def read_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [json.loads(raw) for raw in client.files.content(file_id).text.splitlines()]


def without(answer: dict[str, Any], keys: tuple[str, ...] = UNANSWERED) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k not in keys}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim(clock: Clock) -> Simulator:
    return Simulator(SimulatorConfig(latency_seconds=0, batch_completion_seconds=SECONDS), clock=clock)


@pytest.fixture
def client(sim: Simulator) -> Iterator[openai.OpenAI]:
    """The OpenAI SDK talking to the simulator's ASGI app in-process."""
    with TestClient(create_simulator_app(sim)) as http:
        yield openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0)


class Runner:
    """Upload and create through the SDK, and move the clock along a batch's timeline."""

    def __init__(self, client: openai.OpenAI, clock: Clock) -> None:
        self.client, self.clock = client, clock
        self.created: dict[str, float] = {}  # batch id -> the clock at its creation

    def upload(self, content: bytes, filename: str = "input.jsonl") -> str:
        return self.client.files.create(file=(filename, content), purpose="batch").id

    def create(self, items: list[dict[str, Any]] | bytes, **extra: Any) -> Batch:
        file_id = self.upload(items if isinstance(items, bytes) else jsonl(items))
        batch = self.client.batches.create(input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h", **extra)
        self.created[batch.id] = self.clock.now
        return batch

    def at(self, batch: Batch, share: float) -> Batch:
        """The batch as read `share` of the way through its completion time (from its creation)."""
        then = self.created[batch.id] + share * SECONDS
        assert then >= self.clock.now, "the clock only moves forward"
        self.clock.now = then
        return self.client.batches.retrieve(batch.id)


def codes(batch: Batch) -> list[str | None]:
    """The codes of a failed batch's errors."""
    return [e.code for e in (batch.errors.data or [])] if batch.errors else []


@pytest.fixture
def batches(client: openai.OpenAI, clock: Clock) -> Runner:
    return Runner(client, clock)


# --- the lifecycle and the answers -----------------------------------------------------------------


def test_a_batch_moves_through_its_statuses_and_answers_each_request_as_a_synchronous_call_does(
    batches: Runner, sim: Simulator
) -> None:
    # Mistakes, scripted faults and a cached prefix: the batch's answers must come from the same code.
    noisy: dict[str, Any] = {"misnumber_rate": 0.5, "invent_rate": 0.5, "respace_rate": 0.5, "mistake_seed": 3}
    faults = ["part:invent", "cut", "part:line_outside"]
    items = requests() + [
        line("long-1", {"model": "m", "messages": prompt(1994, "dog"), "max_tokens": 50}),
        line("long-2", {"model": "m", "messages": prompt(1994, "fish"), "max_tokens": 50}),
    ]
    sim.reconfigure(faults=faults, **noisy)
    synchronous = Simulator(SimulatorConfig(latency_seconds=0, faults=faults, **noisy), clock=Clock())
    expected = [json.loads(bytes(asyncio.run(synchronous.complete(i["body"])).body)) for i in items]

    created = batches.create(items, metadata={"run": "first"})
    seen = [
        created,
        batches.at(created, 0.05),
        batches.at(created, 0.5),
        batches.at(created, 0.95),
        batches.at(created, 1.0),
    ]

    assert [b.status for b in seen] == ["validating", "validating", "in_progress", "finalizing", "completed"]
    assert [b.request_counts and b.request_counts.completed for b in seen] == [0, 0, 3, 7, 7]
    done = seen[-1]
    assert done.request_counts and done.request_counts.total == 7 and done.request_counts.failed == 0
    assert done.metadata == {"run": "first"} and done.model == "m" and done.error_file_id is None
    assert done.created_at <= (done.in_progress_at or 0) <= (done.finalizing_at or 0) <= (done.completed_at or 0)
    assert (done.completed_at or 0) - done.created_at == int(SECONDS)  # the timeline's offsets, not the wall's
    answered = read_lines(batches.client, done.output_file_id)
    assert [a["custom_id"] for a in answered] == [i["custom_id"] for i in items]  # in input order
    assert all(a["error"] is None and a["response"]["status_code"] == 200 for a in answered)
    assert all(a["id"].startswith("batch_req_") for a in answered)
    assert [without(a["response"]["body"]) for a in answered] == [without(e) for e in expected]
    assert answered[-1]["response"]["body"]["usage"]["prompt_tokens_details"]["cached_tokens"] == 1920
    assert {a["response"]["body"]["service_tier"] for a in answered} == {"default"}  # as OpenAI's batch output says
    usage = [a["response"]["body"]["usage"] for a in answered]
    assert done.usage and done.usage.input_tokens == sum(u["prompt_tokens"] for u in usage)
    assert done.usage.output_tokens == sum(u["completion_tokens"] for u in usage)
    assert done.usage.input_tokens_details.cached_tokens == 1920
    # The same tallies as the synchronous calls, without ever meeting the rate limits.
    stats, sync_stats = sim.stats.snapshot(), synchronous.stats.snapshot()
    same = ("part_calls", "faults_injected", "cut_answers", "billed_tokens", "cached_prompt_tokens", "mistakes")
    assert {k: stats[k] for k in same} == {k: sync_stats[k] for k in same}
    assert stats["requests"] == 0 and stats["admitted_tokens"] == 0
    assert stats["files"] == {"uploaded": 1, "written": 1, "deleted": 0}
    assert stats["batches"] == {**dict.fromkeys(stats["batches"], 0), "created": 1, "completed": 1}
    assert stats["batch_requests"] == {"completed": 7, "failed": 0, "expired": 0, "cancelled": 0}


def test_over_http_a_batch_polled_with_the_sdk_completes_and_its_files_can_be_read_and_deleted(
    simulator: SimulatorServer,
) -> None:
    simulator.reconfigure(batch_completion_seconds=0.2)
    client = openai.OpenAI(base_url=simulator.base_url, api_key="x", max_retries=0)
    uploaded = client.files.create(file=("input.jsonl", jsonl(requests(3))), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h")

    for _ in range(400):  # a guard, not a bound: the batch ends 0.2 s after its creation
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            break
        time.sleep(0.02)
        batch = client.batches.retrieve(batch.id)

    assert batch.status == "completed"
    assert uploaded.purpose == "batch" and uploaded.filename == "input.jsonl" and uploaded.id.startswith("file-")
    assert uploaded.bytes == len(jsonl(requests(3)))
    assert client.files.content(uploaded.id).content == jsonl(requests(3))
    output = client.files.retrieve(batch.output_file_id or "")
    assert (output.purpose, output.filename) == ("batch_output", f"{batch.id}_output.jsonl")
    assert [a["custom_id"] for a in read_lines(client, output.id)] == ["r0", "r1", "r2"]
    deleted = client.files.delete(uploaded.id)
    assert deleted.deleted and deleted.id == uploaded.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)
    stats = simulator.stats.snapshot()
    assert stats["files"] == {"uploaded": 1, "written": 1, "deleted": 1}
    assert stats["batch_requests"]["completed"] == 3 and stats["part_calls"] == 3


# --- what is refused -------------------------------------------------------------------------------


def test_an_input_file_that_fails_openais_checks_fails_the_batch_with_an_error_per_line(
    batches: Runner, sim: Simulator
) -> None:
    first, second = requests(2)
    raw = "\n".join(
        [
            json.dumps(first),
            '{"custom_id": "broken", ',  # line 2: not JSON
            json.dumps(line("r0", first["body"])),  # line 3: r0 again
            json.dumps(line("r9", {**second["body"], "model": "other"})),  # line 4: a second model
            "",  # blank lines are skipped
            json.dumps(line("r5", first["body"], method="GET", url="/v1/embeddings")),  # line 6
            json.dumps(["not", "an", "object"]),  # line 7
            json.dumps({"custom_id": "r8", "method": "POST", "url": ENDPOINT, "body": {"messages": []}}),  # line 8
        ]
    ).encode()

    created = batches.create(raw)
    failed = batches.at(created, 0.1)

    assert created.status == "validating" and failed.status == "failed"
    assert failed.failed_at is not None and failed.in_progress_at is None
    assert failed.errors and failed.errors.data
    assert [(e.code, e.line, e.param) for e in failed.errors.data] == [
        ("invalid_json_line", 2, None),
        ("duplicate_custom_id", 3, "custom_id"),
        ("model_mismatch", 4, "body.model"),
        ("invalid_value", 6, "method"),
        ("url_mismatch", 6, "url"),
        ("invalid_request", 7, None),
        ("missing_required_parameter", 8, "body.model"),
    ]
    assert failed.errors.data[0].message == "This line is not parseable as valid JSON."
    assert failed.output_file_id is None and failed.error_file_id is None
    assert failed.request_counts and failed.request_counts.total == 0
    assert batches.at(created, 2.0).status == "failed"  # ended: it moves no more
    stats = sim.stats.snapshot()
    assert stats["batches"]["failed"] == 1 and stats["part_calls"] == 0 and stats["files"]["written"] == 0


def test_the_request_and_size_limits_and_an_empty_file_fail_the_batch(batches: Runner, sim: Simulator) -> None:
    sim.reconfigure(batch_max_requests=2)
    too_many = batches.create(requests(3))
    sim.reconfigure(batch_max_requests=50_000, batch_max_bytes=len(jsonl(requests(2))) - 1)
    too_large = batches.create(requests(2))
    empty = batches.create(b"\n\n")

    failed = [batches.at(b, 0.1) for b in (too_many, too_large, empty)]

    assert [codes(b) for b in failed] == [["too_many_tasks"], ["file_too_large"], ["empty_file"]]
    assert (
        failed[1].errors
        and failed[1].errors.data
        and failed[1].errors.data[0].message
        == (
            f"The batch input file is larger than the {len(jsonl(requests(2))) - 1} maximum for the m model. "
            "Please try again with a smaller batch."
        )
    )


def test_what_openai_refuses_at_once_is_its_error_body_with_its_status(
    batches: Runner, client: openai.OpenAI, sim: Simulator
) -> None:
    file_id = batches.upload(jsonl(requests(1)))

    with pytest.raises(openai.BadRequestError) as not_jsonl:
        client.files.create(file=("input.csv", b"a,b\n"), purpose="batch")
    with pytest.raises(openai.BadRequestError) as purpose:
        client.files.create(file=("input.jsonl", b"{}\n"), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as endpoint:
        client.batches.create(input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h")
    with pytest.raises(openai.BadRequestError) as window:
        client.batches.create(input_file_id=file_id, endpoint=ENDPOINT, completion_window="1h")  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError) as unknown_file:
        client.batches.create(input_file_id="file-nothing", endpoint=ENDPOINT, completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nothing")
    with pytest.raises(openai.NotFoundError):
        client.files.content("file-nothing")

    assert not_jsonl.value.body == {
        "message": "Invalid file format for Batch API. Must be .jsonl",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    assert (purpose.value.code, purpose.value.param) == ("invalid_value", "purpose")
    assert (endpoint.value.code, endpoint.value.param) == ("invalid_value", "endpoint")
    assert (window.value.code, window.value.param) == ("invalid_value", "completion_window")
    assert isinstance(unknown_file.value.body, dict)
    assert unknown_file.value.body["message"] == "No such File object: file-nothing"
    stats = sim.stats.snapshot()
    assert stats["files"]["uploaded"] == 1 and stats["batches"]["created"] == 0


def test_with_a_key_configured_the_files_and_batches_apis_refuse_a_call_without_it(sim: Simulator) -> None:
    sim.reconfigure(api_key="sk-simulated-0123456789")
    with TestClient(create_simulator_app(sim)) as http:
        wrong = openai.OpenAI(base_url="http://testserver/v1", api_key="sk-wrong", http_client=http, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as caught:
            wrong.files.create(file=("input.jsonl", jsonl(requests(1))), purpose="batch")
        with pytest.raises(openai.AuthenticationError):
            wrong.batches.list()

    assert caught.value.code == "invalid_api_key"
    assert sim.stats.snapshot()["unauthorized"] == 2 and sim.stats.snapshot()["files"]["uploaded"] == 0


def test_reconfigure_refuses_a_bad_batch_setting_or_fault_before_changing_anything(sim: Simulator) -> None:
    with pytest.raises(ValueError, match="unknown simulator batch fault"):
        sim.reconfigure(faults=["cut"], batch_faults=["expire", "explode"])
    with pytest.raises(ValueError, match="batch_failure_rate"):
        sim.reconfigure(batch_failure_rate=1.5, batch_completion_seconds=1)

    assert sim.config.faults == [] and sim.config.batch_faults == []
    assert sim.config.batch_completion_seconds == SECONDS


# --- failure modes ----------------------------------------------------------------------------------


def drawn(ordinal: int, custom_id: str, rate: float) -> bool:
    """batches.py's draw, as its docstring states it."""
    digest = hashlib.sha256(json.dumps([ordinal, custom_id]).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def test_failed_requests_go_to_the_error_file_with_their_status_and_body(
    batches: Runner, client: openai.OpenAI, sim: Simulator
) -> None:
    sim.reconfigure(batch_failed_custom_ids=["r1"])
    items = requests(3) + [line("tier", {**requests(1)[0]["body"], "service_tier": "cheap"})]

    done = batches.at(batches.create(items), 1.0)

    assert done.status == "completed"
    assert done.request_counts and (done.request_counts.completed, done.request_counts.failed) == (2, 2)
    assert [a["custom_id"] for a in read_lines(client, done.output_file_id)] == ["r0", "r2"]
    injected, refused = read_lines(client, done.error_file_id)
    assert injected["custom_id"] == "r1" and injected["error"] is None
    assert injected["response"]["status_code"] == 500
    assert injected["response"]["body"]["error"]["type"] == "server_error"
    assert refused["custom_id"] == "tier" and refused["response"]["status_code"] == 400  # as a synchronous call
    assert refused["response"]["body"]["error"]["param"] == "service_tier" and refused["error"] is None
    stats = sim.stats.snapshot()
    assert stats["batch_requests"]["failed"] == 2 and stats["part_calls"] == 2  # a failure runs no answer code


def test_a_failure_rate_fails_the_requests_its_hash_picks_and_a_resubmitted_batch_draws_anew(
    batches: Runner, client: openai.OpenAI, sim: Simulator
) -> None:
    sim.reconfigure(batch_failure_rate=0.5)
    items = requests(20)
    ids = [i["custom_id"] for i in items]

    first = batches.at(batches.create(items), 1.0)
    second = batches.at(batches.create(items), 1.0)

    failed = [[e["custom_id"] for e in read_lines(client, b.error_file_id)] for b in (first, second)]
    assert failed == [[c for c in ids if drawn(0, c, 0.5)], [c for c in ids if drawn(1, c, 0.5)]]
    assert 0 < len(failed[0]) < 20 and failed[0] != failed[1]
    assert sim.stats.snapshot()["batch_requests"]["failed"] == len(failed[0]) + len(failed[1])


def test_a_malformed_output_line_is_written_once_for_the_next_batch(
    batches: Runner, client: openai.OpenAI, sim: Simulator
) -> None:
    sim.reconfigure(batch_faults=["malformed_output"])

    faulty = batches.at(batches.create(requests(3)), 1.0)
    clean = batches.at(batches.create(requests(3)), 1.0)

    raw = client.files.content(faulty.output_file_id or "").text.splitlines()
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw[0])
    assert [json.loads(r)["custom_id"] for r in raw[1:]] == ["r1", "r2"]
    assert faulty.status == "completed" and faulty.request_counts and faulty.request_counts.completed == 3
    assert len(read_lines(client, clean.output_file_id)) == 3  # the fault was used up


def test_an_expired_batch_returns_what_it_answered_and_the_rest_as_batch_expired(
    batches: Runner, client: openai.OpenAI, sim: Simulator
) -> None:
    sim.reconfigure(batch_faults=["expire/2", "expire"])
    expiring, halved = batches.create(requests(5)), batches.create(requests(5))

    running = batches.at(expiring, 0.95)
    expired = batches.at(expiring, 1.0)

    assert running.status == "in_progress"  # it never finalizes
    assert running.request_counts and running.request_counts.completed == 2
    assert expired.status == "expired" and expired.expired_at is not None and expired.completed_at is None
    assert expired.request_counts and (expired.request_counts.total, expired.request_counts.completed) == (5, 2)
    assert expired.request_counts.failed == 0  # requests never executed are not failures
    assert [a["custom_id"] for a in read_lines(client, expired.output_file_id)] == ["r0", "r1"]
    left = read_lines(client, expired.error_file_id)
    assert [e["custom_id"] for e in left] == ["r2", "r3", "r4"]
    assert all(e["response"] is None and e["error"]["code"] == "batch_expired" for e in left)
    assert len(read_lines(client, batches.at(halved, 1.0).output_file_id)) == 2  # `expire`: half, rounded down
    stats = sim.stats.snapshot()
    assert stats["batches"]["expired"] == 2
    assert stats["batch_requests"] == {"completed": 4, "failed": 0, "expired": 6, "cancelled": 0}


def test_cancel_mid_run_keeps_the_answers_made_before_and_lists_the_rest_as_batch_cancelled(
    batches: Runner, client: openai.OpenAI, sim: Simulator
) -> None:
    finished = batches.at(batches.create(requests(1)), 1.0)
    created = batches.create(requests(4))  # answers at 30%, 50%, 70% and 90% of the completion time

    running = batches.at(created, 0.55)
    cancelling = client.batches.cancel(created.id)
    still = batches.at(created, 0.6)
    cancelled = batches.at(created, 0.65)  # 10% of the completion time after the cancel

    assert running.status == "in_progress" and running.request_counts and running.request_counts.completed == 2
    assert cancelling.status == still.status == "cancelling" and cancelling.cancelling_at is not None
    assert still.request_counts and still.request_counts.completed == 2  # no request answered after the cancel
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
    assert [a["custom_id"] for a in read_lines(client, cancelled.output_file_id)] == ["r0", "r1"]
    left = read_lines(client, cancelled.error_file_id)
    assert [(e["custom_id"], e["response"], e["error"]["code"]) for e in left] == [
        ("r2", None, "batch_cancelled"),
        ("r3", None, "batch_cancelled"),
    ]
    assert client.batches.cancel(created.id).status == "cancelled"  # again: answered as it is
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(finished.id)
    stats = sim.stats.snapshot()
    assert stats["batches"]["cancel_requests"] == 1 and stats["batches"]["cancelled"] == 1
    assert stats["batch_requests"] == {"completed": 3, "failed": 0, "expired": 0, "cancelled": 2}
    assert stats["part_calls"] == 3


def test_a_batch_cancelled_while_validating_writes_no_file(batches: Runner, client: openai.OpenAI) -> None:
    created = batches.create(requests(2))

    client.batches.cancel(created.id)
    cancelled = batches.at(created, 0.5)

    assert cancelled.status == "cancelled" and cancelled.in_progress_at is None
    assert cancelled.output_file_id is None and cancelled.error_file_id is None


def test_the_enqueued_token_limit_fails_a_batch_that_would_pass_it_for_its_model(
    batches: Runner, sim: Simulator
) -> None:
    items = requests(2)
    enqueued = sum(count_message_tokens(i["body"]["messages"]) for i in items)
    other_model = [line(i["custom_id"], {**i["body"], "model": "other"}) for i in items]
    sim.reconfigure(batch_enqueued_token_limit=enqueued * 3 // 2)  # one batch fits, two do not

    first, refused, other = batches.create(items), batches.create(items), batches.create(other_model)
    states = [batches.at(b, 0.5) for b in (first, refused, other)]
    ended = [batches.at(first, 1.0).status, batches.at(other, 1.0).status]
    after = batches.create(items)  # once the first has completed, its tokens are no longer enqueued

    assert [s.status for s in states] == ["in_progress", "failed", "in_progress"]
    errors = (states[1].errors and states[1].errors.data) or []
    assert [(e.code, e.line, e.param) for e in errors] == [("token_limit_exceeded", None, None)]
    assert f"Limit: {enqueued * 3 // 2:,} enqueued tokens" in (errors[0].message or "")
    assert states[1].in_progress_at is None and states[1].failed_at is not None
    assert ended == ["completed", "completed"] and batches.at(after, 0.5).status == "in_progress"
    assert sim.stats.snapshot()["batches"]["failed"] == 1


# --- listing ----------------------------------------------------------------------------------------


def test_the_list_pages_newest_first_and_the_sdk_follows_the_pages(batches: Runner, client: openai.OpenAI) -> None:
    created = [batches.create(requests(1)).id for _ in range(5)]

    page = client.batches.list(limit=2)
    every = [b.id for b in client.batches.list(limit=2)]  # the SDK asks for the next page `after` the last id
    rest = client.batches.list(after=created[1], limit=20)

    assert [b.id for b in page.data] == created[::-1][:2] and page.has_more
    assert every == created[::-1]
    assert [b.id for b in rest.data] == [created[0]] and not rest.has_more
    with pytest.raises(openai.BadRequestError):
        client.batches.list(limit=0)
    with pytest.raises(openai.NotFoundError):
        client.batches.list(after="batch_nothing")


def test_the_tally_labels_batched_requests_apart_from_synchronous_calls(batches: Runner, sim: Simulator) -> None:
    tally = Tally(sim, {'"alpha-': "alpha", '"bravo-': "bravo"})
    alpha = [line(f"a{i}", body(part_call("fine", file_name=f"alpha-{i}.txt"))) for i in range(2)]
    bravo = [line("b0", body(part_call("fine", file_name="bravo-0.txt")))]
    try:
        batches.at(batches.create(alpha + bravo), 1.0)
        asyncio.run(sim.complete(bravo[0]["body"]))
    finally:
        tally.close()

    charged = count_message_tokens(alpha[0]["body"]["messages"]) + alpha[0]["body"]["max_tokens"]
    assert [tokens for _, tokens in tally.of("alpha", batched=True)] == [charged, charged]
    assert len(tally.of("bravo", batched=True)) == 1
    assert tally.of("alpha") == [] and len(tally.of("bravo")) == 1

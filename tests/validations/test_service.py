"""ValidationService's create, retry, cancel and purge, and every undo, over in-memory fakes.

No AWS: the ports are tests/support/fakes.py, so each test runs in milliseconds. The
whole-stack behaviour (the same paths against the embedded AWS, with the Lambdas and the
reconciler) is tests/validations/test_fault_windows.py's.

Parts are small here (`part_max_tokens=50`): `LONG` is split into three parts, so a
submission of `SHORT` and `LONG` has parts 00000-000000 and 00001-000000..000002, and file 1
is combined (its verdict is `verdict#00001`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from app.errors import (
    AppError,
    BadRequest,
    Conflict,
    Gone,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
    Unprocessable,
    UpstreamError,
)
from app.identity.principal import Principal
from app.validations.intake import Document, LaneIn, Rule, RulesetVersion, Submission
from app.validations.records import Validation
from app.validations.service import ValidationService
from core import ends, pricing, spend
from core.clock import iso_of
from core.quota import Outcome, Quota, Refusal, rate_limit_headers
from core.records import PartStatus, verdict_id
from core.tokens import count_tokens, max_token_bytes
from tests.support.fakes import Fakes, answer_lost, client_error

QUOTA = Quota(capacity_tokens=100_000, refill_tokens_per_minute=60_000, max_running=1, max_queued=2)
SHORT = Document("a.txt", b"row 1\nrow 2\n")
LONG = Document("b.txt", "".join(f"line {i} with some words in it\n" for i in range(12)).encode())
PARTS = ["00000-000000", "00001-000000", "00001-000001", "00001-000002"]
KEY = "key-1"


def submission(*documents: Document, rule: str = "be tidy") -> Submission:
    return Submission(list(documents or (SHORT, LONG)), [Rule("r1", rule)])


@pytest.fixture(scope="module", autouse=True)
def _tokenizer() -> None:
    """The tokenizer loads once per process (about 0.4 s): here, not in the first test."""
    max_token_bytes()
    count_tokens("warm")


@pytest.fixture
def fakes() -> Fakes:
    return Fakes.new(part_max_tokens=50, completion_max_tokens=16)


@pytest.fixture
def service(fakes: Fakes) -> ValidationService:
    return fakes.service()


@pytest.fixture
def alice(fakes: Fakes) -> Principal:
    return fakes.users.add("alice", QUOTA)


@pytest.fixture
def logs_quiet(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The undo paths log what they leave behind (with a traceback): captured, not printed."""
    caplog.set_level("ERROR", logger="app.validations.service")
    yield caplog


def record(fakes: Fakes, validation_id: str) -> dict[str, Any]:
    return fakes.store.validations[validation_id]


def nothing_stored(fakes: Fakes) -> bool:
    return not fakes.store.validations and not fakes.store.parts and not fakes.store.files


async def ended(
    fakes: Fakes,
    service: ValidationService,
    owner: Principal,
    status: str = "FAILED",
    failed_parts: tuple[str, ...] = (),
    failed_verdict: bool = False,
) -> Validation:
    """A validation of SHORT and LONG whose first run ended as Finalize ends one: its parts
    judged (`failed_parts` FAILED, the others SUCCEEDED), file 1's verdict written, counts and
    status set, the run settled, its execution over, its end announced."""
    validation, _ = await service.create(owner, submission(), None)
    vid = validation.id
    parts = fakes.store.parts[vid]
    for part_id, part in parts.items():
        failed = part_id in failed_parts
        part["status"] = (PartStatus.FAILED if failed else PartStatus.SUCCEEDED).value
        if failed:
            part["error"] = {"type": "model_error", "detail": "the model failed"}
    parts[verdict_id(1)] = {
        "validation_id": vid,
        "part_id": verdict_id(1),
        "file_index": 1,
        "status": (PartStatus.FAILED if failed_verdict else PartStatus.SUCCEEDED).value,
    }
    item = record(fakes, vid)
    item.update(
        status=status,
        finished_at="2030-01-01T00:00:00Z",
        succeeded=len(parts) - 1 - len(failed_parts),
        failed=len(failed_parts),
        combined=0 if failed_verdict else 1,
        combine_failed=1 if failed_verdict else 0,
        file_settled={"0": 1, "1": 3},
        settled_run=item["reserved_run"],
        **({"error": {"type": "parts_failed", "detail": "1 part failed"}} if status == "FAILED" else {}),
    )
    fakes.quotas.counts(owner.user_id)["running"] -= 1
    fakes.executions.end(item["execution_arn"], "SUCCEEDED" if status == "SUCCEEDED" else "FAILED")
    await fakes.events.append_status(vid)
    return Validation.of(dict(item))


# --- create ---------------------------------------------------------------------------------


async def test_create_stores_the_validation_its_parts_and_files_and_starts_its_execution(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    validation, created = await service.create(alice, submission(), None)

    vid = validation.id
    assert created and validation.status == "RUNNING"  # admitted at once: a slot and tokens were free
    stored = record(fakes, vid)
    keys = [f"validations/{vid}/00000", f"validations/{vid}/00001"]
    assert [f["key"] for f in stored["files"]] == keys
    assert [f["parts"] for f in stored["files"]] == [1, 3]
    assert fakes.store.files == {keys[0]: SHORT.content, keys[1]: LONG.content}
    parts = fakes.store.parts[vid]
    assert sorted(parts) == PARTS
    assert {p["status"] for p in parts.values()} == {"PENDING"}
    assert {p["expires_at"] for p in parts.values()} == {stored["expires_at"]}
    assert [parts[c]["key"] for c in PARTS] == [keys[0], keys[1], keys[1], keys[1]]
    estimate = sum(p["estimate"] for p in parts.values()) + sum(f["combine_estimate"] for f in stored["files"])
    assert stored["files"][1]["combine_estimate"] > 0 and stored["files"][0]["combine_estimate"] == 0
    assert stored | {"created_at": None, "expires_at": None, "started_at": None, "admitted_at": None} == {
        "id": vid,
        "owner": "alice",
        "status": "RUNNING",
        "run": 1,
        "run_cost": estimate,
        "estimated_tokens": estimate,
        "total_parts": 4,
        "total_combines": 1,
        # No counter: they are counted on the validation's tallies, and one at 0 is not stored.
        "files": stored["files"],
        "rules": [{"id": "r1", "text": "be tidy"}],
        "reuse": True,
        "priority": "normal",
        "kind": "validation",
        "tier": "standard",
        "model": "gpt-4o-mini",
        "prices": pricing.stored_prices(pricing.DEFAULT_PRICES, "gpt-4o-mini"),
        "execution_arn": fakes.executions.arn_of(vid),
        # What the admission wrote (the queue_key went with it):
        "reserved": estimate,
        "reserved_run": 1,
        "usage_at_start": 0,
        "created_at": None,
        "expires_at": None,
        "started_at": None,
        "admitted_at": None,
    }
    assert fakes.executions.started == [
        (
            vid,
            {
                "validation_id": vid,
                "run": 1,
                "batches": [{"first": c, "last": c} for c in PARTS],
                "combine": [{"first": 1, "last": 1}],
            },
        )
    ]
    assert fakes.events.statuses(vid) == ["RUNNING"]
    assert fakes.quotas.counts("alice") == {"running": 1, "queued": 0}


async def test_create_under_the_queue_policy_leaves_a_refused_validation_queued_but_started(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    first, _ = await service.create(alice, submission(), None)
    second, created = await service.create(alice, submission(SHORT), None)

    assert created and second.status == "QUEUED"  # max_running 1: the execution's admit step waits
    assert second.queue is not None and second.queue.position == 1 and second.queue.estimated_start
    assert [name for name, _ in fakes.executions.started] == [first.id, second.id]
    assert record(fakes, second.id)["queue_key"].endswith(f"#{second.id}")
    assert fakes.quotas.counts("alice") == {"running": 1, "queued": 1}


async def test_create_with_a_repeated_idempotency_key_and_body_answers_the_first_validation(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    first, created = await service.create(alice, submission(), KEY)
    again, created_again = await service.create(alice, submission(), KEY)

    assert created and not created_again
    assert again.id == first.id
    assert fakes.executions.count("start") == 1 and list(fakes.store.validations) == [first.id]
    assert fakes.store.claims[f"alice#{KEY}"]["state"] == "done"
    assert fakes.store.claims[f"alice#{KEY}"]["validation_id"] == first.id


async def test_create_with_a_repeated_idempotency_key_and_another_body_is_422(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    first, _ = await service.create(alice, submission(), KEY)

    with pytest.raises(Unprocessable) as refused:
        await service.create(alice, submission(rule="be kind"), KEY)

    assert refused.value.status == 422 and refused.value.extra["field"] == "Idempotency-Key"
    assert fakes.executions.count("start") == 1 and list(fakes.store.validations) == [first.id]


# --- spend budgets ---------------------------------------------------------------------------


def budgeted(fakes: Fakes, max_spend_usd: float, period: str = "month") -> Principal:
    return fakes.users.add("alice", replace(QUOTA, max_running=5, max_spend_usd=max_spend_usd, spend_period=period))


async def test_a_budget_reserves_the_estimated_cost_and_refuses_what_would_pass_it_naming_budget(
    fakes: Fakes, service: ValidationService
) -> None:
    alice = budgeted(fakes, 1.0)
    first, _ = await service.create(alice, submission(), None)
    amount = record(fakes, first.id)["budget_reserved"]
    key = record(fakes, first.id)["budget_key"]
    # The planned prompt tokens at gpt-4o-mini's standard price, completions at the prior's p90 ratio.
    # 4 part calls, and 3 combine calls (3 reports, 2 per call at this part size: 2, then 1)
    prompt_tokens = first.estimated_tokens - (4 + 3) * 16
    assert amount == pricing.DEFAULT_PRICES["gpt-4o-mini"]["standard"].cost(
        prompt_tokens, 0, round(prompt_tokens * 0.25)
    )
    assert key == spend.period_key("month", time.time())

    tight = Fakes.new(part_max_tokens=50, completion_max_tokens=16)
    alice = budgeted(tight, float(amount) * 1.5, "day")
    await tight.service().create(alice, submission(), None)  # fits
    with pytest.raises(TooManyRequests) as refused:
        await tight.service().create(alice, submission(), KEY)  # 2 × amount > 1.5 × amount

    problem = refused.value.extra
    assert (problem["limit"], problem["limit_value"]) == ("budget", float(amount) * 1.5)
    assert problem["remaining_usd"] == pytest.approx(float(amount) * 0.5, abs=1e-4)
    resets = spend.resets_at("day", time.time())
    assert problem["resets_at"] == iso_of(resets)
    assert 0 < int(refused.value.headers["Retry-After"]) <= 86_401
    assert len(tight.store.validations) == 1 and f"alice#{KEY}" not in tight.store.claims


async def test_a_budget_with_a_model_that_has_no_price_is_refused_naming_the_model(fakes: Fakes) -> None:
    fakes.prices.prices = {}
    alice = budgeted(fakes, 1.0)

    with pytest.raises(Unprocessable) as refused:
        await fakes.service().create(alice, submission(), None)

    assert refused.value.extra["field"] == "model" and nothing_stored(fakes)


async def test_a_submission_that_fails_before_admission_gives_its_budget_reservation_back(
    fakes: Fakes, service: ValidationService
) -> None:
    alice = budgeted(fakes, 1.0)
    fakes.store.fail("put_files")

    with pytest.raises(AppError):
        await service.create(alice, submission(), None)

    (held,) = fakes.spending.periods.values()
    assert held["reserved_usd"] == 0 and held["committed_usd"] == 0 and nothing_stored(fakes)


async def test_without_a_price_a_validation_records_no_prices_and_its_cost_is_null(
    fakes: Fakes, alice: Principal
) -> None:
    fakes.prices.prices = {}

    validation, _ = await fakes.service().create(alice, submission(), None)

    assert validation.prices is None and validation.cost_usd is None


# --- lanes -----------------------------------------------------------------------------------


async def test_a_submission_without_a_tier_takes_its_owners_default_and_records_the_flex_lane(fakes: Fakes) -> None:
    alice = fakes.users.add("alice", replace(QUOTA, default_tier="flex"))

    validation, _ = await fakes.service().create(alice, submission(), None)
    asked, _ = await fakes.service().create(alice, replace(submission(), lane=LaneIn(tier="standard")), None)

    stored = record(fakes, validation.id)
    assert (stored["tier"], stored["flex_deadline_seconds"], stored["flex_fallback"]) == ("flex", 300, "standard")
    assert record(fakes, asked.id)["tier"] == "standard" and "flex_fallback" not in record(fakes, asked.id)


async def test_a_flex_lane_that_may_fall_back_reserves_its_budget_at_the_standard_price(fakes: Fakes) -> None:
    alice = fakes.users.add("alice", replace(QUOTA, max_running=5, max_spend_usd=1.0))
    fakes.prices.prices["gpt-4o-mini"] = pricing.DEFAULT_PRICES["gpt-5-mini"]  # a model with a flex price
    service = fakes.service()

    falls_back, _ = await service.create(alice, replace(submission(), lane=LaneIn(tier="flex")), None)
    fails, _ = await service.create(alice, replace(submission(), lane=LaneIn(tier="flex", flex_fallback="fail")), None)

    assert record(fakes, fails.id)["budget_reserved"] * 2 == record(fakes, falls_back.id)["budget_reserved"]


# --- stored rule sets ----------------------------------------------------------------------


async def test_a_ruleset_reference_puts_that_versions_rules_first_and_records_the_version(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    fakes.rulesets.add("alice", "tidy", Rule("old", "be old"))
    fakes.rulesets.add("alice", "tidy", Rule("tidy", "be tidy"), Rule("short", "be short"))

    latest, _ = await service.create(alice, replace(submission(), ruleset="tidy"), None)
    pinned, _ = await service.create(alice, Submission([SHORT], [], ruleset="tidy@1"), None)

    assert record(fakes, latest.id)["rules"] == [
        {"id": "tidy", "text": "be tidy"},
        {"id": "short", "text": "be short"},
        {"id": "r1", "text": "be tidy"},  # the inline rule after the set's
    ]
    assert record(fakes, latest.id)["ruleset"] == {"owner": "alice", "name": "tidy", "version": 2}
    assert record(fakes, pinned.id)["rules"] == [{"id": "old", "text": "be old"}]
    assert record(fakes, pinned.id)["ruleset"] == {"owner": "alice", "name": "tidy", "version": 1}


async def test_a_shared_ruleset_is_used_when_the_caller_has_none_of_that_name(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    fakes.rulesets.add("admin", "house", Rule("h", "be housebroken"))

    validation, _ = await service.create(alice, Submission([SHORT], [], ruleset="house"), None)

    assert validation.ruleset == {"owner": "admin", "name": "house", "version": 1}


@pytest.mark.parametrize(
    ("reference", "inline", "status", "field"),
    [
        ("nope", [], 404, "ruleset"),  # no such set
        ("tidy@7", [], 404, "ruleset"),  # no such version
        ("tidy", [Rule("tidy", "again")], 422, "rules"),  # an inline id repeats the set's
        ("tidy", [Rule(f"x{i}", "more") for i in range(4)], 422, "rules"),  # past max_rules with the set's
    ],
)
async def test_a_ruleset_that_cannot_be_used_is_refused_naming_the_field_and_stores_nothing(
    reference: str, inline: list[Rule], status: int, field: str
) -> None:
    fakes = Fakes.new(part_max_tokens=50, completion_max_tokens=16, max_rules=4)
    alice = fakes.users.add("alice", QUOTA)
    fakes.rulesets.add("alice", "tidy", Rule("tidy", "be tidy"))

    with pytest.raises(AppError) as refused:
        await fakes.service().create(alice, Submission([SHORT], inline, ruleset=reference), KEY)

    assert (refused.value.status, refused.value.extra.get("field")) == (status, field)
    if status == 422 and inline and len(inline) > 1:
        assert refused.value.extra["limit"] == "max_rules"
    assert not fakes.store.validations and not fakes.store.files and fakes.executions.count("start") == 0
    assert f"alice#{KEY}" not in fakes.store.claims  # the key may be used again


async def test_a_rule_test_run_is_a_validation_of_kind_test_over_the_versions_rules(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    version = RulesetVersion("alice", "tidy", 3, (Rule("tidy", "be tidy"),))

    validation, _ = await service.create(alice, Submission([SHORT], [], resolved=version, kind="test"), None)

    stored = record(fakes, validation.id)
    assert (stored["kind"], stored["ruleset"]["version"], stored["rules"]) == (
        "test",
        3,
        [{"id": "tidy", "text": "be tidy"}],
    )


async def test_the_same_idempotency_key_of_another_user_is_another_claim(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    bob = fakes.users.add("bob", QUOTA)
    first, _ = await service.create(alice, submission(), KEY)
    second, created = await service.create(bob, submission(), KEY)

    assert created and second.id != first.id


async def test_create_with_an_idempotency_key_held_by_a_request_in_progress_is_409(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    body = submission()
    assert await fakes.store.claim_idempotency_key(f"alice#{KEY}", body.fingerprint(), "in-progress") is None

    with pytest.raises(Conflict) as busy:
        await service.create(alice, body, KEY)

    assert busy.value.status == 409 and busy.value.headers == {"Retry-After": "1"}
    assert nothing_stored(fakes) and fakes.executions.count("start") == 0


async def test_an_idempotency_key_of_the_wrong_length_is_400(service: ValidationService, alice: Principal) -> None:
    for key in ("", "k" * 256):
        with pytest.raises(BadRequest) as bad:
            await service.create(alice, submission(), key)
        assert bad.value.extra["field"] == "Idempotency-Key"


def crashed_claim(fakes: Fakes, body: Submission, validation_id: str) -> dict[str, Any]:
    """A claim whose request died before completing it: pending, its lease run out."""
    now = int(time.time())
    claim: dict[str, Any] = {
        "key": f"alice#{KEY}",
        "request_hash": body.fingerprint(),
        "validation_id": validation_id,
        "state": "pending",
        "lease_until": now - 1,
        "expires_at": now + 3600,
    }
    fakes.store.claims[claim["key"]] = claim
    return claim


async def test_create_takes_over_the_claim_of_a_request_that_crashed_before_storing(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    body = submission()
    crashed_claim(fakes, body, "never-stored")

    validation, created = await service.create(alice, body, KEY)

    assert created and validation.id != "never-stored"
    assert fakes.store.claims[f"alice#{KEY}"] | {"expires_at": 0} == {
        "key": f"alice#{KEY}",
        "request_hash": body.fingerprint(),
        "validation_id": validation.id,
        "state": "done",
        "expires_at": 0,
    }
    assert [name for name, _ in fakes.executions.started] == [validation.id]


async def test_create_answers_the_validation_a_crashed_request_got_as_far_as_storing(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    body = submission()
    first, _ = await service.create(alice, body, KEY)
    crashed_claim(fakes, body, first.id)  # as if that request died before completing its claim

    again, created = await service.create(alice, body, KEY)

    assert not created and again.id == first.id
    assert fakes.store.claims[f"alice#{KEY}"]["state"] == "done" and fakes.executions.count("start") == 1


async def test_a_crashed_claim_with_another_body_is_422(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    crashed_claim(fakes, submission(), "never-stored")

    with pytest.raises(Unprocessable):
        await service.create(alice, submission(rule="be kind"), KEY)

    assert nothing_stored(fakes)


async def test_a_crashed_claim_another_request_took_over_first_is_409(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    body = submission()
    claim = crashed_claim(fakes, body, "never-stored")
    # Between this request's claim and its take-over, another one takes the claim over.
    fakes.store.before("take_over_idempotency_key", lambda: claim.update(lease_until=int(time.time()) + 60))

    with pytest.raises(Conflict) as busy:
        await service.create(alice, body, KEY)

    assert busy.value.headers == {"Retry-After": "1"}
    assert nothing_stored(fakes) and fakes.executions.count("start") == 0


@pytest.mark.parametrize(
    ("error", "answer", "status"),
    [
        (client_error("ThrottlingException", "StartExecution"), ServiceUnavailable, 503),
        (client_error("AccessDeniedException", "StartExecution"), UpstreamError, 502),
        # What the real Executions raises for any ClientError, throttling included:
        (UpstreamError("Step Functions refused to start execution x: ThrottlingException"), UpstreamError, 502),
        (answer_lost(), ServiceUnavailable, 503),  # no answer, and no such execution: not started
    ],
    ids=["throttled", "refused", "adapter-error", "no-answer"],
)
async def test_a_failed_start_undoes_everything_releases_the_key_and_maps_the_error(
    fakes: Fakes,
    service: ValidationService,
    alice: Principal,
    error: Exception,
    answer: type[AppError],
    status: int,
) -> None:
    fakes.executions.fail("start", error)

    with pytest.raises(answer) as failed:
        await service.create(alice, submission(), KEY)

    assert failed.value.status == status
    if isinstance(error, AppError):
        assert failed.value is error
    else:
        assert failed.value.__cause__ is error
    if status == 503:
        assert failed.value.headers == {"Retry-After": "1"}
    assert nothing_stored(fakes) and fakes.store.claims == {}
    assert fakes.executions.executions == {}
    # It was admitted: its reservation and slot went back, then the queue was handed on.
    assert [v.reserved_run for v, _ in fakes.quotas.called("settle")] == [1]
    assert fakes.quotas.called("release_head") == [("alice",)]
    assert fakes.quotas.counts("alice") == {"running": 0, "queued": 0}
    # The key may be used again.
    _, created = await service.create(alice, submission(), KEY)
    assert created


async def test_a_start_whose_answer_was_lost_counts_as_started_when_the_execution_exists(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    fakes.executions.fail("start", answer_lost(), lost=True)

    validation, created = await service.create(alice, submission(), KEY)

    assert created and validation.status == "RUNNING"
    assert fakes.executions.executions[fakes.executions.arn_of(validation.id)]["status"] == "RUNNING"
    assert fakes.executions.called("status") == [(fakes.executions.arn_of(validation.id),)]
    assert fakes.store.claims[f"alice#{KEY}"]["state"] == "done"
    assert fakes.quotas.count("settle") == 0 and sorted(fakes.store.parts[validation.id]) == PARTS


async def test_a_lost_start_answer_that_cannot_be_checked_is_undone_though_the_execution_runs(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    """Questionable: DescribeExecution failing counts as "not started", so the records are
    deleted (and the key released) while the execution that did start runs on."""
    fakes.executions.fail("start", answer_lost(), lost=True)
    fakes.executions.fail("status", UpstreamError("DescribeExecution failed: ThrottlingException"))

    with pytest.raises(ServiceUnavailable):
        await service.create(alice, submission(), KEY)

    assert nothing_stored(fakes) and fakes.store.claims == {}
    assert [e["status"] for e in fakes.executions.executions.values()] == ["RUNNING"]


async def test_the_arn_start_answers_is_stored_when_it_differs(
    fakes: Fakes, service: ValidationService, alice: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def start(name: str, payload: dict[str, Any]) -> str:
        return "arn:aws:states:us-east-1:123456789012:execution:elsewhere:" + name

    monkeypatch.setattr(fakes.executions, "start", start)

    validation, _ = await service.create(alice, submission(), None)

    assert record(fakes, validation.id)["execution_arn"].endswith(f":elsewhere:{validation.id}")


@pytest.mark.parametrize(
    ("fake", "method"),
    [("store", "put_files"), ("store", "put_parts"), ("quotas", "enqueue"), ("quotas", "admit")],
)
@pytest.mark.parametrize("lost", [False, True], ids=["failed", "written-then-failed"])
async def test_a_failure_while_storing_undoes_what_was_stored(
    fakes: Fakes, service: ValidationService, alice: Principal, fake: str, method: str, lost: bool
) -> None:
    error = client_error("ProvisionedThroughputExceededException", method)
    getattr(fakes, fake).fail(method, error, lost=lost)

    with pytest.raises(ServiceUnavailable) as failed:
        await service.create(alice, submission(), KEY)

    assert failed.value.__cause__ is error
    assert nothing_stored(fakes) and fakes.store.claims == {}
    assert fakes.executions.count("start") == 0
    assert fakes.quotas.counts("alice") == {"running": 0, "queued": 0}


async def test_a_failed_cleanup_step_does_not_stop_the_others(
    fakes: Fakes, service: ValidationService, alice: Principal, logs_quiet: pytest.LogCaptureFixture
) -> None:
    fakes.executions.fail("start", UpstreamError("refused"))
    fakes.store.fail("delete")

    with pytest.raises(UpstreamError):
        await service.create(alice, submission(), None)

    assert list(fakes.store.validations) != [] and fakes.store.parts == {} and fakes.store.files == {}
    assert "cleanup of validation" in logs_quiet.text


@pytest.mark.parametrize(("fake", "method"), [("quotas", "settle"), ("users", "limits_of")])
async def test_an_admitted_run_whose_undo_cannot_settle_is_kept_for_the_reconciler(
    fakes: Fakes,
    service: ValidationService,
    alice: Principal,
    logs_quiet: pytest.LogCaptureFixture,
    fake: str,
    method: str,
) -> None:
    fakes.executions.fail("start", UpstreamError("refused"))
    getattr(fakes, fake).fail(method)

    with pytest.raises(UpstreamError):
        await service.create(alice, submission(), KEY)

    [(vid, kept)] = fakes.store.validations.items()
    assert kept["status"] == "RUNNING" and kept["reserved_run"] == 1 and "settled_run" not in kept
    assert sorted(fakes.store.parts[vid]) == PARTS and len(fakes.store.files) == 2
    assert fakes.quotas.counts("alice") == {"running": 1, "queued": 0}  # the reconciler gives it back
    # The key is released all the same: a retried request creates a second validation.
    assert fakes.store.claims == {}
    assert "left for the reconciler" in logs_quiet.text


async def test_a_submission_over_the_capacity_by_its_bytes_alone_is_refused_before_storing(
    fakes: Fakes, service: ValidationService
) -> None:
    tiny = fakes.users.add("tiny", Quota(capacity_tokens=10, refill_tokens_per_minute=60, max_running=1))

    with pytest.raises(Unprocessable) as refused:
        await service.create(tiny, submission(), None)

    error = refused.value
    assert error.extra["limit"] == "capacity_tokens" and error.extra["limit_value"] == 10
    assert error.extra["cost"] > 10 and f"at least {error.extra['cost']} tokens" in error.detail
    assert fakes.store.calls == [] and fakes.quotas.calls == [] and fakes.executions.calls == []


async def test_a_submission_over_the_capacity_once_planned_is_refused_before_storing(
    fakes: Fakes, service: ValidationService
) -> None:
    estimate = (
        await Fakes.new(part_max_tokens=50, completion_max_tokens=16)
        .service()
        .create(Principal("someone", "user", QUOTA), submission(), None)
    )[0].estimated_tokens
    capacity = estimate // 2  # above the bytes' floor, below the planned estimate
    small = fakes.users.add("small", Quota(capacity_tokens=capacity, refill_tokens_per_minute=60, max_running=1))

    with pytest.raises(Unprocessable) as refused:
        await service.create(small, submission(), None)

    assert refused.value.extra == {"limit": "capacity_tokens", "limit_value": capacity, "cost": estimate}
    assert fakes.store.calls == [] and fakes.executions.calls == []


async def test_an_over_capacity_refusal_releases_its_idempotency_key(fakes: Fakes, service: ValidationService) -> None:
    tiny = fakes.users.add("tiny", Quota(capacity_tokens=10, refill_tokens_per_minute=60, max_running=1))
    with pytest.raises(Unprocessable):
        await service.create(tiny, submission(), KEY)

    assert f"tiny#{KEY}" not in fakes.store.claims
    with pytest.raises(Unprocessable):  # the same answer again, not 409 "still being processed"
        await service.create(tiny, submission(), KEY)


@pytest.mark.parametrize(
    ("outcome", "limit", "retry_after"),
    [
        (Outcome(False, refusal=Refusal("tokens", 12.3, 250.0, 0.0)), "capacity_tokens", 13),
        (Outcome(False, refusal=Refusal("max_running", 0.0, 250.0, 0.0)), "max_running", 5),
        (Outcome(False, behind="older"), "queue", 5),
    ],
    ids=["tokens", "max_running", "queue"],
)
async def test_create_under_the_reject_policy_is_429_and_undone(
    fakes: Fakes, service: ValidationService, outcome: Outcome, limit: str, retry_after: int
) -> None:
    bob = fakes.users.add("bob", QUOTA, "reject")
    fakes.quotas.outcomes.append(outcome)

    with pytest.raises(TooManyRequests) as refused:
        await service.create(bob, submission(), KEY)

    error = refused.value
    assert error.status == 429 and error.extra["limit"] == limit and error.extra["retry_after"] == retry_after
    assert error.headers["Retry-After"] == str(retry_after)
    assert error.extra["cost"] == fakes.quotas.called("admit")[0][0].run_cost
    assert fakes.quotas.called("admit")[0][2] is False  # under `reject` the queue is not waited for
    if outcome.refusal is not None and outcome.refusal.limit == "tokens":
        assert error.headers == rate_limit_headers(QUOTA, outcome.refusal)
    assert nothing_stored(fakes) and fakes.store.claims == {} and fakes.executions.count("start") == 0
    assert fakes.quotas.counts("bob") == {"running": 0, "queued": 0}


async def test_a_second_validation_past_max_running_under_the_reject_policy_is_429(
    fakes: Fakes, service: ValidationService
) -> None:
    bob = fakes.users.add("bob", QUOTA, "reject")
    first, _ = await service.create(bob, submission(), None)

    with pytest.raises(TooManyRequests) as refused:
        await service.create(bob, submission(SHORT), None)

    assert refused.value.extra["limit"] == "max_running"
    assert list(fakes.store.validations) == [first.id] and sorted(fakes.store.parts) == [first.id]
    assert fakes.quotas.counts("bob") == {"running": 1, "queued": 0}


async def test_create_past_max_queued_is_429_and_undone(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    kept = [(await service.create(alice, submission(SHORT), None))[0].id for _ in range(3)]  # 1 running, 2 queued

    with pytest.raises(TooManyRequests) as refused:
        await service.create(alice, submission(), None)

    assert refused.value.extra["limit"] == "max_queued" and refused.value.extra["queued"] == 2
    assert sorted(fakes.store.validations) == sorted(kept) and sorted(fakes.store.parts) == sorted(kept)
    assert fakes.executions.count("start") == 3


async def test_an_unexpected_error_while_storing_is_502_and_undone(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    fakes.quotas.fail("enqueue", RuntimeError("validation x could not be stored"))

    with pytest.raises(UpstreamError, match="Could not store or start the validation: RuntimeError"):
        await service.create(alice, submission(), KEY)

    assert nothing_stored(fakes) and fakes.store.claims == {}


async def test_a_failed_announcement_still_answers_the_created_validation(
    fakes: Fakes, service: ValidationService, alice: Principal, logs_quiet: pytest.LogCaptureFixture
) -> None:
    fakes.events.fail("append_status")

    validation, created = await service.create(alice, submission(), KEY)

    assert created and fakes.store.claims[f"alice#{KEY}"]["state"] == "done"
    assert validation.status == "RUNNING" == record(fakes, validation.id)["status"]  # as stored, not as planned


async def test_a_failed_claim_completion_fails_the_request_though_the_validation_runs(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    """Questionable: the execution runs, yet the request answers the error (503 once mapped);
    the same request repeated answers 409 until the claim's lease ends, then the validation."""
    error = client_error("ThrottlingException", "UpdateItem")
    fakes.store.fail("complete_idempotency_key", error)

    with pytest.raises(ClientError):
        await service.create(alice, submission(), KEY)

    [vid] = fakes.store.validations
    assert fakes.executions.started[0][0] == vid and fakes.store.claims[f"alice#{KEY}"]["state"] == "pending"
    with pytest.raises(Conflict):
        await service.create(alice, submission(), KEY)
    fakes.store.claims[f"alice#{KEY}"]["lease_until"] = int(time.time()) - 1
    again, created = await service.create(alice, submission(), KEY)
    assert not created and again.id == vid and fakes.executions.count("start") == 1


async def test_a_replayed_key_whose_validation_is_gone_is_409(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    first, _ = await service.create(alice, submission(), KEY)
    del fakes.store.validations[first.id]  # expired (TTL) before its claim

    with pytest.raises(Conflict, match="no longer exists"):
        await service.create(alice, submission(), KEY)


# --- retry ----------------------------------------------------------------------------------


async def test_retry_reruns_the_failed_parts_and_combine_as_run_2(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    before = await ended(fakes, service, alice, failed_parts=("00001-000001",), failed_verdict=True)
    vid = before.id

    retried = await service.retry(alice, vid)

    assert retried.status == "RUNNING" and retried.run == 2
    stored = record(fakes, vid)
    cost = fakes.store.parts[vid]["00001-000001"]["estimate"] + stored["files"][1]["combine_estimate"]
    assert stored["run_cost"] == cost and stored["reserved"] == cost and stored["reserved_run"] == 2
    assert stored["failed"] == 0 and stored["combine_failed"] == 0  # the reset parts and verdict are off the counts
    assert "error" not in stored and "finished_at" not in stored
    assert stored["execution_arn"] == fakes.executions.arn_of(f"{vid}-r2")
    part = fakes.store.parts[vid]["00001-000001"]
    assert part["status"] == "PENDING" and "error" not in part
    assert stored["file_settled"] == {"0": 1, "1": 2}
    assert verdict_id(1) not in fakes.store.parts[vid]
    assert fakes.executions.started[-1] == (
        f"{vid}-r2",
        {
            "validation_id": vid,
            "run": 2,
            "batches": [{"first": "00001-000001", "last": "00001-000001"}],
            "combine": [{"first": 1, "last": 1}],
        },
    )
    assert fakes.events.statuses(vid)[-1] == "RUNNING"
    assert fakes.quotas.counts("alice") == {"running": 1, "queued": 0}


async def test_retry_with_nothing_to_rerun_is_409(fakes: Fakes, service: ValidationService, alice: Principal) -> None:
    done = await ended(fakes, service, alice, status="SUCCEEDED")
    before = dict(record(fakes, done.id))

    with pytest.raises(Conflict, match="Nothing to retry"):
        await service.retry(alice, done.id)

    assert record(fakes, done.id) == before and fakes.executions.count("start") == 1


async def test_retry_of_a_running_validation_is_409(service: ValidationService, alice: Principal) -> None:
    running, _ = await service.create(alice, submission(), None)

    with pytest.raises(Conflict) as busy:
        await service.retry(alice, running.id)

    assert busy.value.extra["status_value"] == "RUNNING"


async def test_retry_of_a_purged_validation_is_410(fakes: Fakes, service: ValidationService, alice: Principal) -> None:
    failed = await ended(fakes, service, alice, failed_parts=("00000-000000",))
    await service.purge(alice, failed.id)

    with pytest.raises(Gone):
        await service.retry(alice, failed.id)


async def test_retry_of_a_validation_whose_files_expired_is_410(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    failed = await ended(fakes, service, alice, failed_parts=("00000-000000",))
    fakes.store.files.clear()  # S3's lifecycle

    with pytest.raises(Gone) as gone:
        await service.retry(alice, failed.id)

    assert gone.value.extra == {"field": "files", "limit": "retention_days"}


async def test_retry_refused_with_429_restores_the_previous_run(fakes: Fakes, service: ValidationService) -> None:
    carol = fakes.users.add("carol", QUOTA, "reject")
    failed = await ended(fakes, service, carol, failed_parts=("00001-000001",))
    before = dict(record(fakes, failed.id))
    fakes.quotas.outcomes.append(Outcome(False, refusal=Refusal("tokens", 30.0, 0.0, 0.0)))

    with pytest.raises(TooManyRequests):
        await service.retry(carol, failed.id)

    after = record(fakes, failed.id)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    # Status, run, counts, execution, error and end are the previous run's again; the retry's
    # cost and queue time stay (nothing reads them on an ended validation).
    assert changed == {"run_cost", "run_queued_at"}
    assert fakes.quotas.counts("carol") == {"running": 0, "queued": 0}
    assert fakes.store.parts[failed.id]["00001-000001"]["status"] == "FAILED"  # nothing reset
    assert fakes.executions.count("start") == 1


@pytest.mark.parametrize(
    ("error", "mapped"),
    [
        (UpstreamError("Step Functions refused to start execution x: ThrottlingException"), None),
        # As in create: a throttled StartExecution is a 503 with Retry-After, not a 502.
        (client_error("ThrottlingException", "StartExecution"), ServiceUnavailable),
    ],
    ids=["adapter-error", "raw-throttling"],
)
async def test_retry_whose_start_fails_ends_the_run_failed_not_started_and_settles_it(
    fakes: Fakes, service: ValidationService, alice: Principal, error: Exception, mapped: type[AppError] | None
) -> None:
    fakes.executions.fail("start", error, nth=2)  # the first starts the validation, the second its retry
    failed = await ended(fakes, service, alice, failed_parts=("00001-000001",))
    vid = failed.id

    with pytest.raises(AppError) as raised:
        await service.retry(alice, vid)

    if mapped is None:
        assert raised.value is error
    else:
        assert type(raised.value) is mapped and raised.value.status == 503 and raised.value.__cause__ is error
    stored = record(fakes, vid)
    assert stored["status"] == "FAILED" and stored["run"] == 2 and stored["finished_at"]
    assert stored["error"] == {"type": "not_started", "detail": "the retry could not start: " + type(error).__name__}
    assert stored["settled_run"] == 2 and ends.MARKER not in stored and "queue_key" not in stored
    assert fakes.quotas.counts("alice") == {"running": 0, "queued": 0}
    assert fakes.events.statuses(vid)[-1] == "FAILED"
    assert [(p["validation_id"], p["run"]) for p in fakes.notifications.sent.values()] == [(vid, 2)]
    assert fakes.quotas.called("release_head")[-1] == ("alice",)
    assert fakes.store.parts[vid]["00001-000001"]["status"] == "PENDING"  # reruns at the next retry


async def test_retry_whose_admission_fails_ends_the_run_and_passes_the_error_on(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    failed = await ended(fakes, service, alice, failed_parts=("00001-000001",))
    error = client_error("InternalServerError", "TransactWriteItems", 500)
    fakes.quotas.fail("admit", error)

    with pytest.raises(ClientError) as raised:  # unmapped here; the app's last resort makes it a 503
        await service.retry(alice, failed.id)

    assert raised.value is error
    stored = record(fakes, failed.id)
    assert stored["status"] == "FAILED" and stored["run"] == 2
    assert stored["error"]["detail"] == "the retry could not be admitted: ClientError"
    assert fakes.quotas.counts("alice") == {"running": 0, "queued": 0}
    assert fakes.executions.count("start") == 1


async def test_retry_that_lost_the_race_for_the_run_is_409(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    failed = await ended(fakes, service, alice, failed_parts=("00001-000001",))
    fakes.store.before("update", lambda: record(fakes, failed.id).update(run=2))  # another retry claimed it

    with pytest.raises(Conflict, match="changed meanwhile"):
        await service.retry(alice, failed.id)

    assert fakes.executions.count("start") == 1 and fakes.quotas.count("join_queue") == 0


async def test_retry_of_a_disabled_owners_validation_by_an_admin_is_409(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    failed = await ended(fakes, service, alice, failed_parts=("00001-000001",))
    fakes.users.users["alice"]["disabled"] = True

    with pytest.raises(Conflict) as refused:
        await service.retry(Principal("root", "admin"), failed.id)

    assert refused.value.extra == {"field": "owner"} and record(fakes, failed.id)["run"] == 1


async def test_retry_announces_a_pending_end_first_and_is_502_when_it_cannot(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    failed = await ended(fakes, service, alice, failed_parts=("00001-000001",))
    record(fakes, failed.id)[ends.MARKER] = ends.shard_of(failed.id)  # its writer died before announcing
    fakes.notifications.fail("validation_ended")

    with pytest.raises(UpstreamError, match="could not be announced yet"):
        await service.retry(alice, failed.id)
    assert record(fakes, failed.id)["run"] == 1

    retried = await service.retry(alice, failed.id)

    assert retried.run == 2 and ends.MARKER not in record(fakes, failed.id)
    assert [(p["run"], p["event"]["data"]["status"]) for p in fakes.notifications.sent.values()] == [(1, "FAILED")]


async def test_retry_whose_restore_after_a_429_fails_leaves_the_run_for_the_reconciler(
    fakes: Fakes, service: ValidationService
) -> None:
    """The restoring write's error replaces the 429; run 2 stays QUEUED without an execution."""
    carol = fakes.users.add("carol", QUOTA, "reject")
    failed = await ended(fakes, service, carol, failed_parts=("00001-000001",))
    fakes.quotas.outcomes.append(Outcome(False, refusal=Refusal("tokens", 30.0, 0.0, 0.0)))
    fakes.store.fail("update", nth=2)  # the first claims run 2, the second restores run 1

    with pytest.raises(ClientError):
        await service.retry(carol, failed.id)

    stored = record(fakes, failed.id)
    assert stored["status"] == "QUEUED" and stored["run"] == 2 and "queue_key" not in stored
    assert fakes.quotas.counts("carol") == {"running": 0, "queued": 0} and fakes.executions.count("start") == 1


async def test_retry_whose_start_fails_and_whose_run_cannot_be_ended_is_left_for_the_reconciler(
    fakes: Fakes, service: ValidationService, alice: Principal, logs_quiet: pytest.LogCaptureFixture
) -> None:
    failed = await ended(fakes, service, alice, failed_parts=("00001-000001",))
    error = UpstreamError("refused")
    fakes.executions.fail("start", error)
    fakes.quotas.fail("settle")

    with pytest.raises(UpstreamError) as raised:
        await service.retry(alice, failed.id)

    assert raised.value is error
    stored = record(fakes, failed.id)
    assert stored["status"] == "RUNNING" and stored["run"] == 2 and stored["reserved_run"] == 2
    assert stored["settled_run"] == 1  # run 2 is not settled
    assert "left for the reconciler" in logs_quiet.text


async def test_a_retry_cancelled_before_it_joins_the_queue_starts_nothing_and_answers_409(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    failed = await ended(fakes, service, alice, failed_parts=("00001-000001",))
    fakes.quotas.before("join_queue", lambda: record(fakes, failed.id).update(status="CANCELLED"))

    with pytest.raises(Conflict, match="changed meanwhile"):
        await service.retry(alice, failed.id)

    assert record(fakes, failed.id)["status"] == "CANCELLED"
    assert fakes.executions.count("start") == 1  # run 1's only: run 2 never started
    assert fakes.store.parts[failed.id]["00001-000001"]["status"] == "FAILED"  # nothing reset


# --- cancel ---------------------------------------------------------------------------------


async def test_cancel_of_a_running_validation_stops_it_once_settles_and_ends_cancelled(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    running, _ = await service.create(alice, submission(), None)
    arn = fakes.executions.arn_of(running.id)

    cancelled = await service.cancel(alice, running.id)

    assert cancelled.status == "CANCELLED" and cancelled.finished_at
    writes = [(sets, expect) for _, sets, expect, _ in fakes.store.called("update")]
    assert writes[0] == ({"status": "CANCELLING"}, {"status": "RUNNING", "run": 1})  # first, before the stop
    assert writes[1][0]["status"] == "CANCELLED" and writes[1][1] == {"status": "CANCELLING", "run": 1}
    assert fakes.executions.called("stop") == [(arn, "cancelled by alice")]
    assert fakes.executions.executions[arn]["status"] == "ABORTED"
    stored = record(fakes, running.id)
    assert stored["settled_run"] == 1 and ends.MARKER not in stored
    assert fakes.quotas.counts("alice") == {"running": 0, "queued": 0}
    assert fakes.events.statuses(running.id) == ["RUNNING", "CANCELLED"]
    assert [p["event"]["data"]["status"] for p in fakes.notifications.sent.values()] == ["CANCELLED"]
    assert fakes.quotas.called("release_head") == [("alice",)]


async def test_cancel_of_a_queued_validation_takes_it_out_of_the_queue(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    await service.create(alice, submission(), None)
    queued, _ = await service.create(alice, submission(SHORT), None)

    cancelled = await service.cancel(alice, queued.id)

    assert cancelled.status == "CANCELLED"
    stored = record(fakes, queued.id)
    assert "queue_key" not in stored and "settled_run" not in stored  # it reserved nothing
    assert fakes.quotas.counts("alice") == {"running": 1, "queued": 0}
    assert fakes.executions.called("stop") == [(fakes.executions.arn_of(queued.id), "cancelled by alice")]


@pytest.mark.parametrize("status", ["SUCCEEDED", "FAILED"])
async def test_cancel_of_an_ended_validation_is_409(
    fakes: Fakes, service: ValidationService, alice: Principal, status: str
) -> None:
    done = await ended(fakes, service, alice, status=status)

    with pytest.raises(Conflict) as refused:
        await service.cancel(alice, done.id)

    assert refused.value.extra["status_value"] == status and fakes.executions.count("stop") == 0


async def test_cancel_of_a_cancelled_validation_answers_it_again(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    running, _ = await service.create(alice, submission(), None)
    await service.cancel(alice, running.id)

    again = await service.cancel(alice, running.id)

    assert again.status == "CANCELLED" and fakes.executions.count("stop") == 1 and fakes.quotas.count("settle") == 1


async def test_cancel_of_another_users_validation_is_404(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    running, _ = await service.create(alice, submission(), None)
    mallory = fakes.users.add("mallory", QUOTA)

    with pytest.raises(NotFound):
        await service.cancel(mallory, running.id)

    assert record(fakes, running.id)["status"] == "RUNNING" and fakes.executions.count("stop") == 0


async def test_an_admin_may_cancel_anyones_validation(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    running, _ = await service.create(alice, submission(), None)

    cancelled = await service.cancel(Principal("root", "admin"), running.id)

    assert cancelled.status == "CANCELLED"
    assert fakes.executions.called("stop")[0][1] == "cancelled by root"
    assert fakes.quotas.counts("alice") == {"running": 0, "queued": 0}  # the owner's quota settled


async def test_a_failed_stop_leaves_cancelling_and_a_repeated_cancel_settles(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    """The StopExecution error is not caught: the cancel answers it (502), CANCELLING stays while
    the execution runs, and the next cancel (which stops again) settles it."""
    running, _ = await service.create(alice, submission(), None)
    fakes.executions.fail("stop", UpstreamError("StopExecution failed: ThrottlingException"))

    with pytest.raises(UpstreamError):
        await service.cancel(alice, running.id)

    assert record(fakes, running.id)["status"] == "CANCELLING"
    assert (await service.get(alice, running.id)).status == "CANCELLING"  # the execution still runs
    assert fakes.quotas.count("settle") == 0

    cancelled = await service.cancel(alice, running.id)

    assert cancelled.status == "CANCELLED" and fakes.executions.count("stop") == 2
    assert fakes.quotas.counts("alice") == {"running": 0, "queued": 0}


async def test_a_stop_whose_answer_was_lost_fails_the_cancel_but_the_next_read_settles(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    """Questionable: the execution did stop, yet the cancel answers the lost answer's error."""
    running, _ = await service.create(alice, submission(), None)
    fakes.executions.fail("stop", answer_lost(), lost=True)

    with pytest.raises(ReadTimeoutError):
        await service.cancel(alice, running.id)

    assert (await service.get(alice, running.id)).status == "CANCELLED"
    assert fakes.quotas.counts("alice") == {"running": 0, "queued": 0}


async def test_a_cancel_whose_execution_stops_later_answers_cancelling_and_a_read_settles(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    running, _ = await service.create(alice, submission(), None)
    fakes.executions.stops_take_effect = False

    assert (await service.cancel(alice, running.id)).status == "CANCELLING"  # cancel_settle_seconds=0

    fakes.executions.end(fakes.executions.arn_of(running.id), "ABORTED")
    assert (await service.get(alice, running.id)).status == "CANCELLED"
    assert (await service.get(alice, running.id)).status == "CANCELLED"
    assert fakes.quotas.count("settle") == 1 and fakes.events.statuses(running.id) == ["RUNNING", "CANCELLED"]


async def test_a_validation_that_ends_while_being_cancelled_answers_409(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    running, _ = await service.create(alice, submission(), None)
    fakes.store.before("update", lambda: record(fakes, running.id).update(status="SUCCEEDED"))

    with pytest.raises(Conflict) as refused:
        await service.cancel(alice, running.id)

    assert refused.value.extra["status_value"] == "SUCCEEDED" and fakes.executions.count("stop") == 0


async def test_a_cancel_whose_notification_fails_leaves_the_end_marker_for_the_reconciler(
    fakes: Fakes, service: ValidationService, alice: Principal, logs_quiet: pytest.LogCaptureFixture
) -> None:
    running, _ = await service.create(alice, submission(), None)
    fakes.notifications.fail("validation_ended")

    cancelled = await service.cancel(alice, running.id)

    assert cancelled.status == "CANCELLED" and cancelled.notify_pending == ends.shard_of(running.id)
    assert fakes.events.statuses(running.id) == ["RUNNING", "CANCELLED"]
    assert fakes.quotas.counts("alice") == {"running": 0, "queued": 0}


# --- purge ----------------------------------------------------------------------------------


async def test_purge_of_a_running_validation_is_409(fakes: Fakes, service: ValidationService, alice: Principal) -> None:
    running, _ = await service.create(alice, submission(), None)

    with pytest.raises(Conflict) as refused:
        await service.purge(alice, running.id)

    assert refused.value.extra["status_value"] == "RUNNING"
    assert "purged_at" not in record(fakes, running.id) and len(fakes.store.files) == 2


async def test_purge_deletes_files_parts_and_events_and_keeps_a_tombstone(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    done = await ended(fakes, service, alice, failed_parts=("00000-000000",))

    purged = await service.purge(alice, done.id)

    assert purged.purged_at and purged.files == () and purged.rules == []
    assert purged.status == "FAILED" and purged.total_parts == 4  # the tombstone keeps status and counts
    assert fakes.store.files == {} and done.id not in fakes.store.parts and done.id not in fakes.events.log
    assert fakes.users.audits == [
        {
            "actor": "alice",
            "action": "validation.purge",
            "target": done.id,
            "old": None,
            "new": {"owner": "alice", "files": 2, "records": 5, "events": 2},  # 4 parts and a verdict
        }
    ]


async def test_a_repeated_purge_finishes_one_cut_short(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    done = await ended(fakes, service, alice, failed_parts=("00000-000000",))
    fakes.store.fail("delete_parts")

    with pytest.raises(ClientError):
        await service.purge(alice, done.id)

    cut = record(fakes, done.id)
    purged_at = cut["purged_at"]
    assert fakes.store.files == {} and len(fakes.store.parts[done.id]) == 5 and len(cut["files"]) == 2
    with pytest.raises(Gone):  # marked first: its results are gone from here
        await service.results(alice, done.id, 10, None)

    purged = await service.purge(alice, done.id)

    assert purged.purged_at == purged_at and purged.files == ()
    assert done.id not in fakes.store.parts and done.id not in fakes.events.log
    assert [a["new"]["records"] for a in fakes.users.audits] == [5]


async def test_purge_of_a_validation_that_changed_meanwhile_is_409(
    fakes: Fakes, service: ValidationService, alice: Principal
) -> None:
    done = await ended(fakes, service, alice, failed_parts=("00000-000000",))
    fakes.store.before("update", lambda: record(fakes, done.id).update(status="QUEUED", run=2))  # a retry won

    with pytest.raises(Conflict, match="changed meanwhile"):
        await service.purge(alice, done.id)

    assert len(fakes.store.files) == 2 and len(fakes.store.parts[done.id]) == 5

"""Per-user token buckets in DynamoDB, kept as GCRA (the generic cell rate algorithm).

A bucket of capacity C tokens refilling R tokens per second is stored as one number,
`tat` (theoretical arrival time, epoch seconds): the bucket holds
`min(C, (now - tat) * R + C)` tokens... more simply, it is full when `tat <= now`, and
each grant of c tokens moves `tat` forward by c / R. A grant is allowed when
`max(tat, now) + c/R - now <= C/R`. That test and the update fit one conditional
UpdateItem with no read first (lazy refill is implicit in comparing with `now`), in two
shapes: bucket full (`tat <= now`: set `tat = now + c/R`) or not (`tat` within reach:
add c/R). The caller tries the shape its last known `tat` suggests and, on a failed
condition, learns the stored `tat` from `ReturnValuesOnConditionCheckFailure`.

The same request builders serve the API (aioboto3) and the Lambdas (boto3): both send
low-level, typed DynamoDB requests.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from core import pricing, spend
from core.clock import epoch_of
from core.dynamo import Update, decimal, untyped
from core.queue import head_steps
from core.steps import Cancelled, Step, StepAnswer, transact

# Validations a user may have queued at once when nothing else says: the default of the
# configured DEFAULT_MAX_QUEUED (app/settings.py, lambdas/common/config.py), which users are
# created with and which a quota stored without `max_queued` gets when it is read (`Quota.of`).
DEFAULT_MAX_QUEUED = 100


@dataclass(frozen=True)
class Quota:
    capacity_tokens: int
    refill_tokens_per_minute: int
    max_running: int
    max_queued: int = DEFAULT_MAX_QUEUED
    weight: float = 1.0  # the user's weight in the governor's fair share (core/fairness.py)
    max_spend_usd: float | None = None  # a spend budget per `spend_period` (core/spend.py); None: none
    spend_period: str = "month"  # "day" or "month", UTC calendar
    tiers: tuple[str, ...] = ("standard", "flex")  # the service tiers the user may ask (docs: Lanes)
    default_tier: str = "standard"

    @property
    def rate(self) -> float:
        """Tokens per second."""
        return self.refill_tokens_per_minute / 60.0

    @property
    def window_seconds(self) -> float:
        """Time to refill an empty bucket (the IETF RateLimit-Policy `w`)."""
        return self.capacity_tokens / self.rate

    def available(self, tat: float, now: float) -> float:
        return min(self.capacity_tokens, max(0.0, (now - tat) * self.rate + self.capacity_tokens))

    def wait_for(self, cost: int, tat: float, now: float) -> float:
        """Seconds until `cost` tokens can be granted (0 when they can now)."""
        return max(0.0, max(tat, now) + cost / self.rate - now - self.window_seconds)

    @classmethod
    def of(cls, values: dict[str, Any], default_max_queued: int = DEFAULT_MAX_QUEUED) -> Quota:
        """A stored quota; one stored before `max_queued` existed gets `default_max_queued`
        (the deployment's DEFAULT_MAX_QUEUED: callers pass their configuration's)."""
        return cls(
            int(values["capacity_tokens"]),
            int(values["refill_tokens_per_minute"]),
            int(values["max_running"]),
            int(values.get("max_queued") or default_max_queued),
            float(values.get("weight", 1)),  # users stored before weights: 1
            float(values["max_spend_usd"]) if values.get("max_spend_usd") is not None else None,
            "day" if values.get("spend_period") == "day" else "month",
            tuple(values.get("tiers") or ("standard", "flex")),
            str(values.get("default_tier") or "standard"),
        )

    def as_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "capacity_tokens": self.capacity_tokens,
            "refill_tokens_per_minute": self.refill_tokens_per_minute,
            "max_running": self.max_running,
            "max_queued": self.max_queued,
            "weight": self.weight,
        }
        if self.max_spend_usd is not None:
            values.update(max_spend_usd=self.max_spend_usd, spend_period=self.spend_period)
        if self.tiers != ("standard", "flex") or self.default_tier != "standard":
            values.update(tiers=list(self.tiers), default_tier=self.default_tier)
        return values


def acquire_update(
    table: str,
    user_id: str,
    quota: Quota,
    cost: int,
    now: float,
    bucket_full: bool,
    *,
    count_running: bool = True,
    leave_queue: bool = False,
) -> dict[str, Any]:
    """The conditional UpdateItem that grants `cost` tokens (and a running slot), or fails.
    `leave_queue`: the grant admits a queued validation, one fewer is queued (core/queue.py)."""
    increment = cost / quota.rate
    update = Update()
    if bucket_full:
        update.when("{tat} <= :now", now=decimal(now)).set_to("tat", ":now + :inc", inc=decimal(increment))
    else:
        limit = decimal(now + quota.window_seconds - increment)
        update.when("{tat} > :now AND {tat} <= :limit", now=decimal(now), limit=limit)
        update.set_to("tat", "{tat} + :inc", inc=decimal(increment))
    if count_running:
        update.when("{running} < :max", max=quota.max_running).set_to("running", "{running} + :one", one=1)
    if leave_queue:
        update.set_to("queued", "if_not_exists({queued}, :one) - :one", one=1)
    return {**update.item(table, {"user_id": user_id}), "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}


def refund_update(table: str, user_id: str, quota: Quota, refund_tokens: int) -> dict[str, Any]:
    """Give back unused tokens and the running slot. Over-refunding cannot overfill: tat <= now is full.

    A negative refund charges what a run used beyond its reservation (retries, cut answers):
    `tat` moves forward by it. (When the bucket has refilled meanwhile, `tat` lies in the past
    and part of the charge lands on refill the user had not taken yet.)"""
    update = Update().set_to("tat", "{tat} - :dec", dec=decimal(refund_tokens / quota.rate))
    update.set_to("running", "{running} - :one", one=1).when("{running} > :zero", zero=0)
    return update.item(table, {"user_id": user_id})


@dataclass(frozen=True)
class Refusal:
    """Why a grant failed: which limit, and how long until it may succeed."""

    limit: str  # "tokens" or "max_running"
    retry_after: float
    available_tokens: float
    tat: float

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after)))


def refusal(old_bucket: dict[str, Any], quota: Quota, cost: int, now: float) -> Refusal | None:
    """Read a failed condition's old item: the refusal, or None when the other shape should be tried."""
    tat = float(old_bucket.get("tat", 0))
    running = int(old_bucket.get("running", 0))
    wait = quota.wait_for(cost, tat, now)
    if wait > 0:
        return Refusal("tokens", wait, quota.available(tat, now), tat)
    if running >= quota.max_running:
        return Refusal("max_running", 0.0, quota.available(tat, now), tat)
    return None  # tokens and a slot are there: the shape guessed was wrong, or the clock moved


def rate_limit_headers(quota: Quota, refusal_: Refusal) -> dict[str, str]:
    """IETF draft-ietf-httpapi-ratelimit-headers: the policy and what is left."""
    return {
        "Retry-After": refusal_.retry_after_header,
        "RateLimit-Policy": f'"tokens";q={quota.capacity_tokens};w={math.ceil(quota.window_seconds)}',
        "RateLimit": f'"tokens";r={int(refusal_.available_tokens)};t={refusal_.retry_after_header}',
    }


# --- admission: shared by the API (at submit) and the admit Lambda (the queue, core/queue.py) ---


@dataclass(frozen=True)
class Admission:
    """What to admit: one validation run, costing `cost` tokens, for a user with `quota`."""

    validations_table: str
    buckets_table: str
    validation_id: str
    owner: str
    queue_key: str
    run: int
    cost: int
    usage_at_start: int
    quota: Quota | None  # None: exempt (the bootstrap admin)
    fifo: bool = True  # policy `queue`: only the user's oldest queued validation may start


@dataclass(frozen=True)
class Outcome:
    admitted: bool
    refusal: Refusal | None = None  # set when refused by the bucket
    behind: str | None = None  # set when an earlier validation of the user is queued
    gone: bool = False  # the validation is no longer QUEUED (cancelled, or admitted elsewhere)


def queued_since(queue_key: str) -> float:
    """When a validation entered the queue: its `queue_key` is `<ISO time>#<id>` (epoch seconds)."""
    return epoch_of(queue_key.split("#", 1)[0])


def _start_running(admission: Admission, started_at: str, now: float) -> dict[str, Any]:
    update = Update().set(
        status="RUNNING",
        started_at=started_at,
        admitted_at=decimal(now),  # the clock the bucket was judged by: grants can be audited
        reserved=admission.cost if admission.quota else 0,
        reserved_run=admission.run,
        usage_at_start=admission.usage_at_start,
    )
    update.remove("queue_key", "park_token")
    # Holding a queue_key: it is counted on the bucket's `queued`, which the grant lowers.
    update.when(
        "{status} = :queued AND {run} = :run AND attribute_exists({queue_key})", queued="QUEUED", run=admission.run
    )
    return update.item(admission.validations_table, {"id": admission.validation_id})


def admission_steps(admission: Admission, now: float, started_at: str) -> Generator[Step, StepAnswer, Outcome]:
    """A sans-IO admission (core/steps.py): the queue's head (core/queue.head_steps), then the
    grant transaction; returns an Outcome. The API drives it at submission, the admit Lambda
    when the execution starts and each time it is woken or its timed wait ends.
    """
    if admission.fifo:
        head = yield from head_steps(admission.validations_table, admission.owner, me=admission.validation_id)
        if head is not None and head.id != admission.validation_id:
            return Outcome(False, behind=head.id)
    if admission.quota is None:
        answer = yield transact([{"Update": _start_running(admission, started_at, now)}])
        return Outcome(False, gone=True) if isinstance(answer, Cancelled) else Outcome(True)
    bucket_full = True
    for _ in range(3):  # at most one wrong guess of the bucket's shape, plus a clock move
        acquire = acquire_update(
            admission.buckets_table,
            admission.owner,
            admission.quota,
            admission.cost,
            now,
            bucket_full,
            leave_queue=True,
        )
        answer = yield transact([{"Update": acquire}, {"Update": _start_running(admission, started_at, now)}])
        if not isinstance(answer, Cancelled):
            return Outcome(True)
        bucket_reason, validation_reason = answer.reasons[0], answer.reasons[1]
        if validation_reason.get("Code") == "ConditionalCheckFailed":
            return Outcome(False, gone=True)
        old = untyped(bucket_reason.get("Item") or {})
        refused = refusal(old, admission.quota, admission.cost, now)
        if refused is not None:
            return Outcome(False, refusal=refused)
        bucket_full = float(old.get("tat", 0)) <= now
    return Outcome(False, refusal=Refusal("tokens", 1.0, 0.0, now))


def settlement(
    validations_table: str,
    buckets_table: str,
    validation: dict[str, Any],
    quota: Quota | None,
    spend_table: str = "",
    now: float | None = None,
) -> list[dict[str, Any]] | None:
    """The settle transaction for the validation's current run, or None when there is nothing to settle.
    With `spend_table`, the run's cost and tokens join the owner's spend (core/spend.py) in it."""
    if (
        quota is None
        or "reserved_run" not in validation
        or validation.get("settled_run", 0) >= validation["reserved_run"]
    ):
        return None
    used = (
        validation.get("prompt_tokens", 0)
        + validation.get("completion_tokens", 0)
        - validation.get("usage_at_start", 0)
    )
    sets, spent = _spend(spend_table, validation, time.time() if now is None else now) if spend_table else ({}, [])
    items = settle_items(
        validations_table,
        buckets_table,
        validation["id"],
        validation["owner"],
        validation["reserved_run"],
        quota,
        validation.get("reserved", 0) - used,
        used,
        sets,
    )
    return items + spent


def _spend(spend_table: str, validation: dict[str, Any], now: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What the run adds to its owner's spend: its cost and tokens since the last settlement
    (`spend_charged` holds the totals charged so far), and its budget reservation given back."""
    before = validation.get("spend_charged") or {}
    totals = pricing.total_tokens(validation)
    total_cost = pricing.record_cost(validation)
    tokens = pricing.Tokens(
        totals.prompt - int(before.get("prompt", 0)),
        totals.cached - int(before.get("cached", 0)),
        totals.completion - int(before.get("completion", 0)),
    )
    cost = None if total_cost is None else total_cost - Decimal(str(before.get("usd", 0)))
    charged = {"prompt": totals.prompt, "cached": totals.cached, "completion": totals.completion}
    if total_cost is not None:
        charged["usd"] = total_cost  # type: ignore[assignment]  # a Decimal beside the counts
    reserved = Decimal(str(validation.get("budget_reserved") or 0))
    charge = spend.Charge(cost, tokens, validation.get("budget_key"), reserved)
    # On the validation, in the same transaction: the totals charged so far, the reservation spent.
    sets = {"spend_charged": charged, "budget_reserved": 0}
    items = [{"Update": u} for u in spend.charge_updates(spend_table, validation["owner"], charge, now)]
    if validation.get("model") and tokens.prompt > 0:  # what estimates of this model expect it to answer
        items.append({"Update": spend.ratio_update(spend_table, validation["model"], tokens.prompt, tokens.completion)})
    return sets, items


def settle_steps(
    validations_table: str,
    buckets_table: str,
    validation: dict[str, Any],
    quota: Quota | None,
    spend_table: str = "",
) -> Generator[Step, StepAnswer, bool]:
    """A sans-IO settlement (core/steps.py) of the validation's current run: True when this
    call settled it, False when there was nothing to settle or another caller won the race
    (the transaction's condition makes it once). The API drives it on cancel, the Finalize
    Lambda at the end of a run."""
    items = settlement(validations_table, buckets_table, validation, quota, spend_table)
    if items is None:
        return False
    answer = yield transact(items)
    return not isinstance(answer, Cancelled)


def settle_items(
    validations_table: str,
    buckets_table: str,
    validation_id: str,
    owner: str,
    run: int,
    quota: Quota,
    refund_tokens: int,
    used_tokens: int,
    sets: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Return unused tokens (or charge an overrun) and the running slot, exactly once per admitted run.

    The owner ends up charged exactly what the run used (every model attempt's tokens):
    `charged_tokens` adds it up over runs, `refunded` what came back."""
    return [
        {
            "Update": Update()
            .set(**(sets or {}))
            .set_to("settled_run", ":run")
            .set_to("refunded", "if_not_exists({refunded}, :zero) + :refund", zero=0, refund=max(0, refund_tokens))
            .set_to("charged_tokens", "if_not_exists({charged_tokens}, :zero) + :used", used=used_tokens)
            .when("{reserved_run} = :run AND (attribute_not_exists({settled_run}) OR {settled_run} < :run)", run=run)
            .item(validations_table, {"id": validation_id})
        },
        {"Update": refund_update(buckets_table, owner, quota, refund_tokens)},
    ]


def plan_correction(
    validations_table: str,
    buckets_table: str,
    validation: dict[str, Any],
    quota: Quota | None,
    estimate: int,
    sets: dict[str, Any],
) -> list[dict[str, Any]]:
    """The plan step's one transaction (lambdas/plan_files): the uploaded files' plans onto the
    validation, and its reservation corrected from the guess made at submission to `estimate`.

    A run still QUEUED has reserved nothing yet: its `run_cost` becomes the estimate, and
    admission reserves that; nor has a run of an owner without a quota (the bootstrap admin).
    An admitted run (the API admits at submission when it can) holds `reserved` in its owner's
    bucket: the difference is refunded (a smaller plan) or charged (a larger one; `tat` moves
    forward by it), like settlement. Once: the condition needs the
    files still unplanned and the run the same."""
    run = validation["run"]
    update = Update().set(**sets, run_cost=estimate, estimated_tokens=estimate).remove("unplanned")
    update.when("attribute_exists({unplanned}) AND {run} = :run", run=run)
    if quota is None:  # an owner without a quota (the bootstrap admin) reserves nothing, queued or not
        update.when("{status} IN (:queued, :running)", queued="QUEUED", running="RUNNING")
        return [{"Update": update.item(validations_table, {"id": validation["id"]})}]
    if validation["status"] == "QUEUED" or validation.get("reserved_run") != run:
        update.when("{status} = :queued", queued="QUEUED")
        return [{"Update": update.item(validations_table, {"id": validation["id"]})}]
    delta = estimate - int(validation.get("reserved", 0))
    update.set_to("reserved", ":reserved", reserved=estimate)
    update.when("{status} = :running AND {reserved_run} = :run", running="RUNNING")
    update.when("attribute_not_exists({settled_run}) OR {settled_run} < :run")
    bucket = Update().set_to("tat", "{tat} + :inc", inc=decimal(delta / quota.rate))
    return [
        {"Update": update.item(validations_table, {"id": validation["id"]})},
        {"Update": bucket.item(buckets_table, {"user_id": validation["owner"]})},
    ]

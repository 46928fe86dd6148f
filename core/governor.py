"""The governor: one budget of tokens and requests, and per-validation call slots, in DynamoDB.

Everything here is pure (numbers and request builders); the Lambdas drive it with boto3
(lambdas/common/governor.py) and the API reads its state with aioboto3.

The budget. `target_tpm × throttle_threshold` tokens and `target_rpm × throttle_threshold`
requests per window (a minute; scaled down in benchmarks) for the whole deployment, kept as
GCRA (one schedule in time, `tat`) on one item (`pk=budget`) or split over shards (below). A call is charged what
OpenAI's limiter charges: prompt tokens plus `max_tokens`, and a request that fails still
counts; and it is charged at least one request's worth of tokens, `target_tpm ÷ target_rpm`
(`Budget.cost`), so it takes its place for the longer of its tokens at the token rate and
one request at the request rate: the one schedule holds both limits, and a grant needs
both a request and its tokens. Below, "tokens" are these charged tokens. `tat` moves
forward by cost / rate per grant. The burst capacity is half the headroom the threshold
leaves, `target_tpm × (1 − threshold) / 2` (as many requests: the same time), so in any
window the grants stay below both targets: rate × window + capacity ≤ target. (Calls start
at points in time, so a window holds the rate's tokens plus the call that starts last: a
call larger than the whole headroom the threshold leaves, `target × (1 − threshold)`, can
take a window past the target by up to its excess over it.)

Shards. One item takes at most 1,000 writes a second, so the budget is split over up to
GOVERNOR_SHARDS items (`pk=budget`, `budget~1`, … `budget~<n−1>`; another model's
`budget#<model>~<i>`), each a GCRA of its own at 1/n of the rate with 1/n of the burst
(`Budget.shard`). Any window's grants on one shard stay within rate/n × window + burst/n, so
summed over the shards within the whole budget's bound. A lease picks its shard by hash and
borrows from another when its own has no place soon; what it gives back goes to the shards
that granted it, never more than each granted (`refunds`), at the budget's fastest rate
(`Budget.full_rate`), so borrowing never creates tokens. A budget whose shards' bursts would
hold fewer than SHARD_MIN_BURST_CALLS large calls is split over fewer (`Budget.shard_count`,
down to one: the item it always was). Feedback (429 factor, pauses, lowered limits) is written
to every shard. Usage slices and call statistics are spread over COUNTER_SHARDS items that
readers read all at once; fair-share accounts are kept per shard (core/fairness.py).

One update per grant. A grant is one conditional UpdateItem on one shard (`grant`): no
transaction. What must be atomic is each item's own change; the lease, the usage slice and
the account are written after (or, the account, before) as writes of their own, ordered so
that a crash between them can only lose tokens (the budget runs short), never create them:
a lease records its tokens after they were granted, and whoever deletes a lease (its holder
closing, or a reclaimer) gives its tokens back, the conditional delete first.

Leases. Validators do not hit the budget per call: an invocation takes tokens in parts
(a lease of up to `LEASE_CALLS` calls' worth, at most an eighth of the burst, when the
burst holds 32 calls or more; a single call's worth below that) and spends them locally.
Its lease item (`pk=lease#<validation>`, `sk=<slot>`) is also its concurrency slot: it
holds the slot index, the tokens `leased` from the budget and the tokens `committed` to
calls (including the call in flight), and `expires_at`, renewed before each call. A clean
close returns `leased − committed` to the budget. A holder that dies leaves an expired
lease: the next validator that wants that slot, or any validator that sweeps the
`open_leases` index, returns the same `leased − committed` and frees the slot — within one
lease period.

Feedback. A 429, of either limit, lowers the budget's `factor` (×0.8, at most once per
tenth of a window, never below 0.25) and pauses grants for the `retry-after`; the factor
recovers linearly (+0.25 per window). `x-ratelimit-limit-tokens` below target_tpm, or
`x-ratelimit-limit-requests` below target_rpm, lowers that target, and
`x-ratelimit-remaining-tokens` (or `-requests`) close to empty pauses grants until its
reset. Headers only ever slow the governor down: a wrong or missing header cannot make it
exceed the configured targets.

Live settings. The SSM parameters (`PARAMETERS`) are the source of truth; the budget item
holds a mirror of them (`live_<name>` with the SSM version it was copied from) that the
Lambdas read instead of SSM, so SSM's reads do not grow with the fleet
(lambdas/common/live_config.py). The list of models (`models`, core/models.py) is mirrored
beside it, on its own item in the same partition (`pk=budget, sk=models`): one Query reads
both, and the budget item, written by every grant, stays small.

One budget per model. OpenAI's limits are per model, so each model of the list has a budget
of its own (its targets, `tat`, factor, pauses, lowered limits), with its own usage slices,
call statistics and fair-share records (`Scope`). The deployment's configured model
(OPENAI_MODEL) keeps the keys it had before there were several (`pk=budget`, `usage`,
`stats`, `demand`, `share#<user>`); every other model's keys end in `#<model>`. The
default model's targets are the deployment-wide `target-tpm` and `target-rpm`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core import headroom
from core.dynamo import Update, decimal, typed

BUDGET_PK = "budget"
BUDGET_KEY = {"pk": BUDGET_PK, "sk": "tokens"}  # the configured model's budget (Scope())
MODELS_KEY = {"pk": BUDGET_PK, "sk": "models"}  # the mirror of the list of models
USAGE_PK = "usage"
STATS_PK = "stats"
USAGE_SLICES = 6  # usage is counted in sixths of a window
LEASE_CALLS = 4  # a lease covers up to this many calls...
LEASE_MIN_BURST_CALLS = 32  # ...when the burst capacity holds this many
OPEN_SHARDS = 8  # the open_leases index is spread over this many partitions
# Sharding (see "Shards" above). The default shard count is sized for OpenAI's top tier: at
# 500 calls/s, 8 shards take ~63 grants/s each. A shard's burst must hold SHARD_MIN_BURST_CALLS
# calls of SHARD_CALL_TOKENS (a large call) or the budget is split over fewer shards (down to one):
# a shard's window overshoots by its largest call's excess over its burst, so small budgets stay whole.
SHARDS = 8
SHARD_MIN_BURST_CALLS = 32
SHARD_CALL_TOKENS = 8_192
SHARD_MARK = "~"  # budget~3, usage#o4-mini~5: model names never hold it (core/models.NAME)
COUNTER_SHARDS = 8  # usage slices and call statistics: spread over this many items, read all at once
MIN_FACTOR, DECREASE, RECOVERY_PER_WINDOW = 0.25, 0.8, 0.25
PENALTY_SPACING = 0.1  # of a window: concurrent 429s lower the factor once
LOW_WATER_CALLS = 2  # upstream remaining below this many calls' tokens → pause until its reset


# The live parameters under the SSM prefix, mirrored on the budget item. The first three are
# required; a deployment made before the others existed reads their defaults.
PARAMETERS = ("max-parallelism", "target-tpm", "target-rpm", "throttle-threshold", "fair-share")
REQUIRED = ("max-parallelism", "target-tpm", "throttle-threshold")
MODELS = "models"  # the list of models (core/models.py), mirrored on MODELS_KEY
MIRRORED = (*PARAMETERS, MODELS)  # what the Lambdas read from the mirror, never from SSM


@dataclass(frozen=True)
class Scope:
    """Whose budget: one model's. `model` None is the deployment's configured model, whose items
    keep the keys they had before there were several budgets; another model's keys end in
    `#<model>` (model names never hold `#`: core/models.NAME)."""

    model: str | None = None

    @classmethod
    def of(cls, model: str | None, configured: str) -> Scope:
        return cls(None if not model or model == configured else model)

    @classmethod
    def of_budget(cls, pk: str) -> Scope:
        """The scope of a budget item's partition key (a lease names its budget so)."""
        _, _, model = pk.split(SHARD_MARK, 1)[0].partition("#")
        return cls(model or None)

    def pk(self, base: str, shard: int = 0) -> str:
        """The partition key of `base` (budget, usage, stats, share#<user>) for this model, on
        `shard` (shard 0 keeps the unsharded key: one shard is the budget as it always was)."""
        key = base if self.model is None else f"{base}#{self.model}"
        return key if shard == 0 else f"{key}{SHARD_MARK}{shard}"

    def name(self, configured: str) -> str:
        return self.model or configured

    @property
    def budget_key(self) -> dict[str, str]:
        """Shard 0 of the budget: it also holds what the admin views read (factor, lowered limits)."""
        return self.shard_key(0)

    def shard_key(self, shard: int) -> dict[str, str]:
        return {"pk": self.pk(BUDGET_PK, shard), "sk": "tokens"}

    @property
    def stats_key(self) -> dict[str, str]:
        return self.stats_key_of(0)

    def stats_key_of(self, shard: int) -> dict[str, str]:
        return {"pk": self.pk(STATS_PK, shard % COUNTER_SHARDS), "sk": "calls"}


HOME = Scope()


@dataclass(frozen=True)
class Limits:
    """The live settings, from SSM Parameter Store (through the budget item's mirror)."""

    max_parallelism: int
    target_tpm: int
    throttle_threshold: float
    fair_share: bool = True  # `fair-share` on|off: weighted fair share across users (core/fairness.py)
    target_rpm: int | None = None  # `target-rpm`; None: requests are not governed (a deployment without it)

    @classmethod
    def parse(cls, values: Mapping[str, str]) -> Limits:
        rpm = values.get("target-rpm")
        return cls(
            int(values["max-parallelism"]),
            int(values["target-tpm"]),
            float(values["throttle-threshold"]),
            values.get("fair-share", "on").strip().lower() != "off",  # a deployment without it: on
            int(rpm) if rpm is not None and rpm.strip() else None,
        )

    def of_model(self, target_tpm: int, target_rpm: int | None) -> Limits:
        """One model's limits: its targets, the deployment's other settings."""
        return dataclasses.replace(self, target_tpm=int(target_tpm), target_rpm=target_rpm)


@dataclass(frozen=True)
class BudgetState:
    tat: float = 0.0
    factor: float = 1.0
    penalized_at: float = 0.0
    upstream_tpm: int | None = None
    tat_exact: str | None = None  # the stored number as DynamoDB returned it, for compare-and-set
    upstream_rpm: int | None = None

    @classmethod
    def of(cls, item: Mapping[str, Any] | None) -> BudgetState:
        item = item or {}
        tpm, rpm = item.get("upstream_tpm"), item.get("upstream_rpm")
        tat = item.get("tat")
        return cls(
            float(tat or 0),
            float(item.get("factor", 1)),
            float(item.get("penalized_at", 0)),
            int(tpm) if tpm is not None else None,
            str(tat) if tat is not None else None,
            int(rpm) if rpm is not None else None,
        )


@dataclass(frozen=True)
class Budget:
    """The budget's numbers at one moment, from the live limits and the stored state."""

    limits: Limits
    state: BudgetState
    window_seconds: float
    split: int = 1  # one shard's budget: the rate and the burst divided by this many shards

    def shard_count(self, configured: int) -> int:
        """How many shards the budget is split over: `configured` (GOVERNOR_SHARDS), fewer when a
        shard's burst would hold fewer than SHARD_MIN_BURST_CALLS large calls, at least one.
        From the configured limits alone (not what upstream's headers lowered them to), so the
        same for every process that reads the same live limits."""
        whole = Budget(self.limits, BudgetState(), self.window_seconds)
        call = max(SHARD_CALL_TOKENS, whole.tokens_per_request)
        fits = int(whole.capacity(0) // (SHARD_MIN_BURST_CALLS * call))
        return max(1, min(int(configured), fits))

    def shard(self, shards: int, state: BudgetState | None = None) -> Budget:
        """One of `shards` shards: 1/shards of the rate and of the burst (its own stored state)."""
        return dataclasses.replace(self, split=max(1, shards), state=state if state is not None else self.state)

    def factor(self, now: float) -> float:
        recovered = max(0.0, now - self.state.penalized_at) / self.window_seconds * RECOVERY_PER_WINDOW
        return min(1.0, self.state.factor + recovered)

    @property
    def limit_tpm(self) -> float:
        """The upstream limit we believe in: the configured one, lowered by what OpenAI says."""
        if self.state.upstream_tpm:
            return min(self.limits.target_tpm, self.state.upstream_tpm)
        return float(self.limits.target_tpm)

    @property
    def limit_rpm(self) -> float | None:
        """The request limit we believe in (None: not governed), lowered by what OpenAI says."""
        known = [r for r in (self.limits.target_rpm, self.state.upstream_rpm) if r]
        return float(min(known)) if known else None

    @property
    def tokens_per_request(self) -> float:
        """A request's share of the budget in tokens: the least a call is charged (0: requests not governed)."""
        rpm = self.limit_rpm
        return self.limit_tpm / rpm if rpm else 0.0

    def cost(self, tokens: int) -> int:
        """What a call of `tokens` (prompt + max_tokens) takes of the budget: its tokens, or
        one request's worth when that is more (the request limit binds for small calls)."""
        return max(int(tokens), math.ceil(self.tokens_per_request))

    def tokens_per_window(self, now: float) -> float:
        """This budget's tokens per window (a shard's: its part of the whole)."""
        return self.limit_tpm * self.limits.throttle_threshold * self.factor(now) / self.split

    def requests_per_window(self, now: float) -> float | None:
        rpm = self.limit_rpm
        return rpm * self.limits.throttle_threshold * self.factor(now) / self.split if rpm else None

    def rate(self, now: float) -> float:
        """Tokens per second."""
        return max(self.tokens_per_window(now), 1.0) / self.window_seconds

    @property
    def full_rate(self) -> float:
        """The fastest this budget ever runs (configured targets, no 429 factor, no lowered
        limit): tokens given back are priced at it, so a refund never returns more time than the
        grant took at whatever rate it was made."""
        tokens = self.limits.target_tpm * self.limits.throttle_threshold / self.split
        return max(tokens, 1.0) / self.window_seconds

    def capacity(self, cost: float) -> float:
        return max(float(cost), self.limit_tpm * (1.0 - self.limits.throttle_threshold) / 2.0 / self.split)

    def schedule(self, cost: float, now: float, tat: float) -> tuple[float, float]:
        """(new `tat`, when the call may start) for a grant of `cost` reserved now.

        GCRA as virtual scheduling: a grant moves `tat` forward by cost / rate and may be
        used once `tat` is within one burst of the clock. A validator reserves its place
        at once and sleeps until then, so waiting validators form a queue in time instead
        of polling: no herd, and no capacity lost to a late wake-up.
        """
        rate = self.rate(now)
        new = max(tat, now) + cost / rate
        return new, max(now, new - self.capacity(cost) / rate)

    def lease_size(self, estimate: int, needed: int) -> int:
        """Tokens to take for the next calls (`estimate`: one call's cost).

        Tokens a validator holds unspent can be spent in a later window than they were
        granted in, on top of that window's grants. So leases cover several calls
        (LEASE_CALLS) only when the burst holds at least LEASE_MIN_BURST_CALLS calls, and
        then at most an eighth of the burst; below that a lease is just the call. A small
        limit means few calls per second, where a write per call costs nothing.
        """
        burst = self.capacity(estimate)
        if burst < LEASE_MIN_BURST_CALLS * estimate:
            return int(needed)
        return int(round(max(needed, min(LEASE_CALLS * estimate, burst / 8))))


# --- request builders (low-level, typed: the same for boto3 and aioboto3) -------------------


@dataclass(frozen=True)
class Grant:
    request: dict[str, Any]  # one conditional UpdateItem (ReturnValues: the new `tat`)
    starts_at: float  # when the call may start, as the known state says (the answer's `tat` says exactly)
    idle: bool  # its shape: from now (the shard was idle) or behind the stored `tat`


def grant(
    table: str,
    budget: Budget,
    cost: int,
    now: float,
    scope: Scope = HOME,
    *,
    shard: int = 0,
    latest: float | None = None,
) -> Grant:
    """The one conditional UpdateItem that reserves `cost` tokens on a shard of the budget.

    Two shapes, by the `tat` last seen: the shard is idle (`tat <= now`): set `tat` from now, if it
    still is; or it is busy: add cost / rate to the stored `tat`, if it is still ahead of now and
    no later than lets the call start by `latest` (None: any time). Busy grants made at the same
    moment all succeed (an ADD commutes: no lost compare-and-set) and each lands where the
    answer's new `tat` says (`started`). Each update is atomic, so the stored sequence is GCRA's
    exactly. A refusal returns the stored item (ReturnValuesOnConditionCheckFailure), so the next
    attempt needs no read.
    """
    state = budget.state
    rate = budget.rate(now)
    step = cost / rate
    idle = state.tat_exact is None or state.tat <= now
    _, starts_at = budget.schedule(cost, now, max(state.tat, now))
    update = Update()
    if idle:
        update.set(tat=decimal(now + step)).when("attribute_not_exists({tat}) OR {tat} <= :now", now=decimal(now))
    else:
        update.add(tat=decimal(step)).when("{tat} > :now", now=decimal(now))
        if latest is not None:  # start = stored tat + step − burst ≤ latest
            update.when("{tat} <= :latest", latest=decimal(latest - step + budget.capacity(cost) / rate))
    request = update.add(granted=int(cost)).item(table, scope.shard_key(shard))
    return Grant(
        {**request, "ReturnValues": "UPDATED_NEW", "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}, starts_at, idle
    )


def started(budget: Budget, cost: int, now: float, tat: float) -> float:
    """When a granted call may start, from the `tat` its grant stored (the answer's UPDATED_NEW)."""
    return max(now, tat - budget.capacity(cost) / budget.rate(now))


def refund(
    table: str, budget: Budget, tokens: float, now: float, scope: Scope = HOME, *, shard: int = 0
) -> dict[str, Any]:
    """Give unused tokens back to the shard that granted them: `tat` moves back by tokens at the
    budget's fastest rate (`full_rate`: never more time than the grant took). `granted − returned`
    is what was spent (the counters make that checkable)."""
    update = Update().add(tat=decimal(-tokens / budget.full_rate), returned=int(tokens))
    return update.when("attribute_exists({tat})").item(table, scope.shard_key(shard))


def overdraw(
    table: str, budget: Budget, tokens: float, now: float, scope: Scope = HOME, *, shard: int = 0
) -> dict[str, Any]:
    """Charge what calls used beyond the lease (a real prompt count above the estimate)."""
    update = Update().add(tat=decimal(tokens / budget.rate(now)), granted=int(tokens))
    return update.item(table, scope.shard_key(shard))


def refunds(back: int, taken: Mapping[int, int], last: int) -> dict[int, int]:
    """Where a lease's `back` unused tokens go: to the shards that granted them (`taken`: tokens
    each shard granted to the lease), the last one first, never more to a shard than it granted,
    so borrowing from other shards never creates tokens. Tokens beyond what was taken (none, as
    leases count) are not given back anywhere."""
    order = sorted(taken, key=lambda shard: (shard != last, -taken[shard], shard))
    out: dict[int, int] = {}
    for shard in order:
        part = min(back, max(0, int(taken[shard])))
        if part > 0:
            out[shard] = part
            back -= part
    return out


def usage_slice(now: float, window_seconds: float) -> int:
    width = window_seconds / USAGE_SLICES
    return int(now // width)


def add_usage(
    table: str, tokens: float, now: float, window_seconds: float, scope: Scope = HOME, *, shard: int = 0
) -> dict[str, Any]:
    """Count tokens sent to the model in the current sixth of a window (on one of
    COUNTER_SHARDS items per slice: the writer's shard's)."""
    update = Update().add(tokens=int(round(tokens))).set(expires_at=int(now + 10 * window_seconds))
    key = {"pk": scope.pk(USAGE_PK, shard % COUNTER_SHARDS), "sk": f"{usage_slice(now, window_seconds):012d}"}
    return update.item(table, key)


def usage_keys(now: float, window_seconds: float, scope: Scope = HOME) -> list[dict[str, str]]:
    """The slices of the last window (the current one included), on every counter shard
    (COUNTER_SHARDS × USAGE_SLICES keys: one BatchGetItem)."""
    current = usage_slice(now, window_seconds)
    return [
        {"pk": scope.pk(USAGE_PK, shard), "sk": f"{s:012d}"}
        for shard in range(COUNTER_SHARDS)
        for s in range(current - USAGE_SLICES + 1, current + 1)
    ]


def usage_tokens(items: list[dict[str, Any]]) -> int:
    """The tokens counted in usage slices, as BatchGetItem returns them (typed)."""
    return sum(int(item["tokens"]["N"]) for item in items if "tokens" in item)


def lease_key(validation_id: str, slot: int) -> dict[str, str]:
    return {"pk": f"lease#{validation_id}", "sk": f"{slot:02d}"}


def claim(
    table: str, validation_id: str, slot: int, holder: str, now: float, lease_seconds: float, scope: Scope = HOME
) -> dict[str, Any]:
    """Take a free slot (no lease item: it was closed or reclaimed). The lease names its budget,
    so whoever reclaims it gives its tokens back to the right one."""
    expires = now + lease_seconds
    update = Update().set(
        holder=holder,
        budget=scope.budget_key["pk"],
        expires_at=decimal(expires),
        open_until=decimal(expires),
        open_shard=f"s{hash((validation_id, slot)) % OPEN_SHARDS}",
        leased=0,
        committed=0,
        reported=0,
        since=decimal(now),
    )
    return update.when("attribute_not_exists({holder})").item(table, lease_key(validation_id, slot))


def renew(
    table: str,
    validation_id: str,
    slot: int,
    holder: str,
    now: float,
    lease_seconds: float,
    *,
    leased: int,
    committed: int,
    reported: int,
    shard: int = 0,
) -> dict[str, Any]:
    """Before a call: extend the lease and add what was taken (from `shard`: `taken_<shard>`, so
    whoever closes or reclaims it gives unused tokens back where they came from), committed and
    counted as used."""
    expires = now + lease_seconds
    update = Update().set(expires_at=decimal(expires), open_until=decimal(expires))
    update.add(leased=int(leased), committed=int(committed), reported=int(reported))
    if leased:
        update.add(**{f"taken_{shard}": int(leased)})
    return update.when("{holder} = :me", me=holder).item(table, lease_key(validation_id, slot))


def release(table: str, validation_id: str, slot: int, holder: str) -> dict[str, Any]:
    return {
        "TableName": table,
        "Key": typed(lease_key(validation_id, slot)),
        "ConditionExpression": "holder = :me",
        "ExpressionAttributeValues": typed({":me": holder}),
    }


@dataclass(frozen=True)
class LeaseRecord:
    """A lease item as stored (`claim`, `renew`): whose slot it is, until when, and its tokens."""

    pk: str
    sk: str
    holder: str
    expires_at: float
    leased: int = 0
    committed: int = 0
    reported: int = 0
    budget: str = BUDGET_PK  # its budget item's pk (a lease without one: the configured model's)
    taken: Mapping[int, int] = dataclasses.field(default_factory=dict)  # shard → tokens it granted to the lease

    @property
    def slot(self) -> int:
        return int(self.sk)

    @property
    def scope(self) -> Scope:
        return Scope.of_budget(self.budget)

    @classmethod
    def of(cls, item: Mapping[str, Any]) -> LeaseRecord | None:
        """From a plain item (core/dynamo.from_item); None for an item that holds no lease."""
        if "holder" not in item or "expires_at" not in item:
            return None
        return cls(
            str(item["pk"]),
            str(item["sk"]),
            str(item["holder"]),
            float(item["expires_at"]),
            leased=int(item.get("leased", 0)),
            committed=int(item.get("committed", 0)),
            reported=int(item.get("reported", 0)),
            budget=str(item.get("budget") or BUDGET_PK),
            taken={int(k.removeprefix("taken_")): int(v) for k, v in item.items() if k.startswith("taken_")}
            or {0: int(item.get("leased", 0))},  # a lease from before shards: all from shard 0
        )


def reclaim(table: str, lease: LeaseRecord) -> dict[str, Any]:
    """Delete an expired lease, only if nobody renewed or reclaimed it since it was read: the
    deletion is what entitles its deleter to give back its tokens (one deleter, one refund)."""
    return {
        "TableName": table,
        "Key": typed({"pk": lease.pk, "sk": lease.sk}),
        "ConditionExpression": "holder = :holder AND expires_at = :exp",
        "ExpressionAttributeValues": typed({":holder": lease.holder, ":exp": decimal(lease.expires_at)}),
    }


def leftover(lease: LeaseRecord) -> tuple[int, int]:
    """(tokens to give back, tokens to count as used) of a lease being closed or reclaimed."""
    return max(0, lease.leased - lease.committed), max(0, lease.committed - lease.reported)


STATS_KEY = HOME.stats_key


def record_calls(
    table: str, calls: int, seconds: float, tokens: float, now: float, scope: Scope = HOME, *, shard: int = 0
) -> dict[str, Any]:
    """A closing lease's average call (duration, tokens charged): the controller plans with the
    freshest of the COUNTER_SHARDS items."""
    update = Update().set(call_seconds=decimal(seconds / calls), call_tokens=decimal(tokens / calls))
    return update.set(updated_at=decimal(now)).item(table, scope.stats_key_of(shard))


def stats_keys(scope: Scope = HOME) -> list[dict[str, str]]:
    return [scope.stats_key_of(shard) for shard in range(COUNTER_SHARDS)]


def freshest(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Of the call statistics' items (plain), the last written; {} when none."""
    return max(items, key=lambda item: float(item.get("updated_at", 0)), default={})


# Feedback is written to every shard of the budget (a 429 at most once per PENALTY_SPACING of a
# window, headers rarely): each shard's grants read only their own item.


def penalize(
    table: str, budget: Budget, now: float, pause_seconds: float, scope: Scope = HOME, *, shard: int = 0
) -> dict[str, Any]:
    """After a 429: lower the factor (once per PENALTY_SPACING of a window)."""
    lowered = max(MIN_FACTOR, budget.factor(now) * DECREASE)
    recent = decimal(now - PENALTY_SPACING * budget.window_seconds)
    update = Update().set(factor=decimal(lowered), penalized_at=decimal(now))
    update.when("attribute_not_exists({penalized_at}) OR {penalized_at} < :recent", recent=recent)
    return update.item(table, scope.shard_key(shard))


def pause(table: str, budget: Budget, until: float, scope: Scope = HOME, *, shard: int = 0) -> dict[str, Any]:
    """No grants before `until`: `tat` moves forward, never back."""
    at = until + budget.capacity(0) / budget.rate(until)  # the burst is not kept either
    update = Update().set_to("tat", ":until").when("attribute_not_exists({tat}) OR {tat} < :until", until=decimal(at))
    return update.item(table, scope.shard_key(shard))


def lower_upstream(table: str, field: str, limit: int, scope: Scope = HOME, *, shard: int = 0) -> dict[str, Any]:
    """Remember a lower upstream limit (`upstream_tpm` or `upstream_rpm`) than the configured
    target (headers never raise it)."""
    update = Update().set_to(field, ":limit")
    update.when(f"attribute_not_exists({{{field}}}) OR {{{field}}} <> :limit", limit=int(limit))
    return update.item(table, scope.shard_key(shard))


# --- the live parameters' mirror ------------------------------------------------------------


def live_attribute(name: str) -> str:
    """The budget item's attribute mirroring the SSM parameter `name` (its version: `_version` after it)."""
    return "live_" + name.replace("-", "_")


@dataclass(frozen=True)
class Mirror:
    """The live parameters as the budget partition mirrors them: SSM name → value, and the SSM
    version each was copied from (the list of models on its own item, MODELS_KEY)."""

    values: Mapping[str, str]
    versions: Mapping[str, int]

    @classmethod
    def of(cls, item: Mapping[str, Any] | None, models: Mapping[str, Any] | None = None) -> Mirror:
        """From plain items (core/dynamo.from_item): the budget item, and the models item."""
        values: dict[str, str] = {}
        versions: dict[str, int] = {}
        for name in MIRRORED:
            source = (models if name == MODELS else item) or {}
            attribute = live_attribute(name)
            if attribute in source:
                values[name] = str(source[attribute])
                versions[name] = int(source.get(f"{attribute}_version", 0))
        return cls(values, versions)

    @property
    def complete(self) -> bool:
        """Every required parameter is mirrored: the Lambdas need not ask SSM."""
        return all(n in self.values for n in REQUIRED)

    def limits(self) -> Limits:
        return Limits.parse(self.values)

    @property
    def models(self) -> str | None:
        """The list of models as stored in SSM (core/models.Catalog.parse), None when never set."""
        return self.values.get(MODELS)

    def behind(self, current: Mapping[str, tuple[str, int]]) -> dict[str, tuple[str, int]]:
        """The parameters of `current` (name → SSM value and version) newer than the mirror's."""
        return {n: (v, version) for n, (v, version) in current.items() if version > self.versions.get(n, 0)}


def mirror(table: str, changes: Mapping[str, tuple[str, int]]) -> list[dict[str, Any]]:
    """Copy parameters (name → SSM value and version) onto the mirror, each only over an older
    version: a copy read from SSM before a newer change never overwrites it. One Update per
    item written (the budget item; the models item for `models`); a refusal returns the stored
    item, so the writer sees what is newer."""
    requests = []
    for key, names in (
        (BUDGET_KEY, [n for n in changes if n != MODELS]),
        (MODELS_KEY, [n for n in changes if n == MODELS]),
    ):
        if not names:
            continue
        update = Update()
        for name in names:
            value, version = changes[name]
            attribute = live_attribute(name)
            update.set(**{attribute: str(value), f"{attribute}_version": int(version)})
            condition = f"attribute_not_exists({{{attribute}_version}}) OR {{{attribute}_version}} <= :v_{attribute}"
            update.when(condition, **{f"v_{attribute}": int(version)})
        requests.append({**update.item(table, key), "ReturnValuesOnConditionCheckFailure": "ALL_OLD"})
    return requests


def mirror_query(table: str) -> dict[str, Any]:
    """The mirror's items (the budget item and the models item: one partition), read at once."""
    return {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": typed({":pk": BUDGET_PK}),
        "ConsistentRead": True,
    }


def mirrored_items(items: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(budget item, models item), typed as the Query answered them, from `mirror_query`'s items."""
    by_sort = {item["sk"]["S"]: item for item in items}
    return by_sort.get(BUDGET_KEY["sk"]), by_sort.get(MODELS_KEY["sk"])


# --- upstream headers --------------------------------------------------------------------------

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?$")


def parse_duration(text: str | None) -> float | None:
    """OpenAI's reset durations (`20ms`, `1.5s`, `6m0s`, `1h2m`); None when unreadable."""
    if not text:
        return None
    text = text.strip()
    match = _DURATION.match(text)
    if not match or not any(match.groups()):
        try:
            seconds = float(text)  # plain seconds, as `retry-after` sends
        except ValueError:
            return None
        return max(0.0, seconds) if math.isfinite(seconds) else None  # "inf" and "nan" say nothing
    h, m, s, ms = (float(g) if g else 0.0 for g in match.groups())
    return h * 3600 + m * 60 + s + ms / 1000


def _int(text: str | None) -> int | None:
    try:
        value = int(float(text)) if text is not None else None
    except (ValueError, OverflowError):  # garbage, or "inf" (OverflowError; "nan" is a ValueError)
        return None
    return value if value is not None and value >= 0 else None


@dataclass(frozen=True)
class Feedback:
    """What the upstream headers ask of the budget; every field only slows it down."""

    upstream_tpm: int | None = None  # a token limit below the configured target
    pause_until: float | None = None
    upstream_rpm: int | None = None  # a request limit below the configured target


def _lower(limit: int | None, target: float | None, known: int | None) -> int | None:
    """An upstream limit worth remembering: below the target (or no target) and not known yet."""
    return limit if limit and (target is None or limit < target) and limit != known else None


def _low_water(
    headers: Mapping[str, str], kind: str, needed: float, limit_known: float | None, window: float
) -> float | None:
    """Seconds to pause when upstream's `kind` (tokens, requests) is nearly empty: until it has
    refilled `needed`, at most its reset and a quarter of a window; None when it is not."""
    remaining = _int(headers.get(f"x-ratelimit-remaining-{kind}"))
    reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
    if remaining is None or reset is None or remaining >= needed:
        return None
    limit = _int(headers.get(f"x-ratelimit-limit-{kind}")) or limit_known or needed
    refill = (needed - remaining) / max(limit / window, 1e-9)
    return min(reset, refill, window / 4)


def read_headers(headers: Mapping[str, str], budget: Budget, estimate: int, now: float) -> Feedback:
    """The `x-ratelimit-*` headers of an answer: the `-tokens` ones and their `-requests` twins."""
    window = budget.window_seconds
    tpm = _lower(_int(headers.get("x-ratelimit-limit-tokens")), budget.limits.target_tpm, budget.state.upstream_tpm)
    rpm = _lower(_int(headers.get("x-ratelimit-limit-requests")), budget.limits.target_rpm, budget.state.upstream_rpm)
    # Upstream is nearly empty (someone else shares the key, or our estimate is off): wait
    # until it has refilled what the next calls need.
    pauses = [
        p
        for p in (
            _low_water(headers, "tokens", LOW_WATER_CALLS * estimate, budget.limit_tpm, window),
            _low_water(headers, "requests", LOW_WATER_CALLS, budget.limit_rpm, window),
        )
        if p is not None
    ]
    return Feedback(tpm, now + max(pauses) if pauses else None, rpm)


# --- the controller's plan and the validators' cap --------------------------------------------


@dataclass(frozen=True)
class Plan:
    parallelism: int  # the validation's starting parallelism
    map_concurrency: int  # the Map's MaxConcurrency: live raises reach up to this × calls_per_invocation
    max_parallelism: int  # the SSM value the plan was made from
    reason: str
    calls_per_invocation: int = 1  # k: calls one validator invocation runs at once (core/headroom.py)
    group: int = 1  # the parts' Map items: this many submitted batches merged into one

    def as_dict(self) -> dict[str, Any]:
        return {
            "parallelism": self.parallelism,
            "map_concurrency": self.map_concurrency,
            "max_parallelism": self.max_parallelism,
            "reason": self.reason,
            "calls_per_invocation": self.calls_per_invocation,
        }


MAP_LIMIT = headroom.MAP_LIMIT  # an inline Map runs at most 40 iterations at once


def plan(
    limits: Limits,
    budget: Budget,
    *,
    batches: int,
    tokens_last_window: float,
    call_tokens: float,
    call_seconds: float,
    ceiling: int,
    now: float,
    share: float | None = None,
    parts: int | None = None,
    other_items: int = 0,
) -> Plan:
    """The execution's parallelism from the live settings and the current consumption.

    As many concurrent calls as the budget's free share can feed (calls of `call_tokens`,
    charged at least a request's worth, lasting `call_seconds`, with a 25% margin), never more
    than max-parallelism or the number of `parts` left (default: one per batch), at least one.
    Under fair share the free share is at least the owner's `share` of the budget
    (core/fairness.py): a newcomer to a busy budget is planned for what it will get, not for
    what the others leave. The reach is higher (max-parallelism, or up to `ceiling`), so an
    admin who raises max-parallelism later reaches running validations too; core/headroom.py
    shapes it into the Map's concurrency (≤ 40, ≤ its items) × calls per invocation, merging
    `batches` into fewer items when an item holds fewer parts than an invocation may call at
    once (`other_items`: the combine step's Map, which shares the Map width).
    """
    parts = max(1, parts if parts is not None else batches)
    target = budget.tokens_per_window(now)
    free_share = min(1.0, max(0.25, 1.0 - tokens_last_window / target)) if target > 0 else 0.25
    if share is not None:
        free_share = max(free_share, min(1.0, share))
    per_slot_tokens_per_second = max(budget.cost(math.ceil(call_tokens)), 1) / max(call_seconds, 0.05)
    fed = math.ceil(1.25 * budget.rate(now) * free_share / per_slot_tokens_per_second)
    parallelism = max(1, min(limits.max_parallelism, parts, headroom.MAX_PARALLELISM, fed))
    reason = (
        "max_parallelism"
        if parallelism == limits.max_parallelism
        else "batches"
        if parallelism == parts
        else "token_budget"
    )
    # The Map no wider than the planned parallelism (at that cap each invocation's first call has
    # a slot: none starts only to wait); the rest of the reach is calls per invocation.
    reach = max(parallelism, ceiling, limits.max_parallelism)
    shaped = headroom.shape(reach, batches, parts, other_items, width=parallelism)
    return Plan(
        min(parallelism, shaped.reach),
        shaped.map_concurrency,
        limits.max_parallelism,
        reason,
        shaped.calls_per_invocation,
        shaped.group,
    )


def effective_parallelism(max_parallelism_now: int, record: Mapping[str, Any]) -> int:
    """How many calls one validation may have in flight now.

    The plan stands until an admin changes max-parallelism; from then on the live value
    applies, within the reach fixed at the start (the Map's concurrency × calls per invocation).
    """
    planned = record.get("plan")
    if not planned:
        return max_parallelism_now
    reach = int(planned["map_concurrency"]) * headroom.calls_per_invocation(planned)
    if int(planned["max_parallelism"]) == max_parallelism_now:
        return min(int(planned["parallelism"]), reach)
    return max(1, min(max_parallelism_now, reach))

"""The TPM governor: one token budget and per-validation call slots, in DynamoDB.

Everything here is pure (numbers and request builders); the Lambdas drive it with boto3
(lambdas/common/governor.py) and the API reads its state with aioboto3.

The budget. `target_tpm × throttle_threshold` tokens per window (a minute; scaled down in
benchmarks) for the whole deployment, kept as GCRA on one item (`pk=budget`): `tat` moves
forward by cost / rate per grant. Its burst capacity is half the headroom the threshold
leaves, `target_tpm × (1 − threshold) / 2` (at least one call), so in any window the
grants stay below `target_tpm`: rate × window + capacity ≤ target_tpm. A call is charged
what OpenAI's limiter charges: prompt tokens plus `max_tokens`, and a request that fails
still counts.

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

Feedback. A 429 lowers the budget's `factor` (×0.8, at most once per tenth of a window,
never below 0.25) and pauses grants for the `retry-after`; the factor recovers linearly
(+0.25 per window). `x-ratelimit-limit-tokens` below target_tpm lowers the target, and
`x-ratelimit-remaining-tokens` close to empty pauses grants until `x-ratelimit-reset-tokens`.
Headers only ever slow the governor down: a wrong or missing header cannot make it
exceed the configured target.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from core import headroom
from core.dynamo import Update, decimal, typed

BUDGET_KEY = {"pk": "budget", "sk": "tokens"}
USAGE_PK = "usage"
USAGE_SLICES = 6  # usage is counted in sixths of a window
LEASE_CALLS = 4  # a lease covers up to this many calls...
LEASE_MIN_BURST_CALLS = 32  # ...when the burst capacity holds this many
OPEN_SHARDS = 8  # the open_leases index is spread over this many partitions
MIN_FACTOR, DECREASE, RECOVERY_PER_WINDOW = 0.25, 0.8, 0.25
PENALTY_SPACING = 0.1  # of a window: concurrent 429s lower the factor once
LOW_WATER_CALLS = 2  # upstream remaining below this many calls' tokens → pause until its reset


@dataclass(frozen=True)
class Limits:
    """The live settings, from SSM Parameter Store."""

    max_parallelism: int
    target_tpm: int
    throttle_threshold: float
    fair_share: bool = True  # `fair-share` on|off: weighted fair share across users (core/fairness.py)

    @classmethod
    def parse(cls, values: Mapping[str, str]) -> Limits:
        return cls(
            int(values["max-parallelism"]),
            int(values["target-tpm"]),
            float(values["throttle-threshold"]),
            values.get("fair-share", "on").strip().lower() != "off",  # a deployment without it: on
        )


@dataclass(frozen=True)
class BudgetState:
    tat: float = 0.0
    factor: float = 1.0
    penalized_at: float = 0.0
    upstream_tpm: int | None = None
    tat_exact: str | None = None  # the stored number as DynamoDB returned it, for compare-and-set

    @classmethod
    def of(cls, item: Mapping[str, Any] | None) -> BudgetState:
        item = item or {}
        upstream = item.get("upstream_tpm")
        tat = item.get("tat")
        return cls(
            float(tat or 0),
            float(item.get("factor", 1)),
            float(item.get("penalized_at", 0)),
            int(upstream) if upstream is not None else None,
            str(tat) if tat is not None else None,
        )


@dataclass(frozen=True)
class Budget:
    """The budget's numbers at one moment, from the live limits and the stored state."""

    limits: Limits
    state: BudgetState
    window_seconds: float

    def factor(self, now: float) -> float:
        recovered = max(0.0, now - self.state.penalized_at) / self.window_seconds * RECOVERY_PER_WINDOW
        return min(1.0, self.state.factor + recovered)

    @property
    def limit_tpm(self) -> float:
        """The upstream limit we believe in: the configured one, lowered by what OpenAI says."""
        if self.state.upstream_tpm:
            return min(self.limits.target_tpm, self.state.upstream_tpm)
        return float(self.limits.target_tpm)

    def tokens_per_window(self, now: float) -> float:
        return self.limit_tpm * self.limits.throttle_threshold * self.factor(now)

    def rate(self, now: float) -> float:
        """Tokens per second."""
        return max(self.tokens_per_window(now), 1.0) / self.window_seconds

    def capacity(self, cost: float) -> float:
        return max(float(cost), self.limit_tpm * (1.0 - self.limits.throttle_threshold) / 2.0)

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
        """Tokens to take for the next calls.

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
    request: dict[str, Any]  # the Update for TransactWriteItems
    tat: float
    stored: str  # `tat` exactly as it will be stored
    starts_at: float


def grant(table: str, budget: Budget, cost: int, now: float) -> Grant:
    """The conditional Update that reserves `cost` tokens, or fails if the budget moved.

    Two shapes: the budget is full (`tat <= now`, as far as we know): set `tat` from now;
    or it is not: compare-and-set from the exact `tat` we last saw. A failure returns the
    stored item (ReturnValuesOnConditionCheckFailure), so the next attempt needs no read.
    """
    state = budget.state
    full = state.tat_exact is None or state.tat <= now
    new, starts_at = budget.schedule(cost, now, state.tat)
    if full:
        stored = decimal(new)
        update = Update().when("attribute_not_exists({tat}) OR {tat} <= :now", now=decimal(now))
    else:
        exact = Decimal(str(state.tat_exact))
        stored = exact + decimal(cost / budget.rate(now))
        update = Update().when("{tat} = :seen", seen=exact)
    request = update.set(tat=stored).add(granted=int(cost)).item(table, BUDGET_KEY)
    return Grant({**request, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}, float(stored), str(stored), starts_at)


def refund(table: str, budget: Budget, tokens: float, now: float) -> dict[str, Any]:
    """Give unused tokens back: `tat` moves back by tokens / rate. `granted − returned`
    is what was spent (the counters make that checkable)."""
    update = Update().add(tat=decimal(-tokens / budget.rate(now)), returned=int(tokens))
    return update.when("attribute_exists({tat})").item(table, BUDGET_KEY)


def overdraw(table: str, budget: Budget, tokens: float, now: float) -> dict[str, Any]:
    """Charge what calls used beyond the lease (a real prompt count above the estimate)."""
    return Update().add(tat=decimal(tokens / budget.rate(now)), granted=int(tokens)).item(table, BUDGET_KEY)


def usage_slice(now: float, window_seconds: float) -> int:
    width = window_seconds / USAGE_SLICES
    return int(now // width)


def add_usage(table: str, tokens: float, now: float, window_seconds: float) -> dict[str, Any]:
    """Count tokens sent to the model in the current sixth of a window."""
    update = Update().add(tokens=int(round(tokens))).set(expires_at=int(now + 10 * window_seconds))
    return update.item(table, {"pk": USAGE_PK, "sk": f"{usage_slice(now, window_seconds):012d}"})


def usage_keys(now: float, window_seconds: float) -> list[dict[str, str]]:
    """The slices of the last window (the current one included)."""
    current = usage_slice(now, window_seconds)
    return [{"pk": USAGE_PK, "sk": f"{s:012d}"} for s in range(current - USAGE_SLICES + 1, current + 1)]


def usage_tokens(items: list[dict[str, Any]]) -> int:
    """The tokens counted in usage slices, as BatchGetItem returns them (typed)."""
    return sum(int(item["tokens"]["N"]) for item in items if "tokens" in item)


def lease_key(validation_id: str, slot: int) -> dict[str, str]:
    return {"pk": f"lease#{validation_id}", "sk": f"{slot:02d}"}


def claim(table: str, validation_id: str, slot: int, holder: str, now: float, lease_seconds: float) -> dict[str, Any]:
    """Take a free slot (no lease item: it was closed or reclaimed)."""
    expires = now + lease_seconds
    update = Update().set(
        holder=holder,
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
) -> dict[str, Any]:
    """Before a call: extend the lease and add what was taken, committed and counted as used."""
    expires = now + lease_seconds
    update = Update().set(expires_at=decimal(expires), open_until=decimal(expires))
    update.add(leased=int(leased), committed=int(committed), reported=int(reported))
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

    @property
    def slot(self) -> int:
        return int(self.sk)

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
            *(int(item.get(k, 0)) for k in ("leased", "committed", "reported")),
        )


def reclaim(table: str, lease: LeaseRecord) -> dict[str, Any]:
    """Delete an expired lease, only if nobody renewed or reclaimed it since it was read."""
    return {
        "TableName": table,
        "Key": typed({"pk": lease.pk, "sk": lease.sk}),
        "ConditionExpression": "holder = :holder AND expires_at = :exp",
        "ExpressionAttributeValues": typed({":holder": lease.holder, ":exp": decimal(lease.expires_at)}),
    }


def leftover(lease: LeaseRecord) -> tuple[int, int]:
    """(tokens to give back, tokens to count as used) of a lease being closed or reclaimed."""
    return max(0, lease.leased - lease.committed), max(0, lease.committed - lease.reported)


STATS_KEY = {"pk": "stats", "sk": "calls"}


def record_calls(table: str, calls: int, seconds: float, tokens: float, now: float) -> dict[str, Any]:
    """A closing lease's average call (duration, tokens charged): the controller plans with it."""
    update = Update().set(call_seconds=decimal(seconds / calls), call_tokens=decimal(tokens / calls))
    return update.set(updated_at=decimal(now)).item(table, STATS_KEY)


def penalize(table: str, budget: Budget, now: float, pause_seconds: float) -> dict[str, Any]:
    """After a 429: lower the factor (once per PENALTY_SPACING of a window)."""
    lowered = max(MIN_FACTOR, budget.factor(now) * DECREASE)
    recent = decimal(now - PENALTY_SPACING * budget.window_seconds)
    update = Update().set(factor=decimal(lowered), penalized_at=decimal(now))
    update.when("attribute_not_exists({penalized_at}) OR {penalized_at} < :recent", recent=recent)
    return update.item(table, BUDGET_KEY)


def pause(table: str, budget: Budget, until: float) -> dict[str, Any]:
    """No grants before `until`: `tat` moves forward, never back."""
    at = until + budget.capacity(0) / budget.rate(until)  # the burst is not kept either
    update = Update().set_to("tat", ":until").when("attribute_not_exists({tat}) OR {tat} < :until", until=decimal(at))
    return update.item(table, BUDGET_KEY)


def lower_upstream(table: str, tpm: int) -> dict[str, Any]:
    """Remember a lower upstream limit than the configured target (headers never raise it)."""
    update = Update().set_to("upstream_tpm", ":t")
    update.when("attribute_not_exists({upstream_tpm}) OR {upstream_tpm} <> :t", t=int(tpm))
    return update.item(table, BUDGET_KEY)


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

    upstream_tpm: int | None = None  # a limit below the configured target
    pause_until: float | None = None


def read_headers(headers: Mapping[str, str], budget: Budget, estimate: int, now: float) -> Feedback:
    limit = _int(headers.get("x-ratelimit-limit-tokens"))
    remaining = _int(headers.get("x-ratelimit-remaining-tokens"))
    reset = parse_duration(headers.get("x-ratelimit-reset-tokens"))
    upstream = limit if limit and limit < budget.limits.target_tpm and limit != budget.state.upstream_tpm else None
    pause_until = None
    if remaining is not None and reset is not None and remaining < LOW_WATER_CALLS * estimate:
        # Upstream is nearly empty (someone else shares the key, or our estimate is off):
        # wait until it has refilled what we need, at most a quarter of a window.
        limit_tokens = limit or budget.limit_tpm
        refill = (LOW_WATER_CALLS * estimate - remaining) / max(limit_tokens / budget.window_seconds, 1.0)
        pause_until = now + min(reset, refill, budget.window_seconds / 4)
    return Feedback(upstream, pause_until)


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
    """The execution's parallelism from the SSM values and the current consumption.

    As many concurrent calls as the budget's free share can feed (calls of `call_tokens`
    lasting `call_seconds`, with a 25% margin), never more than max-parallelism or the
    number of `parts` left (default: one per batch), at least one. Under fair share the free
    share is at least the owner's `share` of the budget (core/fairness.py): a newcomer to a
    busy budget is planned for what it will get, not for what the others leave. The reach is
    higher (max-parallelism, or up to `ceiling`), so an admin who raises max-parallelism later
    reaches running validations too; core/headroom.py shapes it into the Map's concurrency
    (≤ 40, ≤ its items) × calls per invocation, merging `batches` into fewer items when an
    item holds fewer parts than an invocation may call at once (`other_items`: the combine
    step's Map, which shares the Map width).
    """
    parts = max(1, parts if parts is not None else batches)
    target = budget.tokens_per_window(now)
    free_share = min(1.0, max(0.25, 1.0 - tokens_last_window / target)) if target > 0 else 0.25
    if share is not None:
        free_share = max(free_share, min(1.0, share))
    per_slot_tokens_per_second = max(call_tokens, 1.0) / max(call_seconds, 0.05)
    fed = math.ceil(1.25 * budget.rate(now) * free_share / per_slot_tokens_per_second)
    parallelism = max(1, min(limits.max_parallelism, parts, headroom.MAX_PARALLELISM, fed))
    reason = (
        "max_parallelism"
        if parallelism == limits.max_parallelism
        else "batches"
        if parallelism == parts
        else "token_budget"
    )
    shaped = headroom.shape(max(parallelism, ceiling, limits.max_parallelism), batches, parts, other_items)
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

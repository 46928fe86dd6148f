"""Weighted fair share of the governor's budget, and priority among one user's validations.

The budget (core/governor.py) is one schedule in time: a grant takes the next place at its
end and its validator sleeps until then. On its own that is first come, first served: a user
with more validators waiting holds more places, so it gets tokens in proportion to its
parallelism. Fair share changes who may take a place, never how many places there are, so
the deployment's limit holds exactly as before (the budget's compare-and-set is untouched).

Demand. A user with work waiting has a demand record (`pk=demand, sk=<user>`): its weight
and, per priority, until when it is live. Its validators renew it while they reserve
(every `BEAT` of a window, in the grant's own transaction when they get one) and it lapses
`DEMAND_LIFE` of a window after the last renewal (DynamoDB TTL removes it later). Each
process reads all demand records at most every `DEMAND_REFRESH` of a window.

Share. With D the users whose demand is live, user u's share of a window is
`tokens_per_window × w_u ÷ Σ_{v∈D} w_v`. Its account (`pk=share#<user>, sk=<window>`)
counts the tokens granted to it for calls starting in that window on `tokens` (what the
share limits), except an outranked validation's slack, on `slack`.

A reservation (`decide`) may
- **queue** (take the next place, up to `HORIZON` of a window ahead) when the grant fits
  the user's share of the window its call would start in, paced over the window
  (`account + cost ≤ share × (elapsed + HORIZON) ÷ window`, or it is the user's first grant
  of that window, so that a share smaller than one call still gets one), checked by the
  account update's condition in the grant's own transaction; or
- take **slack**: a place when the schedule is (nearly) idle: at most `SLACK` of the
  horizon queued; users under their share queue up to a whole horizon ahead, so an idle
  schedule is one nobody with a share left claimed (the budget's burst stays theirs).
  Over-share users get what the others leave (work-conserving); or
- **wait** until one of those can hold, and look again.

Bounded queueing (`HORIZON`) is what lets a newcomer in: before fair share, validators
queued as far ahead as they could wait (30 s), so a new user's first call started after
everything already queued. Now a newcomer waits at most the horizon plus one call.

Per model. Each model has a budget of its own (core/governor.Scope), and so demand and accounts
of its own: another model's demand records are `pk=demand#<model>` and its accounts
`pk=share#<user>#<model>`; a user's share of one model's budget is counted only there.

Priority. A validation's reservation is outranked while the same user has live demand at
a higher priority (`high` > `normal` > `low`): an outranked reservation takes only slack.
So a user's high-priority validation takes the user's share first; lower ones get what it
leaves, as over-share users do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from core.dynamo import Update, decimal, typed
from core.governor import HOME, Budget, Scope

Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = get_args(Priority)  # highest first
DEFAULT_PRIORITY: Priority = "normal"
MAX_WEIGHT = 1_000  # a user's weight is a number from MIN_WEIGHT up to this (quota field `weight`)
# The smallest weight: 1,000,000 to 1 at most between two users, and far inside the range a
# DynamoDB number holds (a weight of 1e-170 passed `> 0` and then failed to store: decimal underflow).
MIN_WEIGHT = 0.001
DEMAND_PK = "demand"
HORIZON = 1 / 20  # of a window: how far ahead of now a reservation may queue (3 s of a minute)
# Of a window: a demand record lapses this long after its last renewal. Long, so that a user
# whose validators are all inside calls (or between parts) keeps its share: a demand that
# outlives its work costs little (its share goes unused, and those over their share take it
# as slack), one that lapses early hands its share to the others.
DEMAND_LIFE = 1 / 2
BEAT = DEMAND_LIFE / 3  # of a window: validators renew their user's demand this often
SLACK = 1 / 4  # of the horizon: how close to idle the schedule must be for over-share users
DEMAND_REFRESH = 1 / 20  # of a window: a process re-reads the demand records at most this often
ACCOUNT_WINDOWS = 3  # an account item expires (TTL) this many windows after its window


@dataclass(frozen=True)
class Tenant:
    """Whom a validator reserves for: the validation's owner, the owner's weight, the validation's priority."""

    user_id: str
    weight: float = 1.0
    priority: str = DEFAULT_PRIORITY

    @property
    def rank(self) -> int:
        return PRIORITIES.index(self.priority) if self.priority in PRIORITIES else PRIORITIES.index(DEFAULT_PRIORITY)


@dataclass(frozen=True)
class Demand:
    """A demand record as stored: the user's weight and, per priority, until when it is live."""

    user_id: str
    weight: float
    until: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, item: Mapping[str, Any]) -> Demand:
        """From a plain item (core/dynamo.from_item)."""
        until: dict[str, float] = {p: float(item[f"until_{p}"]) for p in PRIORITIES if f"until_{p}" in item}
        return cls(str(item["sk"]), float(item.get("weight", 1)), until)

    def live(self, now: float) -> bool:
        return any(t > now for t in self.until.values())

    def outranks(self, rank: int, now: float) -> bool:
        """Live demand at a priority above `rank` (0 is the highest)."""
        return any(self.until.get(p, 0.0) > now for p in PRIORITIES[:rank])


def share(tenant: Tenant, demands: Iterable[Demand], tokens_per_window: float, now: float) -> float:
    """The tenant's tokens per window: its weight over the weights of every user with live
    demand (the tenant is one: it is asking)."""
    weights = {d.user_id: d.weight for d in demands if d.live(now) and d.weight > 0}
    weights[tenant.user_id] = tenant.weight
    return tokens_per_window * tenant.weight / sum(weights.values())


def outranked(tenant: Tenant, demands: Iterable[Demand], now: float) -> bool:
    """Another validation of the same user is waiting at a higher priority."""
    return any(d.user_id == tenant.user_id and d.outranks(tenant.rank, now) for d in demands)


def window_of(t: float, window_seconds: float) -> int:
    return int(t // window_seconds)


@dataclass(frozen=True)
class Decision:
    kind: Literal["queue", "slack", "wait"]
    window: int  # the window the call would start in (its account)
    starts_at: float  # when the call may start, if granted now
    retry_at: float  # for "wait": when to look again...
    spread: float = 0.0  # ...give or take this much (random): waiters of one moment do not look at once
    room: float | None = None  # for "queue": the most the account may hold before this grant (its condition)
    apart: bool = False  # for "slack": counted apart from the share (an outranked validation's)


def decide(
    budget: Budget,
    cost: float,
    now: float,
    tat: float,
    *,
    share: float,
    accounts: Mapping[int, float],
    outranked: bool,
) -> Decision:
    """What a reservation of `cost` may do now, given the budget's `tat` and the user's
    `accounts` (tokens granted to it per window, as far as the caller knows)."""
    _, starts_at = budget.schedule(cost, now, tat)
    width = budget.window_seconds
    window = window_of(starts_at, width)
    horizon = HORIZON * width
    # The share is paced over its window: a call starting `e` seconds into it may bring the
    # account up to share × (e + horizon) ÷ window. Nobody front-loads a window's share, so
    # a user whose few validators come back every few seconds still gets all of its own.
    room = share * min(1.0, (starts_at - window * width + horizon) / width) - cost
    spent = accounts.get(window, 0.0)
    under = not outranked and (spent <= 0 or spent <= room)
    if under and starts_at <= now + horizon:
        return Decision("queue", window, starts_at, starts_at, room=room)
    if tat <= now + SLACK * horizon:
        # Next to nothing queued: the schedule is idle but for the last grant's tail (those
        # under their share queue a horizon ahead; the burst stays theirs). Taking a place
        # right behind that tail lets over-share validators keep the budget busy.
        return Decision("slack", window, starts_at, starts_at, apart=outranked)
    if under:  # a look within the first quarter of the horizon still finds its place in time
        return Decision("wait", window, starts_at, starts_at - horizon, horizon / 4)
    # Over its share so far (or outranked): the schedule may be idle at `tat` (a late look
    # leaves it idle: little spread), or the pace lets it in again, at the latest when the
    # next window opens (queueing for it starts a horizon before).
    retry = tat - SLACK * horizon
    if not outranked:
        paced_at = window * width + (spent + cost) / share * width - horizon if share > 0 else tat
        again = min(paced_at, (window + 1) * width - horizon)
        if now < again < tat:
            retry = again
    return Decision("wait", window, starts_at, retry, horizon / 50)


# --- request builders (low-level, typed) -----------------------------------------------------


def account_key(user_id: str, window: int, scope: Scope = HOME, shard: int = 0) -> dict[str, str]:
    """User ids never hold `#` (the admin API's pattern), so the model's suffix cannot be mistaken
    for one. A sharded budget keeps an account per shard (`share#<user>~<shard>`): each shard is
    a copy of the whole at its part of the rate, with its part of every share."""
    return {"pk": scope.pk(f"share#{user_id}", shard), "sk": f"{window:012d}"}


def charge(
    table: str,
    user_id: str,
    window: int,
    tokens: int,
    window_seconds: float,
    *,
    room: float | None = None,
    slack: bool = False,
    scope: Scope = HOME,
    shard: int = 0,
) -> dict[str, Any]:
    """Count `tokens` on the user's account for `window`: a queued grant on `tokens`, only
    while the account holds at most `room` (so the grant fits the share) or nothing yet; a
    refusal returns the account (ReturnValuesOnConditionCheckFailure), so the caller learns
    it is over. Slack is never refused; an outranked validation's goes on `slack`, apart from
    the share, so it leaves its user's share to the higher-priority validation (the slack of
    a user over its share counts on `tokens`: it delays that user's next queued grant)."""
    update = Update().add(**{"slack" if slack else "tokens": int(tokens)})
    update.set(expires_at=int((window + ACCOUNT_WINDOWS) * window_seconds))
    if room is not None and not slack:
        update.when("attribute_not_exists({tokens}) OR {tokens} <= :room", room=decimal(room))
        key = account_key(user_id, window, scope, shard)
        return {**update.item(table, key), "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
    return update.item(table, account_key(user_id, window, scope, shard))


def heartbeat(table: str, tenant: Tenant, now: float, window_seconds: float, scope: Scope = HOME) -> dict[str, Any]:
    """Renew the tenant's demand at its priority (and its weight, which an admin may change)."""
    until = now + DEMAND_LIFE * window_seconds
    priority = PRIORITIES[tenant.rank]
    fields = {
        "weight": decimal(tenant.weight),
        f"until_{priority}": decimal(until),
        "expires_at": int(until + window_seconds),
    }
    return Update().set(**fields).item(table, {"pk": scope.pk(DEMAND_PK), "sk": tenant.user_id})


def demand_query(table: str, scope: Scope = HOME) -> dict[str, Any]:
    return {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": typed({":pk": scope.pk(DEMAND_PK)}),
    }

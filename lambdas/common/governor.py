"""The governor as the validators use it: a slot and a lease of the budget per invocation.

core/governor.py has the design and the numbers; this module runs it against DynamoDB
with boto3. A call costs its tokens (prompt + max_tokens), or one request's worth of tokens
when that is more, so a lease holds requests as well as tokens. One `Lease` per validator
invocation:

    lease = governor.lease(validation_id, cap)
    try:
        for part in parts:
            lease.reserve(estimate, deadline)   # a slot below the live cap, and the tokens
            ... call the model ...
            lease.settle(estimate, charged)     # what the limiter really charged
    finally:
        lease.close()                          # slot freed, unused tokens back

`reserve` writes once per call (the lease item: renewal plus what is committed) and
touches the budget only when the lease runs out of tokens: then one conditional UpdateItem on
one shard of the budget (core/governor.py, "Shards" and "One update per grant"), the lease's
renewal after it, and the usage slice after that; after a wait for its place longer than a
quarter of LEASE_SECONDS, one more renewal, so the lease outlives the call that follows. No
transactions: `close` and a reclaim delete the lease first (conditionally) and give its tokens
back after.

One Governor per model's budget (core/governor.Scope): a validator leases from the budget of
its validation's model. A lease names its budget, so a sweep that reclaims another model's dead
lease gives the tokens back to that budget (`limits_of` prices them).

Fair share (core/fairness.py, SSM `fair-share` on): a lease made for a `Tenant` also
charges the user's account for the window on the grant's shard, before the grant (conditional
on the user being under its share when it queues ahead; taken back if the grant is then
refused), renews the user's demand record when due, and waits instead when it may neither
queue nor take slack. The demand records are read once per `DEMAND_REFRESH` of a window per
process, shared by every lease of the process.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from core import fairness as fair
from core import governor as g
from core.dynamo import decimal, from_item, typed
from lambdas.common.errors import CapacityUnavailable, is_condition_failure
from lambdas.common.observability import count

log = logging.getLogger(__name__)


def _failed(reason: dict[str, Any]) -> bool:
    return reason.get("Code") not in (None, "None")


_ATTEMPTS = 25
# A wait for a place in the schedule longer than this share of LEASE_SECONDS renews the lease
# again before the call (one more write, only after such a wait).
RENEW_AFTER_WAIT = 0.25


class LeaseLost(Exception):
    """Our lease expired and was reclaimed (a call outlived LEASE_SECONDS)."""


@dataclass
class Governor:
    client: Any  # boto3 DynamoDB client
    table: str
    limits: Callable[[], g.Limits]  # live, cached (lambdas/common/live_config.py): this budget's
    window_seconds: float
    lease_seconds: float
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    scope: g.Scope = g.HOME  # whose budget: one model's
    # Another model's limits, to give a reclaimed lease's tokens back to its budget (None: ours).
    limits_of: Callable[[g.Scope], g.Limits] | None = None
    shards: int = g.SHARDS  # GOVERNOR_SHARDS: the most shards the budget is split over (core/governor.py)
    # Each shard's state as last known (shard → state), refreshed by grants' answers and refusals.
    states: dict[int, g.BudgetState] = field(default_factory=dict)
    _swept_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    granting: threading.Lock = field(default_factory=threading.Lock)  # one grant attempt at a time (Lease._take)
    # Fair share: the demand records as last read (and when), this process's own renewals,
    # and what each user's accounts are known to hold at least (window → tokens).
    _demands: tuple[float, tuple[fair.Demand, ...]] = (float("-inf"), ())
    _beats: dict[tuple[str, str], float] = field(default_factory=dict)
    _accounts: dict[str, dict[int, float]] = field(default_factory=dict)

    @property
    def state(self) -> g.BudgetState:
        """Shard 0's state: the whole budget's factor and lowered limits (feedback reaches every shard)."""
        return self.states.get(0, g.BudgetState())

    def shard_count(self) -> int:
        """The shards the budget is split over now (core/governor.Budget.shard_count)."""
        return self.budget().shard_count(self.shards)

    def budget(self, shard: int | None = None) -> g.Budget:
        """The whole budget (shard None: what the controller plans with), or one shard's."""
        whole = g.Budget(self.limits(), self.state, self.window_seconds)
        if shard is None:
            return whole
        return whole.shard(whole.shard_count(self.shards), self.states.get(shard, g.BudgetState()))

    def read_budget(self, shard: int | None = None) -> g.Budget:
        """One consistent read of a shard (None: shard 0, as the whole budget)."""
        key = typed(self.scope.shard_key(shard or 0))
        item = self.client.get_item(TableName=self.table, Key=key, ConsistentRead=True).get("Item")
        self.learn(item, shard or 0)
        return self.budget(shard)

    def learn(self, item: dict[str, Any] | None, shard: int = 0) -> None:
        """A shard's stored state (typed, as DynamoDB returned it)."""
        if item:
            state = g.BudgetState.of(from_item(item))
            with self._lock:
                self.states[shard] = dataclasses.replace(state, tat_exact=item["tat"]["N"] if "tat" in item else None)

    def granted(self, shard: int, tat: str) -> None:
        """A grant's answer: the shard's `tat` as stored now."""
        with self._lock:
            known = self.states.get(shard, g.BudgetState())
            self.states[shard] = dataclasses.replace(known, tat=float(tat), tat_exact=tat)

    def lease(self, validation_id: str, cap: Callable[[], int], tenant: fair.Tenant | None = None) -> Lease:
        """A lease for one invocation; with a `tenant`, its grants follow fair share (when on)."""
        return Lease(self, validation_id, f"{uuid.uuid4().hex[:12]}", cap, tenant)

    # --- fair share (core/fairness.py) ----------------------------------------------------------
    def demands(self, now: float) -> tuple[fair.Demand, ...]:
        """Every user's demand, read at most once per DEMAND_REFRESH of a window by this process;
        this process's own renewals count at once."""
        read_at, seen = self._demands
        if now - read_at >= fair.DEMAND_REFRESH * self.window_seconds:
            items: list[dict[str, Any]] = []
            request = fair.demand_query(self.table, self.scope)
            while True:
                answer = self.client.query(**request)
                items.extend(answer["Items"])
                if "LastEvaluatedKey" not in answer:
                    break
                request = {**request, "ExclusiveStartKey": answer["LastEvaluatedKey"]}
            seen = tuple(fair.Demand.of(from_item(item)) for item in items)
            self._demands = (now, seen)
        with self._lock:
            beats = dict(self._beats)
        if not beats:
            return seen
        by_user = {d.user_id: d for d in seen}
        for (user, priority), until in beats.items():
            known = by_user.get(user) or fair.Demand(user, 1.0, {})
            if until > known.until.get(priority, 0.0):
                by_user[user] = dataclasses.replace(known, until={**known.until, priority: until})
        return tuple(by_user.values())

    def beat_due(self, tenant: fair.Tenant, now: float) -> bool:
        """This process last renewed the tenant's demand more than BEAT of a window ago."""
        key = (tenant.user_id, fair.PRIORITIES[tenant.rank])
        with self._lock:
            last = self._beats.get(key)
        renewed_at = last - fair.DEMAND_LIFE * self.window_seconds if last is not None else float("-inf")
        return now - renewed_at >= fair.BEAT * self.window_seconds

    def beaten(self, tenant: fair.Tenant, now: float) -> None:
        with self._lock:
            self._beats[(tenant.user_id, fair.PRIORITIES[tenant.rank])] = now + fair.DEMAND_LIFE * self.window_seconds

    def beat(self, tenant: fair.Tenant, now: float) -> None:
        """Renew the tenant's demand on its own (a lease that waits has no grant to carry it)."""
        if self.beat_due(tenant, now):
            self.client.update_item(**fair.heartbeat(self.table, tenant, now, self.window_seconds, self.scope))
            self.beaten(tenant, now)

    def accounts(self, user_id: str, now: float, shard: int = 0) -> dict[int, float]:
        """What the user's accounts (on a shard) are known to hold, per window (recent windows only)."""
        current = fair.window_of(now, self.window_seconds)
        with self._lock:
            known = self._accounts.setdefault(f"{user_id}{g.SHARD_MARK}{shard}", {})
            for window in [w for w in known if w < current - 1]:
                del known[window]
            return dict(known)

    def counted(
        self, user_id: str, window: int, *, tokens: float = 0.0, at_least: float | None = None, shard: int = 0
    ) -> None:
        """Learn an account: `tokens` added by us, or the stored value a refusal returned."""
        with self._lock:
            known = self._accounts.setdefault(f"{user_id}{g.SHARD_MARK}{shard}", {})
            value = known.get(window, 0.0) + tokens
            known[window] = max(value, at_least) if at_least is not None else value

    # --- feedback from upstream ---------------------------------------------------------------
    def rate_limited(self, retry_after: float | None) -> None:
        """A 429 of either limit: lower the factor and pause everyone for its wait (`retry-after`,
        else the reset of the limit that ran out: lambdas/common/model.call_model; 1 s if absent)."""
        now, budget = self.clock(), self.read_budget()
        until = now + min(retry_after or 1.0, self.window_seconds / 4)
        for shard in range(budget.shard_count(self.shards)):
            self._update_quietly(g.penalize(self.table, budget, now, retry_after or 1.0, self.scope, shard=shard))
            self._update_quietly(g.pause(self.table, budget, until, self.scope, shard=shard))

    def observed(self, headers: dict[str, str], estimate: int) -> None:
        """An answer's `x-ratelimit-*` headers (tokens and requests): only ever slow the budget down."""
        budget = self.budget()
        feedback = g.read_headers(headers, budget, estimate, self.clock())
        shards = range(budget.shard_count(self.shards))
        if feedback.upstream_tpm:
            log.warning("upstream TPM limit %s is below the configured target", feedback.upstream_tpm)
            for shard in shards:
                request = g.lower_upstream(self.table, "upstream_tpm", feedback.upstream_tpm, self.scope, shard=shard)
                self._update_quietly(request)
        if feedback.upstream_rpm:
            log.warning("upstream RPM limit %s is below the configured target", feedback.upstream_rpm)
            for shard in shards:
                request = g.lower_upstream(self.table, "upstream_rpm", feedback.upstream_rpm, self.scope, shard=shard)
                self._update_quietly(request)
        if feedback.pause_until:
            for shard in shards:
                self._update_quietly(g.pause(self.table, budget, feedback.pause_until, self.scope, shard=shard))
        if feedback.upstream_tpm or feedback.upstream_rpm:
            # Known now: the next answers' same headers write nothing (a refused write costs a unit too).
            with self._lock:
                for shard in {0, *shards}:
                    known = self.states.get(shard, g.BudgetState())
                    self.states[shard] = dataclasses.replace(
                        known,
                        upstream_tpm=feedback.upstream_tpm or known.upstream_tpm,
                        upstream_rpm=feedback.upstream_rpm or known.upstream_rpm,
                    )

    def _update_quietly(self, request: dict[str, Any]) -> None:
        try:
            self.client.update_item(**request)
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise

    # --- dead leases --------------------------------------------------------------------------
    def priced(self, scope: g.Scope) -> g.Budget:
        """A shard of `scope`'s budget, to price tokens given back to it (at its fastest rate,
        `Budget.full_rate`): ours, or another model's (a reclaimed lease)."""
        if scope == self.scope:
            return self.budget(0)
        limits = self.limits_of(scope) if self.limits_of is not None else self.limits()
        whole = g.Budget(limits, g.BudgetState(), self.window_seconds)
        return whole.shard(whole.shard_count(self.shards))

    def give_back(self, scope: g.Scope, back: int, taken: dict[int, int] | Any, last: int, now: float) -> None:
        """Unused tokens back to the shards that granted them (core/governor.refunds)."""
        budget = self.priced(scope)
        for shard, tokens in g.refunds(back, taken, last).items():
            self._update_quietly(g.refund(self.table, budget, tokens, now, scope, shard=shard))

    def reclaim(self, lease: g.LeaseRecord) -> bool:
        """Free an expired lease's slot, give back its unused tokens to its budget, count its used ones.

        The conditional delete comes first and alone: only its one winner gives the tokens back,
        so no transaction is needed; a reclaimer that dies after it loses them (the budget runs
        short by them, never over)."""
        back, used = g.leftover(lease)
        now, scope = self.clock(), lease.scope
        try:
            self.client.delete_item(**g.reclaim(self.table, lease))
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise
            return False  # someone renewed or reclaimed it first
        if back:
            self.give_back(scope, back, lease.taken, -1, now)
        if used:
            self.client.update_item(**g.add_usage(self.table, used, now, self.window_seconds, scope))
        log.info("reclaimed lease %s/%s: %s tokens back, %s counted", lease.pk, lease.sk, back, used)
        return True

    def sweep(self, *, force: bool = False) -> int:
        """Reclaim expired leases anywhere (the open_leases index), at most every tenth of a lease."""
        now = self.clock()
        with self._lock:
            if not force and now - self._swept_at < self.lease_seconds / 10:
                return 0
            self._swept_at = now
        reclaimed = 0
        for shard in range(g.OPEN_SHARDS):
            answer = self.client.query(
                TableName=self.table,
                IndexName="open_leases",
                KeyConditionExpression="open_shard = :s AND open_until < :now",
                ExpressionAttributeValues=typed({":s": f"s{shard}", ":now": decimal(now)}),
                Limit=25,
            )
            for entry in answer["Items"]:  # the index is eventually consistent: read the lease itself
                key = {"pk": entry["pk"], "sk": entry["sk"]}
                item = self.client.get_item(TableName=self.table, Key=key, ConsistentRead=True).get("Item")
                lease = g.LeaseRecord.of(from_item(item)) if item else None
                if lease is not None and lease.expires_at < now:
                    reclaimed += self.reclaim(lease)
        return reclaimed

    def _batch_get(self, keys: list[dict[str, str]], consistent: bool) -> list[dict[str, Any]]:
        request = {self.table: {"Keys": [typed(k) for k in keys], "ConsistentRead": consistent}}
        items: list[dict[str, Any]] = []
        while request:
            answer = self.client.batch_get_item(RequestItems=request)
            items.extend(answer["Responses"].get(self.table, []))
            request = answer.get("UnprocessedKeys") or {}
        return items

    def tokens_last_window(self) -> int:
        return g.usage_tokens(self._batch_get(g.usage_keys(self.clock(), self.window_seconds, self.scope), True))

    def call_stats(self) -> dict[str, float]:
        return g.freshest([from_item(item) for item in self._batch_get(g.stats_keys(self.scope), False)])

    def slots(self, validation_id: str) -> dict[int, g.LeaseRecord]:
        """The validation's leases by slot (an item that holds no lease leaves its slot free)."""
        answer = self.client.query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues=typed({":pk": g.lease_key(validation_id, 0)["pk"]}),
            ConsistentRead=True,
        )
        leases = (g.LeaseRecord.of(from_item(item)) for item in answer["Items"])
        return {lease.slot: lease for lease in leases if lease is not None}


def waited(seconds: float) -> None:
    """A validator waits for a call slot or for its place in the budget's schedule (metrics)."""
    count("LeaseWaits")
    count("LeaseWaitSeconds", seconds)


def governor_for(config: Any, client: Any, model: str | None = None) -> Governor:
    """One Governor per configuration, model and process: warm invocations share its budget view.
    `model` None: the configured model's (OPENAI_MODEL)."""
    name = model or config.openai_model
    scope = g.Scope.of(name, config.openai_model)
    key = (config, id(client), scope)
    with _governors_lock:
        found = _governors.get(key)
        if found is None:
            from lambdas.common import live_config

            found = _governors[key] = Governor(
                client,
                config.governor_table,
                lambda: live_config.budget_limits(config, name),
                config.governor_window_seconds,
                config.lease_seconds,
                scope=scope,
                limits_of=lambda other: live_config.budget_limits(config, other.name(config.openai_model)),
                # GOVERNOR_SHARDS (app/settings.py, Terraform variable governor_shards).
                shards=config.governor_shards,
            )
        return found


_governors: dict[Any, Governor] = {}
_governors_lock = threading.Lock()


BORROW_AHEAD = fair.HORIZON  # of a window: a shard whose next place is further ahead is empty for now


@dataclass
class Lease:
    governor: Governor
    validation_id: str
    holder: str
    cap: Callable[[], int]
    tenant: fair.Tenant | None = None  # fair share: whose share the grants count against
    slot: int | None = None
    leased: int = 0  # tokens taken from the budget (as written + unwritten)
    committed: int = 0
    reported: int = 0
    written: tuple[int, int, int] = (0, 0, 0)  # leased, committed, reported as stored
    calls: int = 0  # calls made under this lease, their time and tokens (for the controller's plan)
    call_seconds: float = 0.0
    charged: int = 0
    priced: g.Budget | None = None  # the budget as of the last reservation: what its call costs (Budget.cost)
    account_window: int | None = None  # the window of the last grant counted on the tenant's account...
    account_slack: bool = False  # ...whether it was slack...
    account_shard: int = 0  # ...and on which shard's account
    shard: int = 0  # the shard of the last grant: unused tokens go back there first
    taken: dict[int, int] = field(default_factory=dict)  # shard → tokens it granted to this lease

    @property
    def available(self) -> int:
        return self.leased - self.committed

    @property
    def home(self) -> int:
        """The lease's own shard, by hash (of its holder id: each worker of an invocation has one)."""
        return int(self.holder, 16) % max(1, self.governor.shard_count())

    def reserve(self, estimate: int, deadline: float) -> None:
        """Hold a slot below the live cap and commit the next call's cost: its `estimate` of
        tokens (prompt + max_tokens), priced by the budget (core/governor.Budget.cost).

        Waits (slot busy, budget empty) until `deadline`, then raises CapacityUnavailable,
        which Step Functions retries with backoff; the lease is closed first.
        """
        gov = self.governor
        while True:
            cap = self.cap()
            if self.slot is not None and self.slot >= cap:
                self.close()  # max-parallelism went down: give this slot up
            if self.slot is None:
                self._acquire_slot(cap, deadline)
            self.priced = gov.budget()
            cost = self._cost(estimate)
            try:
                if self.available >= cost:
                    self._write(cost, take=0)
                    return
                # A lease is sized by one shard's burst: the shard it will most likely come from.
                take = gov.budget(self.home).lease_size(cost, cost - self.available)
                starts_at = self._take(take, cost, deadline)
            except LeaseLost:
                self._forget()
                continue
            wait = starts_at - gov.clock()
            if wait > 0:
                waited(wait)
                gov.sleep(wait)  # our place in the budget's schedule
                if wait > gov.lease_seconds * RENEW_AFTER_WAIT:
                    # Renewed before the wait, the lease would have to outlive the wait and the
                    # call together: renewed again, it outlives the call (a reclaimer would free
                    # the slot of a holder mid-call). Lost meanwhile: this call's tokens were
                    # counted spent by the reclaimer; a slot and tokens are reserved anew.
                    try:
                        self._write(0, take=0)
                    except LeaseLost:
                        self._forget()
                        continue
            return

    def _take(self, take: int, cost: int, deadline: float) -> float:
        """Reserve `take` tokens on a shard of the budget and commit `cost`; when the call may start.

        The lease's own shard first; when it has no place within BORROW_AHEAD (or fair share
        says wait there), the next shard that has one (borrowing), else the earliest place.
        A refused grant returns the stored shard, so the next attempt needs no read. Raises
        CapacityUnavailable (lease closed) when the next free place is beyond `deadline`.
        Under fair share the grant also charges the tenant's account on that shard
        (core/fairness.py), or the lease waits for its turn.
        """
        gov = self.governor
        lost, looked = 0, False
        while True:
            pause, beat, starts_at = 0.0, None, None
            # One attempt at a time per process: the calls an invocation runs at once (core/headroom.py)
            # take turns instead of racing each other for the same places.
            with gov.granting:
                now = gov.clock()
                shards = gov.shard_count()
                if looked:  # after a wait, one read (not a write bound to fail) says where its shard is now
                    gov.read_budget(self.home)
                offer = self._choose(take, now, shards, deadline)
                terms = offer.terms
                if offer.grant is None:
                    assert terms is not None
                    at = terms.decision.retry_at + random.uniform(0, terms.decision.spread)
                    if at > deadline:
                        self.close()
                        raise CapacityUnavailable(
                            f"fair share: user {terms.tenant.user_id} may reserve again in {at - now:.1f}s, "
                            "past this invocation's wait"
                        )
                    pause, beat, looked = max(0.0, at - now), terms.tenant, True
                elif offer.grant.starts_at > deadline:
                    self.close()
                    raise CapacityUnavailable(
                        f"token budget: {take} tokens are free in {offer.grant.starts_at - now:.1f}s, "
                        "past this invocation's wait"
                    )
                else:
                    looked = False
                    starts_at = self._grant(offer, take, cost, now)
                    if starts_at is None:
                        lost += 1
                        if lost >= _ATTEMPTS:
                            self.close()
                            raise CapacityUnavailable(f"token budget: {_ATTEMPTS} reservations in a row were refused")
                        pause = random.uniform(0, 0.002 * lost)  # other processes reserve at this moment too
            if starts_at is not None:
                if terms is not None:
                    gov.beat(terms.tenant, now)  # renews the tenant's demand when due
                gov.sweep()
                return starts_at
            if beat is not None:
                gov.beat(beat, now)
            gov.sleep(pause)

    def _choose(self, take: int, now: float, shards: int, deadline: float) -> _Offer:
        """Where to reserve: the own shard when it has a place within BORROW_AHEAD, else the next
        one that has (borrowing), else the earliest place; when fair share says wait on every
        shard, the wait that ends first."""
        gov, own = self.governor, self.home
        offers = []
        for i in range(shards):
            shard = (own + i) % shards
            budget = gov.budget(shard)
            terms = self._fair_terms(budget, take, now, shard)
            if terms is not None and terms.decision.kind == "wait":
                offers.append(_Offer(shard, budget, None, terms))
                continue
            latest = self._latest(budget, take, now, terms, deadline)
            grant = g.grant(gov.table, budget, take, now, gov.scope, shard=shard, latest=latest)
            offer = _Offer(shard, budget, grant, terms)
            if grant.starts_at <= now + BORROW_AHEAD * gov.window_seconds:
                return offer
            offers.append(offer)
        placed = [o for o in offers if o.grant is not None]
        if placed:
            return min(placed, key=lambda o: o.grant.starts_at if o.grant else 0.0)
        return min(offers, key=lambda o: o.terms.decision.retry_at if o.terms else 0.0)

    def _latest(self, budget: g.Budget, take: int, now: float, terms: _FairTerms | None, deadline: float) -> float:
        """The latest start the grant accepts (its update's condition), checked against the stored
        schedule itself: the caller's deadline, and fair share's rule when it applies. A busy shard's
        grant adds to the stored `tat`, which may be further ahead than the cached one: without this
        condition the call could be granted a start past the invocation's wait."""
        if terms is None:
            return deadline
        horizon = fair.HORIZON * budget.window_seconds
        if terms.decision.kind == "queue":
            return min(deadline, now + horizon)
        # Slack: only while the schedule is (nearly) idle, `tat ≤ now + SLACK × horizon`.
        rate = budget.rate(now)
        return min(deadline, now + fair.SLACK * horizon + take / rate - budget.capacity(take) / rate)

    def _grant(self, offer: _Offer, take: int, cost: int, now: float) -> float | None:
        """The grant's writes, each one conditional UpdateItem: the account (fair share), the
        shard, the lease. When the call may start; None when a condition refused it (what the
        refusal returned is learned, and whatever was written before it is undone)."""
        gov, terms, grant = self.governor, offer.terms, offer.grant
        assert grant is not None
        if terms is not None:
            try:
                gov.client.update_item(**terms.charge)
            except ClientError as exc:
                if not is_condition_failure(exc):
                    raise
                stored = from_item(exc.response.get("Item") or {}).get("tokens", terms.share)
                gov.counted(terms.tenant.user_id, terms.decision.window, at_least=float(stored), shard=offer.shard)
                return None  # over its share meanwhile
        try:
            answer = gov.client.update_item(**grant.request)
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise
            gov.learn(exc.response.get("Item"), offer.shard)
            self._uncharge(offer, take)
            return None
        tat = answer["Attributes"]["tat"]["N"]
        gov.granted(offer.shard, tat)
        try:
            self._write(cost, take=take, shard=offer.shard)
        except LeaseLost:
            gov.give_back(gov.scope, take, {offer.shard: take}, offer.shard, gov.clock())
            self._uncharge(offer, take)
            raise
        if terms is not None:
            self.account_window, self.account_slack = terms.decision.window, terms.decision.apart
            self.account_shard = offer.shard
            if not self.account_slack:
                gov.counted(terms.tenant.user_id, terms.decision.window, tokens=take, shard=offer.shard)
        return g.started(offer.budget, take, now, float(tat))

    def _uncharge(self, offer: _Offer, take: int) -> None:
        """Take back an account charge whose grant did not happen."""
        gov, terms = self.governor, offer.terms
        if terms is None:
            return
        apart = terms.decision.apart
        request = fair.charge(
            gov.table,
            terms.tenant.user_id,
            terms.decision.window,
            -take,
            gov.window_seconds,
            slack=apart,
            scope=gov.scope,
            shard=offer.shard,
        )
        gov.client.update_item(**request)

    def _fair_terms(self, budget: g.Budget, take: int, now: float, shard: int) -> _FairTerms | None:
        """What fair share asks of a grant on `shard` (a copy of the whole at its part of the
        rate, so of every share): its decision and its account update; None when off."""
        gov, tenant = self.governor, self.tenant
        if tenant is None or not budget.limits.fair_share:
            return None
        demands = gov.demands(now)
        share = fair.share(tenant, demands, budget.tokens_per_window(now), now)
        decision = fair.decide(
            budget,
            take,
            now,
            budget.state.tat,
            share=share,
            accounts=gov.accounts(tenant.user_id, now, shard),
            outranked=fair.outranked(tenant, demands, now),
        )
        charge = fair.charge(
            gov.table,
            tenant.user_id,
            decision.window,
            take,
            gov.window_seconds,
            room=decision.room,
            slack=decision.apart,  # an outranked validation's slack is counted apart from the share
            scope=gov.scope,
            shard=shard,
        )
        return _FairTerms(tenant, share, decision, charge)

    def _write(self, cost: int, *, take: int, shard: int = 0) -> None:
        """Renew the lease (one conditional UpdateItem) with what it took and commits; count the
        usage reported with a grant (a write of its own, on the grant's counter shard)."""
        gov, slot = self.governor, self.slot
        assert slot is not None
        now = gov.clock()
        leased, committed = self.leased + take, self.committed + cost
        report = committed - self.reported if take else 0  # usage is counted with grants
        renew = g.renew(
            gov.table,
            self.validation_id,
            slot,
            self.holder,
            now,
            gov.lease_seconds,
            leased=leased - self.written[0],
            committed=committed - self.written[1],
            reported=report,
            shard=shard,
        )
        try:
            gov.client.update_item(**renew)
        except ClientError as exc:
            if is_condition_failure(exc):
                raise LeaseLost() from exc
            raise
        if take:
            self.taken[shard] = self.taken.get(shard, 0) + take
            self.shard = shard
        self.leased, self.committed, self.reported = leased, committed, self.reported + report
        self.written = (self.leased, self.committed, self.reported)
        if report:
            gov.client.update_item(**g.add_usage(gov.table, report, now, gov.window_seconds, gov.scope, shard=shard))

    def holds_slot_below_cap(self) -> bool:
        """Right before a call: the slot is still below the live cap (it may have gone down
        while this holder waited for its place in the budget's schedule)."""
        return self.slot is not None and self.slot < self.cap()

    def _cost(self, tokens: int) -> int:
        """A call's cost as priced at its reservation (reserve and settle or release pair up)."""
        return self.priced.cost(tokens) if self.priced is not None else int(tokens)

    def release(self, estimate: int) -> None:
        """A reservation not spent (no call was made): its tokens stay leased for the next one."""
        self.committed -= self._cost(estimate)

    def settle(self, estimate: int, charged: int, seconds: float) -> None:
        """After a call: what the limiter really charged replaces the estimate (written later)."""
        self.committed += self._cost(charged) - self._cost(estimate)
        self.calls += 1
        self.call_seconds += seconds
        self.charged += self._cost(charged)

    def _acquire_slot(self, cap: int, deadline: float) -> None:
        gov = self.governor
        while True:
            now = gov.clock()
            held = gov.slots(self.validation_id)
            for index, lease in sorted(held.items()):
                if index < cap and lease.expires_at < now and gov.reclaim(lease):
                    del held[index]
            free = [i for i in range(cap) if i not in held]
            random.shuffle(free)
            for index in free:
                try:
                    gov.client.update_item(
                        **g.claim(gov.table, self.validation_id, index, self.holder, now, gov.lease_seconds, gov.scope)
                    )
                except ClientError as exc:
                    if is_condition_failure(exc):
                        continue
                    raise
                self._forget()
                self.slot = index
                return
            expiries = [lease.expires_at for i, lease in held.items() if i < cap]
            wait = min([0.25 + random.uniform(0, 0.25), *[max(0.05, e - now) for e in expiries]])
            if now + wait > deadline:
                raise CapacityUnavailable(f"all {cap} call slots of this validation are busy")
            count("SlotWaits")
            waited(wait)
            gov.sleep(wait)

    def close(self) -> None:
        """Free the slot, give back unused tokens, count the used ones. Safe to call twice.

        The conditional delete of the lease comes first and alone: it is what entitles this
        holder (and not a reclaimer) to give its tokens back, so the writes after it need no
        transaction; a holder that dies between them loses what they would have given back
        (the budget runs short, never over)."""
        if self.slot is None:
            return
        gov = self.governor
        now = gov.clock()
        back, used = max(0, self.leased - self.committed), max(0, self.committed - self.reported)
        owed = max(0, self.committed - self.leased)
        try:
            gov.client.delete_item(**g.release(gov.table, self.validation_id, self.slot, self.holder))
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise
            log.warning("lease %s/%s was reclaimed before it was closed", self.validation_id, self.slot)
            self._forget()
            return
        scope, shard = gov.scope, self.shard
        if back:
            gov.give_back(scope, back, self.taken, shard, now)
        if owed:
            gov.client.update_item(**g.overdraw(gov.table, gov.budget(shard), owed, now, scope, shard=shard))
        if used:
            gov.client.update_item(**g.add_usage(gov.table, used, now, gov.window_seconds, scope, shard=shard))
        if self.calls:
            calls = g.record_calls(gov.table, self.calls, self.call_seconds, self.charged, now, scope, shard=shard)
            gov.client.update_item(**calls)
        if self.tenant is not None and self.account_window is not None and (back or owed):
            # The account counts what the user really spent: unused tokens leave it with the budget's.
            user, window, tokens = self.tenant.user_id, self.account_window, owed - back
            charge = fair.charge(
                gov.table,
                user,
                window,
                tokens,
                gov.window_seconds,
                slack=self.account_slack,
                scope=scope,
                shard=self.account_shard,
            )
            gov.client.update_item(**charge)
            if not self.account_slack:
                gov.counted(user, window, tokens=tokens, shard=self.account_shard)
        self._forget()

    def _forget(self) -> None:
        self.slot, self.leased, self.committed, self.reported, self.written = None, 0, 0, 0, (0, 0, 0)
        self.calls, self.call_seconds, self.charged = 0, 0.0, 0
        self.account_window, self.account_shard, self.shard, self.taken = None, 0, 0, {}


@dataclass(frozen=True)
class _FairTerms:
    tenant: fair.Tenant
    share: float
    decision: fair.Decision
    charge: dict[str, Any]  # the account's update, written before the grant's


@dataclass(frozen=True)
class _Offer:
    """A place on one shard: its grant (None: fair share says wait there) and fair share's terms."""

    shard: int
    budget: g.Budget
    grant: g.Grant | None
    terms: _FairTerms | None

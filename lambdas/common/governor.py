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
touches the budget item only when the lease runs out of tokens.

One Governor per model's budget (core/governor.Scope): a validator leases from the budget of
its validation's model. A lease names its budget, so a sweep that reclaims another model's dead
lease gives the tokens back to that budget (`limits_of` prices them).

Fair share (core/fairness.py, SSM `fair-share` on): a lease made for a `Tenant` also
charges the user's account for the window in the grant's transaction (conditional on the
user being under its share when it queues ahead), renews the user's demand record in that
transaction when due, and waits instead when it may neither queue nor take slack. The
demand records are read once per `DEMAND_REFRESH` of a window per process, shared by every
lease of the process.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from core import fairness as fair
from core import governor as g
from core.dynamo import decimal, from_item, typed
from core.steps import cancellation_reasons
from lambdas.common.errors import CapacityUnavailable, is_condition_failure
from lambdas.common.observability import count

log = logging.getLogger(__name__)


def _failed(reason: dict[str, Any]) -> bool:
    return reason.get("Code") not in (None, "None")


_ATTEMPTS = 25


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
    state: g.BudgetState = field(default_factory=g.BudgetState)  # last known; refreshed by failures
    _swept_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    granting: threading.Lock = field(default_factory=threading.Lock)  # one grant attempt at a time (Lease._take)
    # Fair share: the demand records as last read (and when), this process's own renewals,
    # and what each user's accounts are known to hold at least (window → tokens).
    _demands: tuple[float, tuple[fair.Demand, ...]] = (float("-inf"), ())
    _beats: dict[tuple[str, str], float] = field(default_factory=dict)
    _accounts: dict[str, dict[int, float]] = field(default_factory=dict)

    def budget(self) -> g.Budget:
        return g.Budget(self.limits(), self.state, self.window_seconds)

    def read_budget(self) -> g.Budget:
        key = typed(self.scope.budget_key)
        item = self.client.get_item(TableName=self.table, Key=key, ConsistentRead=True).get("Item")
        self.learn(item)
        return self.budget()

    def learn(self, item: dict[str, Any] | None) -> None:
        """The stored budget (typed, as DynamoDB returned it); `tat` kept exact for compare-and-set."""
        if item:
            state = g.BudgetState.of(from_item(item))
            self.state = dataclasses.replace(state, tat_exact=item["tat"]["N"] if "tat" in item else None)

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

    def accounts(self, user_id: str, now: float) -> dict[int, float]:
        """What the user's accounts are known to hold, per window (recent windows only)."""
        current = fair.window_of(now, self.window_seconds)
        with self._lock:
            known = self._accounts.setdefault(user_id, {})
            for window in [w for w in known if w < current - 1]:
                del known[window]
            return dict(known)

    def counted(self, user_id: str, window: int, *, tokens: float = 0.0, at_least: float | None = None) -> None:
        """Learn an account: `tokens` added by us, or the stored value a refusal returned."""
        with self._lock:
            known = self._accounts.setdefault(user_id, {})
            value = known.get(window, 0.0) + tokens
            known[window] = max(value, at_least) if at_least is not None else value

    # --- feedback from upstream ---------------------------------------------------------------
    def rate_limited(self, retry_after: float | None) -> None:
        """A 429 of either limit: lower the factor and pause everyone for its wait (`retry-after`,
        else the reset of the limit that ran out: lambdas/common/model.call_model; 1 s if absent)."""
        now, budget = self.clock(), self.read_budget()
        self._update_quietly(g.penalize(self.table, budget, now, retry_after or 1.0, self.scope))
        until = now + min(retry_after or 1.0, self.window_seconds / 4)
        self._update_quietly(g.pause(self.table, budget, until, self.scope))

    def observed(self, headers: dict[str, str], estimate: int) -> None:
        """An answer's `x-ratelimit-*` headers (tokens and requests): only ever slow the budget down."""
        feedback = g.read_headers(headers, self.budget(), estimate, self.clock())
        if feedback.upstream_tpm:
            log.warning("upstream TPM limit %s is below the configured target", feedback.upstream_tpm)
            self._update_quietly(g.lower_upstream(self.table, "upstream_tpm", feedback.upstream_tpm, self.scope))
        if feedback.upstream_rpm:
            log.warning("upstream RPM limit %s is below the configured target", feedback.upstream_rpm)
            self._update_quietly(g.lower_upstream(self.table, "upstream_rpm", feedback.upstream_rpm, self.scope))
        if feedback.pause_until:
            self._update_quietly(g.pause(self.table, self.budget(), feedback.pause_until, self.scope))

    def _update_quietly(self, request: dict[str, Any]) -> None:
        try:
            self.client.update_item(**request)
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise

    # --- dead leases --------------------------------------------------------------------------
    def priced(self, scope: g.Scope) -> g.Budget:
        """A budget to price tokens given back to `scope`'s schedule: ours, or another model's
        (a reclaimed lease), at its limits and without a factor (so never more time than was taken)."""
        if scope == self.scope:
            return self.budget()
        limits = self.limits_of(scope) if self.limits_of is not None else self.limits()
        return g.Budget(limits, g.BudgetState(), self.window_seconds)

    def reclaim(self, lease: g.LeaseRecord) -> bool:
        """Free an expired lease's slot, give back its unused tokens to its budget, count its used ones."""
        back, used = g.leftover(lease)
        now, scope = self.clock(), lease.scope
        items: list[dict[str, Any]] = [{"Delete": g.reclaim(self.table, lease)}]
        if back:
            items.append({"Update": g.refund(self.table, self.priced(scope), back, now, scope)})
        if used:
            items.append({"Update": g.add_usage(self.table, used, now, self.window_seconds, scope)})
        try:
            self.client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise
            return False  # someone renewed or reclaimed it first
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

    def tokens_last_window(self) -> int:
        keys = g.usage_keys(self.clock(), self.window_seconds, self.scope)
        answer = self.client.batch_get_item(
            RequestItems={self.table: {"Keys": [typed(k) for k in keys], "ConsistentRead": True}}
        )
        return g.usage_tokens(answer["Responses"].get(self.table, []))

    def call_stats(self) -> dict[str, float]:
        item = self.client.get_item(TableName=self.table, Key=typed(self.scope.stats_key)).get("Item")
        return from_item(item) if item else {}

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
            )
        return found


_governors: dict[Any, Governor] = {}
_governors_lock = threading.Lock()


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
    account_slack: bool = False  # ...and whether it was slack

    @property
    def available(self) -> int:
        return self.leased - self.committed

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
            budget = self.priced = gov.budget()
            cost = self._cost(estimate)
            try:
                if self.available >= cost:
                    self._write(cost, take=0, budget=None)
                    return
                take = budget.lease_size(cost, cost - self.available)
                starts_at = self._take(take, cost, deadline)
            except LeaseLost:
                self._forget()
                continue
            wait = starts_at - gov.clock()
            if wait > 0:
                waited(wait)
                gov.sleep(wait)  # our place in the budget's schedule
            return

    def _take(self, take: int, cost: int, deadline: float) -> float:
        """Reserve `take` tokens in the budget's schedule and commit `cost`; when the call may start.

        A refused compare-and-set returns the stored budget (ReturnValuesOnConditionCheckFailure),
        so the next attempt needs no read. Raises CapacityUnavailable (lease closed) when the
        next free place is beyond `deadline`. Under fair share the grant also charges the
        tenant's account (core/fairness.py), or the lease waits for its turn.
        """
        gov = self.governor
        lost, waited = 0, False
        while True:
            pause, beat, granted = 0.0, None, False
            # One attempt at a time per process: the calls an invocation runs at once (core/headroom.py)
            # take turns instead of racing each other for the budget's compare-and-set.
            with gov.granting:
                now = gov.clock()
                # After a wait, one read (not a transaction bound to fail) says where the schedule is now.
                budget = gov.read_budget() if waited else gov.budget()
                grant = g.grant(gov.table, budget, take, now, gov.scope)
                terms = self._fair_terms(budget, take, now) if self.tenant is not None else None
                if terms is not None and terms.decision.kind == "wait":
                    at = terms.decision.retry_at + random.uniform(0, terms.decision.spread)
                    if at > deadline:
                        self.close()
                        raise CapacityUnavailable(
                            f"fair share: user {terms.tenant.user_id} may reserve again in {at - now:.1f}s, "
                            "past this invocation's wait"
                        )
                    pause, beat, waited = max(0.0, at - now), terms.tenant, True
                else:
                    if grant.starts_at > deadline:
                        self.close()
                        raise CapacityUnavailable(
                            f"token budget: {take} tokens are free in {grant.starts_at - now:.1f}s, "
                            "past this invocation's wait"
                        )
                    waited = False
                    try:
                        self._write(cost, take=take, budget=grant.request, extra=terms.items if terms else ())
                    except ClientError as exc:
                        reasons = cancellation_reasons(exc.response, [grant.request])
                        if reasons is None:
                            raise
                        if len(reasons) > 1 and _failed(reasons[1]):
                            raise LeaseLost() from exc
                        gov.learn(reasons[0].get("Item"))
                        if terms is not None and len(reasons) > 2 and _failed(reasons[2]):  # over its share meanwhile
                            stored = from_item(reasons[2].get("Item") or {}).get("tokens", terms.share)
                            gov.counted(terms.tenant.user_id, terms.decision.window, at_least=float(stored))
                        lost += 1
                        if lost >= _ATTEMPTS:
                            self.close()
                            raise CapacityUnavailable(
                                f"token budget: {_ATTEMPTS} reservations in a row lost the race"
                            ) from exc
                        pause = random.uniform(0, 0.002 * lost)  # other processes reserve at this moment too
                    else:
                        gov.state = dataclasses.replace(gov.state, tat=grant.tat, tat_exact=grant.stored)
                        if terms is not None:
                            self.account_window, self.account_slack = terms.decision.window, terms.decision.apart
                            if not self.account_slack:
                                gov.counted(terms.tenant.user_id, terms.decision.window, tokens=take)
                            if terms.beat:
                                gov.beaten(terms.tenant, now)
                        granted = True
            if granted:
                gov.sweep()
                return grant.starts_at
            if beat is not None:
                gov.beat(beat, now)
            gov.sleep(pause)

    def _fair_terms(self, budget: g.Budget, take: int, now: float) -> _FairTerms | None:
        """What fair share asks of this grant: its decision and the items it adds to the
        grant's transaction (the account, and the demand renewal when due); None when off."""
        gov, tenant = self.governor, self.tenant
        if tenant is None or not budget.limits.fair_share:
            return None
        demands = gov.demands(now)
        share = fair.share(tenant, demands, budget.tokens_per_window(now), now)
        decision = fair.decide(
            budget,
            take,
            now,
            gov.state.tat,
            share=share,
            accounts=gov.accounts(tenant.user_id, now),
            outranked=fair.outranked(tenant, demands, now),
        )
        slack = decision.apart  # an outranked validation's slack is counted apart from the share
        charge = fair.charge(
            gov.table,
            tenant.user_id,
            decision.window,
            take,
            gov.window_seconds,
            room=decision.room,
            slack=slack,
            scope=gov.scope,
        )
        items = [{"Update": charge}]
        beat = gov.beat_due(tenant, now)
        if beat:
            items.append({"Update": fair.heartbeat(gov.table, tenant, now, gov.window_seconds, gov.scope)})
        return _FairTerms(tenant, share, decision, items, beat)

    def _write(
        self, cost: int, *, take: int, budget: dict[str, Any] | None, extra: Sequence[dict[str, Any]] = ()
    ) -> None:
        gov, slot = self.governor, self.slot
        assert slot is not None
        now = gov.clock()
        leased, committed = self.leased + take, self.committed + cost
        report = committed - self.reported if budget is not None else 0  # usage is counted with budget writes
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
        )
        if budget is None:
            try:
                gov.client.update_item(**renew)
            except ClientError as exc:
                if is_condition_failure(exc):
                    raise LeaseLost() from exc
                raise
        else:
            items = [{"Update": budget}, {"Update": renew}, *extra]  # the account third (see _take)
            if report:
                items.append({"Update": g.add_usage(gov.table, report, now, gov.window_seconds, gov.scope)})
            gov.client.transact_write_items(TransactItems=items)
        self.leased, self.committed, self.reported = leased, committed, self.reported + report
        self.written = (self.leased, self.committed, self.reported)

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
                self.slot, self.leased, self.committed, self.reported, self.written = index, 0, 0, 0, (0, 0, 0)
                return
            expiries = [lease.expires_at for i, lease in held.items() if i < cap]
            wait = min([0.25 + random.uniform(0, 0.25), *[max(0.05, e - now) for e in expiries]])
            if now + wait > deadline:
                raise CapacityUnavailable(f"all {cap} call slots of this validation are busy")
            waited(wait)
            gov.sleep(wait)

    def close(self) -> None:
        """Free the slot, give back unused tokens, count the used ones. Safe to call twice."""
        if self.slot is None:
            return
        gov = self.governor
        now = gov.clock()
        back, used = max(0, self.leased - self.committed), max(0, self.committed - self.reported)
        owed = max(0, self.committed - self.leased)
        items: list[dict[str, Any]] = [{"Delete": g.release(gov.table, self.validation_id, self.slot, self.holder)}]
        scope = gov.scope
        if back:
            items.append({"Update": g.refund(gov.table, gov.budget(), back, now, scope)})
        if owed:
            items.append({"Update": g.overdraw(gov.table, gov.budget(), owed, now, scope)})
        if used:
            items.append({"Update": g.add_usage(gov.table, used, now, gov.window_seconds, scope)})
        if self.calls:
            calls = g.record_calls(gov.table, self.calls, self.call_seconds, self.charged, now, scope)
            items.append({"Update": calls})
        account = None
        if self.tenant is not None and self.account_window is not None and (back or owed):
            # The account counts what the user really spent: unused tokens leave it with the budget's.
            account = (self.tenant.user_id, self.account_window, owed - back)
            charge = fair.charge(gov.table, *account, gov.window_seconds, slack=self.account_slack, scope=scope)
            items.append({"Update": charge})
        try:
            gov.client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise
            log.warning("lease %s/%s was reclaimed before it was closed", self.validation_id, self.slot)
        else:
            if account is not None and not self.account_slack:
                gov.counted(account[0], account[1], tokens=account[2])
        self._forget()

    def _forget(self) -> None:
        self.slot, self.leased, self.committed, self.reported, self.written = None, 0, 0, 0, (0, 0, 0)
        self.calls, self.call_seconds, self.charged = 0, 0.0, 0
        self.account_window = None


@dataclass(frozen=True)
class _FairTerms:
    tenant: fair.Tenant
    share: float
    decision: fair.Decision
    items: list[dict[str, Any]]  # the account update first: its refusal is the transaction's third reason
    beat: bool  # the items renew the tenant's demand

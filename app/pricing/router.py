"""Money: the price table (admin), and what users spent per UTC day and month."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from app.auth.dependencies import CurrentAdmin, CurrentUser
from app.deps import ClientsDep, SettingsDep
from app.errors import Unprocessable, problem_responses
from app.models.catalog import ModelCatalog
from app.models.dependencies import Models
from app.pagination import decode_cursor, encode_cursor, is_key
from app.pricing.prices import PriceBook
from app.pricing.schemas import BudgetOut, PricesOut, PricesPatch, SpendOut, SpendPage, UsageOut
from app.pricing.spend import SpendStore
from app.users.dependencies import Users
from core import pricing, spend
from core.clock import iso_of
from core.spend import Budget, Period

router = APIRouter(tags=["cost"], responses=problem_responses(401, 422))
Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=2048)]
PeriodQuery = Annotated[Literal["day", "month"], Query(description="UTC calendar `day` or `month`")]


def _book(clients: ClientsDep, settings: SettingsDep) -> PriceBook:
    return PriceBook(clients, settings)


def _spend(clients: ClientsDep, settings: SettingsDep) -> SpendStore:
    return SpendStore(clients, settings)


Book = Annotated[PriceBook, Depends(_book)]
Spend = Annotated[SpendStore, Depends(_spend)]


async def _prices_view(book: PriceBook, models: ModelCatalog) -> PricesOut:
    table, offered = await book.table(), await models.entries()
    default = next(entry for entry in offered if entry.default)
    return PricesOut(
        prices=pricing.table_json(table),
        overrides=await book.overrides(),
        defaults_read=pricing.DEFAULTS_READ,
        model=default.name,
        model_priced=pricing.match(table, default.name) is not None,
        unpriced=[
            f"{entry.name}/{tier}"
            for entry in offered
            for tier in entry.tiers
            if pricing.price_of(table, entry.name, tier) is None
        ],
    )


@router.get("/admin/prices", response_model=PricesOut, responses=problem_responses(403, 502))
async def get_prices(admin: CurrentAdmin, book: Book, models: Models) -> PricesOut:
    """The price table in use (USD per 1M tokens, by model and tier): the defaults, the deployment's
    `PRICE_OVERRIDES`, then the overrides made here."""
    return await _prices_view(book, models)


@router.patch("/admin/prices", response_model=PricesOut, responses=problem_responses(403, 502))
async def patch_prices(body: PricesPatch, admin: CurrentAdmin, book: Book, users: Users, models: Models) -> PricesOut:
    """Override prices at run time (SSM `<prefix>/prices`; every process sees them within
    CONFIG_CACHE_SECONDS): a model's tiers replace its tiers, `{}` removes its price, `null`
    drops the override (back to the default). Validations keep the prices they started with. Audited."""
    before = await book.overrides(fresh=True)
    after = dict(before)
    for model, tiers in body.prices.items():
        if tiers is None:
            after.pop(model, None)
            continue
        try:
            pricing.table_of({model: tiers}) if tiers else None
        except ValueError as exc:
            raise Unprocessable(f"prices.{exc}", field=f"prices.{model}") from None
        after[model] = tiers
    if after != before:
        await book.write(after)
        await users.audit(
            admin.user_id,
            "prices.update",
            "prices",
            {m: before.get(m) for m in body.prices},
            {m: after.get(m) for m in body.prices},
        )
    return await _prices_view(book, models)


def _budget_view(budget: Budget | None, item: dict[str, Any] | None, now: float) -> BudgetOut | None:
    if budget is None:
        return None
    committed = Decimal(str((item or {}).get("committed_usd", 0)))
    return BudgetOut(
        max_spend_usd=float(budget.max_usd),
        spend_period=budget.period,
        remaining_usd=float(budget.room(committed).quantize(pricing.QUANTUM)),
        resets_at=iso_of(spend.resets_at(budget.period, now)),
        threshold_alerted=bool((item or {}).get("alerted")),
    )


@router.get("/me/usage", response_model=UsageOut, responses=problem_responses(400))
async def my_usage(
    principal: CurrentUser, store: Spend, period: PeriodQuery = "month", limit: Limit = 12, cursor: Cursor = None
) -> UsageOut:
    """What you spent per UTC `period`, newest first (periods with no settled run are absent), and
    your spend budget's state. Costs are charged when a run settles."""
    now = time.time()
    start = (
        decode_cursor(cursor, lambda v: is_key(v, {"user_id", "period"}) and v["user_id"] == principal.user_id)
        if cursor
        else None
    )
    items, last = await store.periods(principal.user_id, f"{period}#", limit, start)
    budget = Budget.of(principal.quota.as_dict()) if principal.quota is not None else None
    budget_item = await store.period(principal.user_id, spend.period_key(budget.period, now)) if budget else None
    return UsageOut(
        user_id=principal.user_id,
        current=spend.period_key(period, now),
        items=[SpendOut(**spend.spend_view(i, i["period"])) for i in items],
        budget=_budget_view(budget, budget_item, now),
        next_cursor=encode_cursor(last) if last else None,
    )


def _period_key(period: Period, at: str | None) -> str:
    if at is None:
        return spend.period_key(period, time.time())
    shape = "%Y-%m-%d" if period == "day" else "%Y-%m"
    try:
        moment = datetime.strptime(at, shape).replace(tzinfo=UTC)
    except ValueError:
        raise Unprocessable(f"`at` is a {period} as {shape.replace('%', '')}.", field="at") from None
    return spend.period_key(period, moment.timestamp())


@router.get("/admin/usage", response_model=SpendPage, responses=problem_responses(400, 403))
async def all_usage(
    admin: CurrentAdmin,
    store: Spend,
    period: PeriodQuery = "month",
    at: Annotated[str | None, Query(max_length=10, description="YYYY-MM-DD or YYYY-MM; default: now")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> SpendPage:
    """Every user's spend in one UTC period, by user id, a page at a time."""
    key = _period_key(period, at)
    start = decode_cursor(cursor, lambda v: is_key(v, {"user_id", "period", "listing"})) if cursor else None
    items, last = await store.of_period(key, limit, start)
    return SpendPage(
        period=key,
        items=[SpendOut(user_id=i["user_id"], **spend.spend_view(i, key)) for i in items],
        next_cursor=encode_cursor(last) if last else None,
    )

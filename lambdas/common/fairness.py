"""Whom a validator's grants count against under fair share (core/fairness.py).

The validation's owner, with the weight of the owner's quota read when the invocation
starts (so an admin's change reaches the next invocation), and the validation's priority.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from core import fairness as fair
from core.governor import Limits
from lambdas.common.governor import Governor
from lambdas.common.stores import Store


def tenant_of(store: Store, record: Mapping[str, Any]) -> fair.Tenant | None:
    """From the validation's `owner` and `priority`; None for a record without an owner."""
    owner = record.get("owner")
    if not owner:
        return None
    priority = str(record.get("priority") or fair.DEFAULT_PRIORITY)
    if not store.config.users_table:  # a store without the users table (none is deployed so): weight 1
        return fair.Tenant(str(owner), 1.0, priority)
    quota = store.users.quota_of(str(owner))  # None: the bootstrap admin, who has no user record
    return fair.Tenant(str(owner), quota.weight if quota is not None else 1.0, priority)


def owner_share(store: Store, governor: Governor, record: Mapping[str, Any], limits: Limits) -> float | None:
    """The validation owner's fair share of the budget now (weight ÷ Σ weights of the users
    with work waiting, the owner included), for the controller's plan; None when fair share
    is off or the record has no owner."""
    tenant = tenant_of(store, record) if limits.fair_share else None
    if tenant is None:
        return None
    now = time.time()
    return fair.share(tenant, governor.demands(now), 1.0, now)

"""Who is calling: the principal every endpoint and service acts for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.quota import Quota

BOOTSTRAP_ADMIN = "admin"  # the user id of ADMIN_API_KEY's holder (no user record, no quota)

Role = Literal["admin", "user"]
OnLimit = Literal["queue", "reject"]


@dataclass(frozen=True)
class Principal:
    user_id: str
    role: Role
    quota: Quota | None = None  # None: not rate limited (the bootstrap admin)
    on_limit: OnLimit = "queue"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

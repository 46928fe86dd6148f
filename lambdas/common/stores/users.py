"""The users table, as the Lambdas read it: a user's quota and whether they are disabled."""

from __future__ import annotations

from dataclasses import dataclass

from core.dynamo import plain
from core.quota import Quota
from lambdas.common.stores.base import Clients


@dataclass(frozen=True)
class Users:
    clients: Clients

    def quota_of(self, user_id: str) -> Quota | None:
        """The user's quota; None for principals without a user record (the bootstrap admin)."""
        return self.limits_of(user_id)[0]

    def limits_of(self, user_id: str) -> tuple[Quota | None, bool]:
        """The user's quota (None: no user record, the bootstrap admin) and whether it is disabled;
        one read. A quota stored before `max_queued` existed gets the configured default."""
        config = self.clients.config
        item = self.clients.table(config.users_table).get_item(Key={"user_id": user_id}, ConsistentRead=True)
        found = item.get("Item")
        if found is None:
            return None, False
        return Quota.of(plain(found["quota"]), config.default_max_queued), bool(found.get("disabled", False))

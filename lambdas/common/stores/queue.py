"""The owners' queues (core/queue.py builds the requests): leave, hand on, park, wake."""

from __future__ import annotations

from dataclasses import dataclass

from core.clock import now_iso
from core.queue import leave_queue_steps, park_steps, release_steps, wake_steps
from lambdas.common.stores.base import Clients
from lambdas.common.stores.users import Users


@dataclass(frozen=True)
class Queue:
    clients: Clients
    users: Users

    def leave(self, validation_id: str, owner: str) -> bool:
        """Take a run that ends while QUEUED out of its owner's queue and count it off, once."""
        config = self.clients.config
        counted = self.users.quota_of(owner) is not None
        return self.clients.drive(
            leave_queue_steps(config.validations_table, config.buckets_table, validation_id, owner, counted)
        )

    def release_head(self, owner: str) -> str | None:
        """Wake the owner's queue head if it is parked (the id woken, or None)."""
        return self.clients.drive(release_steps(self.clients.config.validations_table, owner))

    def park(self, validation_id: str, run: int, token: str) -> bool:
        """Store a parked task's token on the validation while it is this QUEUED run."""
        return self.clients.drive(
            park_steps(self.clients.config.validations_table, validation_id, run, token, now_iso())
        )

    def wake(self, token: str) -> bool:
        """Send a parked task its token (False when it was spent already)."""
        return self.clients.drive(wake_steps(token))

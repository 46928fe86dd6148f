"""What other domains may do with the event log: tell viewers a validation's status changed."""

from __future__ import annotations

from app.events.store import EventStore


class EventLog:
    def __init__(self, store: EventStore) -> None:
        self._store = store

    async def append_status(self, validation_id: str) -> int:
        """A `status` event with the validation's current status, run and error; its number."""
        return await self._store.append_status(validation_id)

    async def purge(self, validation_id: str) -> int:
        """Remove the validation's stored events (DELETE .../data); how many there were."""
        return await self._store.delete_all(validation_id)

"""Rule sets in DynamoDB (`rulesets`): sets, their immutable versions, the shared sets' pointers.

Every write is conditional: a version is put only where none is (so a version, once written,
never changes), the set's `latest` moves only from the number it was read at, and a shared
name is held by one set at a time.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from botocore.exceptions import ClientError

from app.aws.clients import AWSClients
from app.aws.errors import condition_failed
from app.rulesets.records import (
    SHARED_PARTITION,
    LastTest,
    Ruleset,
    RuleTest,
    Version,
    set_key,
    shared_key,
    version_key,
    versions_prefix,
)
from app.rulesets.scoring import Report
from app.settings import Settings
from core.dynamo import Update, from_item, to_item

Page = tuple[list[dict[str, Any]], dict[str, Any] | None]


class Refused(StrEnum):
    """Why a conditional write of a set did not happen."""

    NAME_TAKEN = "name_taken"  # the owner has a set of that name already
    SHARED_TAKEN = "shared_taken"  # another set is shared under that name
    MOVED = "moved"  # the set changed since it was read (another version was pushed meanwhile)


class RulesetStore:
    def __init__(self, clients: AWSClients, settings: Settings) -> None:
        self._db = clients.dynamodb
        self._table = settings.table("rulesets")

    # --- reads ----------------------------------------------------------------------------
    async def _get(self, key: dict[str, str]) -> dict[str, Any] | None:
        answer = await self._db.get_item(TableName=self._table, Key=to_item(key), ConsistentRead=True)
        return from_item(answer["Item"]) if "Item" in answer else None

    async def get_set(self, owner: str, name: str) -> Ruleset | None:
        item = await self._get(set_key(owner, name))
        return Ruleset.of(item) if item else None

    async def get_version(self, owner: str, name: str, version: int) -> Version | None:
        item = await self._get(version_key(owner, name, version))
        return Version.of(item) if item else None

    async def shared_holder(self, name: str) -> str | None:
        """The owner of the set shared under `name`, if any."""
        item = await self._get(shared_key(name))
        return str(item["holder"]) if item else None

    async def _query(self, owner: str, prefix: str, limit: int, start: dict[str, Any] | None, newest: bool) -> Page:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#o = :owner AND begins_with(#sk, :prefix)",
            "ExpressionAttributeNames": {"#o": "owner", "#sk": "sk"},
            "ExpressionAttributeValues": to_item({":owner": owner, ":prefix": prefix}),
            "ScanIndexForward": not newest,
            "Limit": limit,
            "ConsistentRead": True,
        }
        if start:
            kwargs["ExclusiveStartKey"] = to_item(start)
        page = await self._db.query(**kwargs)
        last = from_item(page["LastEvaluatedKey"]) if "LastEvaluatedKey" in page else None
        return [from_item(i) for i in page["Items"]], last

    async def sets_of(self, owner: str, limit: int, start: dict[str, Any] | None) -> tuple[list[Ruleset], Any]:
        """An owner's sets by name."""
        items, last = await self._query(owner, "set#", limit, start, newest=False)
        return [Ruleset.of(i) for i in items], last

    async def shared_page(self, limit: int, start: dict[str, Any] | None) -> tuple[list[tuple[str, str]], Any]:
        """(holder, name) of the shared sets, by name."""
        items, last = await self._query(SHARED_PARTITION, "set#", limit, start, newest=False)
        return [(str(i["holder"]), str(i["sk"]).removeprefix("set#")) for i in items], last

    async def versions_of(
        self, owner: str, name: str, limit: int, start: dict[str, Any] | None
    ) -> tuple[list[Version], Any]:
        """A set's versions, newest first."""
        items, last = await self._query(owner, versions_prefix(name), limit, start, newest=True)
        return [Version.of(i) for i in items], last

    # --- writes ---------------------------------------------------------------------------
    async def create(self, ruleset: Ruleset, first: Version) -> Refused | None:
        """The set and its version 1 together (and its shared pointer when shared); None when written."""
        items: list[dict[str, Any]] = [
            {"Put": _put_new(self._table, ruleset.to_item())},
            {"Put": _put_new(self._table, first.to_item())},
        ]
        if ruleset.shared:
            items.append({"Put": self._claim_shared(ruleset.owner, ruleset.name)})
        try:
            await self._db.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if not condition_failed(exc):
                raise
            if await self.get_set(ruleset.owner, ruleset.name) is not None:
                return Refused.NAME_TAKEN
            holder = await self.shared_holder(ruleset.name)
            return Refused.SHARED_TAKEN if holder not in (None, ruleset.owner) else Refused.MOVED
        return None

    async def add_version(self, before: Ruleset, version: Version, updated_at: str) -> Refused | None:
        """`version` (numbered `before.latest + 1`, or `before.latest` to only reinstate a retired set)
        as the set's latest, the set reinstated if it was retired; None when written."""
        head = (
            Update()
            .set(latest=version.version, description=version.description, updated_at=updated_at)
            .remove("retired_at")
            .when("{latest} = :seen", seen=before.latest)
        )
        items: list[dict[str, Any]] = [{"Update": head.item(self._table, set_key(before.owner, before.name), to_item)}]
        if version.version != before.latest:
            items.append({"Put": _put_new(self._table, version.to_item())})
        try:
            await self._db.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if condition_failed(exc):
                return Refused.MOVED
            raise
        return None

    async def set_shared(self, ruleset: Ruleset, shared: bool, updated_at: str) -> Refused | None:
        """Share the set under its name (or stop); None when written."""
        head = Update().set(shared=shared, updated_at=updated_at).when("attribute_exists({sk})")
        pointer: dict[str, Any]
        if shared:
            pointer = {"Put": self._claim_shared(ruleset.owner, ruleset.name)}
        else:
            pointer = {
                "Delete": {
                    "TableName": self._table,
                    "Key": to_item(shared_key(ruleset.name)),
                    "ConditionExpression": "attribute_not_exists(#h) OR #h = :me",
                    "ExpressionAttributeNames": {"#h": "holder"},
                    "ExpressionAttributeValues": to_item({":me": ruleset.owner}),
                }
            }
        try:
            await self._db.transact_write_items(
                TransactItems=[
                    {"Update": head.item(self._table, set_key(ruleset.owner, ruleset.name), to_item)},
                    pointer,
                ]
            )
        except ClientError as exc:
            if condition_failed(exc):
                return Refused.SHARED_TAKEN
            raise
        return None

    def _claim_shared(self, owner: str, name: str) -> dict[str, Any]:
        return {
            "TableName": self._table,
            "Item": to_item({**shared_key(name), "holder": owner}),
            "ConditionExpression": "attribute_not_exists(#h) OR #h = :me",
            "ExpressionAttributeNames": {"#h": "holder"},
            "ExpressionAttributeValues": to_item({":me": owner}),
        }

    async def retire(self, owner: str, name: str, at: str) -> bool:
        """Mark the set retired; False when it already was (or does not exist)."""
        update = (
            Update()
            .set(retired_at=at, updated_at=at)
            .when("attribute_exists({sk}) AND attribute_not_exists({retired_at})")
        )
        try:
            await self._db.update_item(**update.item(self._table, set_key(owner, name), to_item))
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    async def start_test(self, version: Version, run: RuleTest) -> bool:
        """Attach a test to the version (its previous report goes); False when this test is attached
        already (a replayed request)."""
        update = (
            Update()
            .set(test=run.to_item())
            .remove("report")
            .when("attribute_exists({sk})")
            .when("attribute_not_exists({test}) OR {test}.{validation_id} <> :vid", vid=run.validation_id)
        )
        try:
            await self._db.update_item(
                **update.item(self._table, version_key(version.owner, version.name, version.version), to_item)
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        last = LastTest(version.version, run.validation_id, run.started_at)
        await self._db.update_item(
            **Update()
            .set(last_test=last.to_item())
            .when("attribute_exists({sk})")
            .item(self._table, set_key(version.owner, version.name), to_item)
        )
        return True

    async def save_report(self, version: Version, report: Report) -> bool:
        """Store the report of the version's current test, once; False when another request stored one
        first or a newer test replaced it. The set's last-test summary follows when it is that test."""
        update = (
            Update()
            .set(report=report.to_item())
            .when("{test}.{validation_id} = :vid AND attribute_not_exists({report})", vid=report.validation_id)
        )
        try:
            await self._db.update_item(
                **update.item(self._table, version_key(version.owner, version.name, version.version), to_item)
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        summary = (
            Update()
            .set_to("{last_test}.{reported}", ":yes", yes=True)
            .when("{last_test}.{validation_id} = :vid", vid=report.validation_id)
        )
        if report.precision is not None:
            summary.set_to("{last_test}.{precision}", ":precision", precision=report.precision)
        if report.recall is not None:
            summary.set_to("{last_test}.{recall}", ":recall", recall=report.recall)
        try:
            await self._db.update_item(**summary.item(self._table, set_key(version.owner, version.name), to_item))
        except ClientError as exc:
            if not condition_failed(exc):  # a newer test is the set's last one: its summary stays
                raise
        return True


def _put_new(table: str, item: dict[str, Any]) -> dict[str, Any]:
    """A Put that writes only where no item is: a version, once written, never changes."""
    return {"TableName": table, "Item": to_item(item), "ConditionExpression": "attribute_not_exists(sk)"}

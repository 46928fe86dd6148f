"""The event log behind SSE (core/events.py builds the requests): status, progress and each
file's result, written once per file and run."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from core import events
from core.results import file_result
from lambdas.common.errors import is_condition_failure
from lambdas.common.stores.base import Clients
from lambdas.common.stores.parts import Parts
from lambdas.common.stores.validations import Validations


@dataclass(frozen=True)
class Events:
    clients: Clients
    validations: Validations
    parts: Parts

    def emit(self, validation_id: str, kind: str, data: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        """Append an event; `data` builds it from the validation record as of this event (returned)."""
        config = self.clients.config
        return self.clients.drive(
            events.append_steps(config.validations_table, config.events_table, validation_id, kind, data)
        )

    def emit_status(self, validation_id: str) -> None:
        self.emit(validation_id, events.STATUS, events.status_of)

    def after_part(
        self, validation_id: str, run: int, part: dict[str, Any], file: dict[str, Any], rule_ids: list[str]
    ) -> None:
        """Progress, and the result of `file` (the part's file record) when the part is its only one,
        with one write on the validation's record (core/events.append_all_steps). Only the invocation
        that settled the part calls this, so a single-part file's result is written once per run
        without a claim. A multi-part file's result comes from the combine step, which decides its
        verdict."""
        config = self.clients.config
        built: list[tuple[str, events.Builder]] = [(events.PROGRESS, events.progress_of)]
        if int(file["parts"]) == 1:
            index = int(part["file_index"])
            parts = self.parts.of_file(validation_id, index)
            result = file_result(file["name"], parts, rule_ids, None, file.get("error"))
            built.append((events.RESULT, lambda _: result))
        self.clients.drive(
            events.append_all_steps(
                config.validations_table, config.events_table, validation_id, built, config.parts_table
            )
        )

    def report_file(self, validation_id: str, run: int, index: int, record: dict[str, Any] | None = None) -> None:
        """The file's `result` event, written once per file and run."""
        try:
            self.clients.client.update_item(
                **events.claim_file_report(self.clients.config.validations_table, validation_id, run, index)
            )
        except ClientError as exc:
            if is_condition_failure(exc):
                return  # another invocation reports this file
            raise
        record = record or self.validations.get(validation_id, "files", "rules")
        parts = self.parts.of_file(validation_id, index)
        verdict = self.parts.verdict(validation_id, index) if len(parts) > 1 else None
        file = record["files"][index]
        result = file_result(file["name"], parts, [r["id"] for r in record["rules"]], verdict, file.get("error"))
        self.emit(validation_id, events.RESULT, lambda _: result)

    def has_status(self, validation_id: str, status: str, run: int) -> bool:
        """Whether the validation's newest status event says `status` for run `run`."""
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "validation_id = :v",
            "ExpressionAttributeValues": {":v": validation_id},
            "ScanIndexForward": False,
            "Limit": 20,
        }
        while True:
            page = self.clients.table(self.clients.config.events_table).query(**kwargs)
            for item in page["Items"]:
                if item["type"] == events.STATUS:
                    data = json.loads(str(item["data"]))
                    return bool(data.get("status") == status and int(data.get("run", 0)) == run)
            if "LastEvaluatedKey" not in page:
                return False
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

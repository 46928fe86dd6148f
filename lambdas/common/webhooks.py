"""Webhooks as the Lambdas use them: start a validation's notification once its run ended
(Finalize, MarkFailed, the reconciler), and the tables the notify Lambda reads and writes.

A notification is one execution of the `<prefix>-notify` state machine, named after the
event's message id (core/webhooks.message_id: one per validation, run and terminal status),
so starting it twice starts it once: Step Functions answers the second start with
ExecutionAlreadyExists (or, while the first runs with the same input, with the first).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

import boto3
from botocore.exceptions import ClientError

from core import ends, spend, webhooks
from core.clock import expiry, iso_of
from core.records import TERMINAL
from lambdas.common.config import LambdaConfig
from lambdas.common.stores import Store, client_for, client_kwargs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoint:
    url: str
    secret: str


@dataclass
class WebhookTables:
    """The owner's webhook (`webhooks`), its secret (`webhook_secrets`, which only the notify
    Lambda may read) and the log of delivery attempts (`webhook_deliveries`)."""

    config: LambdaConfig
    dynamodb: Any

    def registered(self, owner: str) -> bool:
        """Whether `owner` has a webhook (reads the URL table only, never the secret)."""
        if not self.config.webhooks_table:
            return False
        item = (
            self.dynamodb.Table(self.config.webhooks_table)
            .get_item(
                Key={"owner": owner},
                ConsistentRead=True,
                ProjectionExpression="#o",
                ExpressionAttributeNames={"#o": "owner"},
            )
            .get("Item")
        )
        return item is not None

    def endpoint(self, owner: str) -> Endpoint | None:
        """The URL and secret to deliver with now (a PUT since the event replaced both)."""
        hook = self.dynamodb.Table(self.config.webhooks_table).get_item(Key={"owner": owner}, ConsistentRead=True)
        secret = self.dynamodb.Table(self.config.webhook_secrets_table).get_item(
            Key={"owner": owner}, ConsistentRead=True
        )
        if "Item" not in hook or "Item" not in secret:
            return None
        return Endpoint(url=str(hook["Item"]["url"]), secret=str(secret["Item"]["secret"]))

    def record(self, owner: str, attempt: dict[str, Any]) -> None:
        """One delivery attempt, listed newest first by `GET /me/webhook/deliveries`."""
        sort_key = f"{attempt['attempted_at']}#{attempt['event_id']}#{int(attempt['attempt']):04d}"
        item = {k: v for k, v in attempt.items() if v is not None}
        self.dynamodb.Table(self.config.webhook_deliveries_table).put_item(
            Item={**item, "owner": owner, "sk": sort_key, "expires_at": expiry(self.config.retention_days)}
        )


@lru_cache(maxsize=32)
def webhook_tables_for(config: LambdaConfig) -> WebhookTables:
    return WebhookTables(config, boto3.resource("dynamodb", **client_kwargs(config)))


def notify_ended(config: LambdaConfig, store: Store, validation_id: str, run: int) -> str | None:
    """Start the notification of run `run` if it has a terminal status and the owner a webhook;
    the message id, or None. Safe to repeat: whoever sees the run ended may call it (a Finalize
    retried after writing the status starts it then, at the latest)."""
    if not config.notify_state_machine_arn or not config.webhooks_table:
        return None  # a deployment (or a test's hand-made function) without webhooks
    record = store.validations.counted(validation_id, *webhooks.RECORD_FIELDS)
    payload = webhooks.notification(record, run)
    if payload is None or not webhook_tables_for(config).registered(str(record["owner"])):
        return None
    return start_notification(config, payload)


def start_notification(config: LambdaConfig, payload: dict[str, Any]) -> str:
    """Start the notify execution named after the event's message id; its name. A second start of
    the same name is refused by Step Functions (ExecutionAlreadyExists): at least once, not twice."""
    name = str(payload["message_id"])
    try:
        client_for(config, "stepfunctions").start_execution(
            stateMachineArn=config.notify_state_machine_arn, name=name, input=json.dumps(payload)
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
            raise
        return name  # started before
    log.info("notification %s started", name)
    return name


def notify_budget(config: LambdaConfig, store: Store, owner: str, validation_id: str, now: float) -> str | None:
    """Send `budget.threshold` once per user and period, when the owner's spend this period has
    passed the threshold of their budget: the message id, or None. Safe to repeat: the notify
    execution is named per user and period, and started before the period is marked alerted
    (a crash between the two starts it again, which Step Functions refuses)."""
    quota = store.users.quota_of(owner)
    budget = spend.Budget.of(quota.as_dict()) if quota is not None else None
    if budget is None or not config.spend_table:
        return None
    key = spend.period_key(budget.period, now)
    spend_key = {"user_id": {"S": owner}, "period": {"S": key}}
    item = store.clients.client.get_item(TableName=config.spend_table, Key=spend_key, ConsistentRead=True).get("Item")
    spent = Decimal(item["spent_usd"]["N"]) if item and "spent_usd" in item else Decimal(0)
    if item is None or "alerted" in item or spent < budget.max_usd * spend.THRESHOLD:
        return None
    name = None
    if config.notify_state_machine_arn and config.webhooks_table and webhook_tables_for(config).registered(owner):
        payload = webhooks.budget_notification(
            owner,
            validation_id,
            key,
            budget.period,
            float(budget.max_usd),
            float(spent),
            float(spend.THRESHOLD),
            iso_of(spend.resets_at(budget.period, now)),
            iso_of(now),
        )
        name = start_notification(config, payload)
    try:
        store.clients.client.update_item(**spend.threshold_update(config.spend_table, owner, key, budget))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise
    return name


def announce_end(
    config: LambdaConfig, store: Store, validation_id: str, run: int | None, *, wrote_status: bool
) -> str | None:
    """Announce a run's end (core/ends.py): its status event, the owner's notification, then the
    marker off; the notification's message id, or None. `wrote_status`: the caller's own write
    just ended run `run` (the event is not in the log yet). Otherwise (a retried Finalize, the
    reconciler's sweep; `run` None: the current run) only a still-marked end is announced, its
    status event appended only when the log lacks it. Safe to repeat."""
    if wrote_status:
        assert run is not None
        store.events.emit_status(validation_id)
    else:
        record = store.validations.get(validation_id, "run", "status", ends.MARKER, "purged_at")
        run = int(record["run"]) if run is None else run
        if ends.MARKER not in record or int(record["run"]) != run or record["status"] not in TERMINAL:
            return None  # announced already, or the validation moved on to a new run
        if not record.get("purged_at") and not store.events.has_status(validation_id, str(record["status"]), run):
            store.events.emit_status(validation_id)
    name = notify_ended(config, store, validation_id, run)
    store.validations.clear_end_marker(validation_id, run)
    return name

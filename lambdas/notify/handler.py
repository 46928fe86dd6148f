"""State `Deliver` of the notify state machine: one attempt to POST a validation's terminal
event to its owner's webhook (lambdas/notify/delivery.py). The state's Retry makes the
attempts; `attempt` is its retry count (0 for the first)."""

from functools import lru_cache
from typing import Any

import httpx

from lambdas.common.config import LambdaConfig, load_config
from lambdas.common.observability import observed
from lambdas.common.webhooks import webhook_tables_for
from lambdas.notify.delivery import deliver, http_client


@lru_cache(maxsize=8)
def _client(config: LambdaConfig) -> httpx.Client:
    """One connection pool per configuration, kept across warm invocations."""
    return http_client(config)


@observed
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config = load_config()
    return deliver(
        event["notification"], int(event.get("attempt") or 0) + 1, webhook_tables_for(config), _client(config), config
    )

"""A lease outlives the call it reserved for, however long the wait for its place in the
budget's schedule: renewed before the wait, it is renewed again after a long one
(lambdas/common/governor.py, RENEW_AFTER_WAIT). The governor runs on a clock of the test's,
which its sleep moves forward, against the embedded DynamoDB."""

from __future__ import annotations

import time

from app.settings import Settings
from core import governor as g
from core.dynamo import from_item
from lambdas.common.governor import RENEW_AFTER_WAIT, Governor
from lambdas.common.live_config import LiveConfig
from tests.governor.fleet import deployment
from tests.support.stack import Aws

WINDOW = 60.0
LEASE_SECONDS = 20.0
TPM = 60_000  # 950 tokens a second at the threshold: a call of 9,500 tokens is 10 s of the schedule
CALL = 9_500


class _Clock:
    """The governor's clock; its sleep moves it forward (no real wait)."""

    def __init__(self, start: float) -> None:
        self.now, self.slept = start, 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


def _expires_at(aws: Aws, table: str, validation_id: str) -> float:
    items = aws.client("dynamodb").query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": g.lease_key(validation_id, 0)["pk"]}},
    )["Items"]
    (lease,) = [from_item(i) for i in items]
    return float(lease["expires_at"])


def test_a_lease_renewed_before_a_long_wait_is_renewed_again_before_its_call(aws: Aws, settings: Settings) -> None:
    config = deployment(aws, settings, {"target-tpm": TPM, "max-parallelism": 2, "throttle-threshold": 0.95})
    dynamodb = aws.new_client("dynamodb")
    live = LiveConfig(dynamodb, aws.new_client("ssm"), config.governor_table, config.ssm_prefix, 60)
    clock = _Clock(time.time())
    governor = Governor(
        dynamodb, config.governor_table, live.limits, WINDOW, LEASE_SECONDS, sleep=clock.sleep, clock=clock
    )
    first = governor.lease("v-first", lambda: 2)
    first.reserve(CALL, deadline=clock.now + 60)  # the schedule's first place: no wait
    assert clock.slept < 0.01

    second = governor.lease("v-second", lambda: 2)
    second.reserve(CALL, deadline=clock.now + 60)  # behind the first: a wait of about 10 s

    assert clock.slept > LEASE_SECONDS * RENEW_AFTER_WAIT
    # Renewed after the wait: a whole LEASE_SECONDS from the call's start, not from before the wait.
    assert _expires_at(aws, config.governor_table, "v-second") >= clock.now + LEASE_SECONDS - 0.01
    first.close()
    second.close()

"""Requests per minute governed with tokens: the real grant path (tests/governor/fleet.py)
against the embedded DynamoDB and the simulator's limiter, which judges: it refuses what its
requests bucket does not hold, exactly as OpenAI's does.

The minute is scaled to 6 s (the governor's window and the simulator's alike), and the
simulator enforces its limit in slices of a fifth of it (as OpenAI may: 60,000 RPM as 1,000
a second), so no full minute's bucket absorbs the first calls. The limit then lets 10 calls
a second through (a bucket of 12), fewer than twelve validators send when nothing holds them
back (about 15 a second on a busy 2-core machine: governed by tokens alone, the first test
saw 10-16% of its requests refused).
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from app.settings import Settings
from core import governor as g
from core import prompt
from core.dynamo import from_item
from lambdas.common.errors import RateLimited
from lambdas.common.governor import Governor
from lambdas.common.live_config import LiveConfig
from lambdas.common.model import call_model
from local.simulator.limits import RateLimits
from local.simulator.server import SimulatorServer
from tests.governor.fleet import Fleet, deployment, one_part_file
from tests.support.stack import Aws

WINDOW = 6.0  # seconds standing for a minute
PLENTY = 10_000_000  # tokens per window: the request limit binds
PARAMETERS = {"target-tpm": PLENTY, "max-parallelism": 12, "throttle-threshold": 0.9}


def _sixty_a_minute(simulator: SimulatorServer) -> None:
    """60 requests a (scaled) minute, enforced in slices of a fifth; no retry-after: a refused
    call's wait comes from `x-ratelimit-reset-requests`."""
    simulator.reconfigure(rpm=60, tpm=PLENTY, window_seconds=WINDOW, latency_seconds=0.05, send_retry_after=False)
    simulator.simulator.limits = RateLimits(60, PLENTY, WINDOW, slice_seconds=WINDOW / 5)


def _budget(aws: Aws, table: str) -> dict[str, Any]:
    item = aws.client("dynamodb").get_item(TableName=table, Key={"pk": {"S": "budget"}, "sk": {"S": "tokens"}})
    return from_item(item["Item"])


@pytest.mark.slow(12)
def test_ninety_one_part_files_at_sixty_requests_a_minute_are_almost_never_refused(
    aws: Aws, settings: Settings, simulator: SimulatorServer
) -> None:
    _sixty_a_minute(simulator)
    config = deployment(aws, settings, {**PARAMETERS, "target-rpm": 60}, governor_window_seconds=WINDOW)

    outcome = Fleet(aws, config, processes=12).run(files=90)

    stats = simulator.stats
    assert outcome.answered == 90 and stats.part_calls == 90  # every file answered once
    assert stats.requests == 90 + stats.rate_limited == 90 + outcome.refused  # every request counted
    assert stats.rate_limited <= 0.05 * stats.requests, (stats.rate_limited, stats.requests)
    # Every call was charged a request's worth of tokens (100,000 of a 6 s window: far more than
    # its own few hundred): granted − returned is 90 requests' worth, and one per refused request.
    budget = _budget(aws, config.governor_table)
    request = g.Budget(g.Limits(12, PLENTY, 0.9, target_rpm=60), g.BudgetState(), WINDOW).cost(0)
    assert request == math.ceil(PLENTY / 60)
    assert budget["granted"] - budget.get("returned", 0) == (90 + stats.rate_limited) * request


@pytest.mark.slow(12)
def test_a_request_limit_below_target_rpm_is_learned_from_the_headers(
    aws: Aws, settings: Settings, simulator: SimulatorServer
) -> None:
    """target-rpm set 100 times too high: the answers' `x-ratelimit-limit-requests` lowers it."""
    _sixty_a_minute(simulator)
    config = deployment(aws, settings, {**PARAMETERS, "target-rpm": 6_000}, governor_window_seconds=WINDOW)

    outcome = Fleet(aws, config, processes=12).run(files=90)

    stats = simulator.stats
    assert outcome.answered == 90 and stats.part_calls == 90
    assert stats.rate_limited <= 0.05 * stats.requests, (stats.rate_limited, stats.requests)
    assert _budget(aws, config.governor_table)["upstream_rpm"] == 60


def test_a_refused_request_slows_the_budget_like_a_refused_token(
    aws: Aws, settings: Settings, simulator: SimulatorServer
) -> None:
    """A 429 of the request limit, without retry-after: the wait is the requests' reset, and it
    lowers the factor and pauses every grant, as a 429 of the token limit does."""
    simulator.reconfigure(rpm=1, tpm=PLENTY, window_seconds=WINDOW, latency_seconds=0, send_retry_after=False)
    config = deployment(aws, settings, {**PARAMETERS, "target-rpm": 1}, governor_window_seconds=WINDOW)
    messages, tokens = one_part_file(0)

    def ask() -> Any:
        return call_model(config, messages, prompt.PART_RESPONSE_FORMAT, 100, api_key="")

    answered = ask()
    with pytest.raises(RateLimited) as refused:
        ask()

    assert answered.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.value.retry_after == pytest.approx(WINDOW, abs=0.5)  # a whole request to refill: the window
    dynamodb = aws.new_client("dynamodb")
    live = LiveConfig(dynamodb, aws.new_client("ssm"), config.governor_table, config.ssm_prefix, 60)
    governor = Governor(dynamodb, config.governor_table, live.limits, WINDOW, config.lease_seconds)
    governor.rate_limited(refused.value.retry_after)
    budget = governor.read_budget()
    assert budget.state.factor == pytest.approx(0.8)
    assert budget.state.tat >= budget.state.penalized_at + WINDOW / 4  # paused: at most a quarter of a window

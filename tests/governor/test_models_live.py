"""One governor budget per model: two models' fleets (tests/governor/fleet.py) at once, the real
grant path against the embedded DynamoDB and the simulator.

OpenAI keeps its limits per model, so the judge here does too: in front of the simulator, one
OpenAI-style limiter per model (local/simulator/limits.RateLimits at that model's limit) refuses
what its bucket does not hold, and can answer a model's first calls 429 as an upstream would.
Nothing refused by a limiter means no window held more than that model's limit. The models'
independence is counted, not timed: the validators of the model that is not held back never
wait (no sleep at all), while the other model's do.

The configured model (`simulator`) keeps its budget at `pk=budget`, the other one (`simulator-b`)
has its own at `pk=budget#simulator-b`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.responses import JSONResponse

from app.settings import Settings
from core import governor as g
from core.dynamo import from_item
from core.tokens import count_message_tokens
from lambdas.common.config import LambdaConfig
from lambdas.common.governor import Governor
from lambdas.common.live_config import LiveConfig
from local.simulator.limits import RateLimits
from local.simulator.server import SimulatorServer
from tests.governor.fleet import Fleet, Outcome, deployment, spent
from tests.support.stack import Aws, wait_for

WINDOW = 2.0  # seconds standing for a minute
OTHER = "simulator-b"
PLENTY = 10_000_000
SMALL = 1_500  # tokens a window: about four calls of ~350 tokens (completion_max_tokens 100)


class PerModelUpstream:
    """Per-model rate limits in front of the simulator (which is told to admit everything).

    `calls` holds each call admitted by the judge and answered: (monotonic time, tokens charged,
    model); `refused` the calls a model's limiter refused; `inject` answers that many first calls
    of a model 429 (with `retry-after`) before its limiter is asked."""

    def __init__(self, simulator: SimulatorServer, limits: dict[str, tuple[int, int]], inject: dict[str, int]) -> None:
        self._simulator = simulator.simulator
        self._complete = self._simulator.complete
        self._limits = {model: RateLimits(rpm, tpm, WINDOW) for model, (rpm, tpm) in limits.items()}
        self._inject = dict(inject)
        self._lock = threading.Lock()
        self.calls: list[tuple[float, int, str]] = []
        self.refused: dict[str, int] = {}
        self.injected: dict[str, int] = {}
        self._simulator.complete = self.complete  # type: ignore[method-assign]  # the app calls the instance's attribute

    async def complete(self, body: dict[str, Any]) -> Any:
        model = str(body.get("model"))
        messages = [{"content": str(m.get("content", ""))} for m in body.get("messages") or []]
        tokens = count_message_tokens(messages) + int(body.get("max_completion_tokens") or body.get("max_tokens") or 0)
        with self._lock:
            if self._inject.get(model, 0) > 0:
                self._inject[model] -= 1
                self.injected[model] = self.injected.get(model, 0) + 1
                return _rate_limited({"retry-after": "0.5"})
        decision = self._limits[model].admit(tokens)
        if not decision.admitted:
            with self._lock:
                self.refused[model] = self.refused.get(model, 0) + 1
            return _rate_limited({**decision.headers, "retry-after": f"{decision.retry_after:.3f}"})
        answer = await self._complete(body)
        if answer.status_code == 200:
            with self._lock:
                self.calls.append((time.monotonic(), tokens, model))
        return answer

    def tokens_of(self, model: str) -> int:
        with self._lock:
            return sum(tokens for _, tokens, who in self.calls if who == model)

    def close(self) -> None:
        self._simulator.complete = self._complete  # type: ignore[method-assign]


def _rate_limited(headers: dict[str, str]) -> JSONResponse:
    body = {"error": {"message": "Rate limit reached", "type": "tokens", "code": "rate_limit_exceeded"}}
    return JSONResponse(body, status_code=429, headers=headers)


@pytest.fixture
def upstream_of(simulator: SimulatorServer) -> Iterator[Any]:
    made: list[PerModelUpstream] = []

    def make(limits: dict[str, tuple[int, int]], inject: dict[str, int] | None = None) -> PerModelUpstream:
        made.append(PerModelUpstream(simulator, limits, inject or {}))
        return made[-1]

    simulator.reconfigure(tpm=10 * PLENTY, rpm=PLENTY, window_seconds=WINDOW, latency_seconds=0.02)
    yield make
    for upstream in made:
        upstream.close()


def _two_models(aws: Aws, settings: Settings, configured_tpm: int, other_tpm: int) -> LambdaConfig:
    """A deployment whose list holds the configured model (targets: target-tpm, target-rpm) and OTHER."""
    other = {"name": OTHER, "target_tpm": other_tpm, "target_rpm": PLENTY, "tiers": ["standard"], "default": False}
    listed = [{"name": settings.openai_model, "tiers": ["standard"], "default": True}, other]
    parameters = {
        "target-tpm": configured_tpm,
        "target-rpm": PLENTY,
        "max-parallelism": 8,
        "throttle-threshold": 0.9,
        "models": json.dumps(listed),
    }
    return deployment(aws, settings, parameters, governor_window_seconds=WINDOW, completion_max_tokens=100)


def _budget(aws: Aws, config: LambdaConfig, pk: str) -> dict[str, Any]:
    key = {"pk": {"S": pk}, "sk": {"S": "tokens"}}
    return from_item(aws.client("dynamodb").get_item(TableName=config.governor_table, Key=key)["Item"])


def _run(fleet: Fleet, files: int, into: dict[str, Outcome]) -> threading.Thread:
    def work() -> None:
        into[fleet.model] = fleet.run(files)

    thread = threading.Thread(target=work)
    thread.start()
    return thread


@pytest.mark.slow(10)
def test_a_full_budget_on_one_model_does_not_slow_the_other_and_neither_exceeds_its_limit(
    aws: Aws, settings: Settings, upstream_of: Any
) -> None:
    config = _two_models(aws, settings, configured_tpm=SMALL, other_tpm=PLENTY)
    configured = config.openai_model
    upstream = upstream_of({configured: (PLENTY, SMALL), OTHER: (PLENTY, PLENTY)})
    held, free = Fleet(aws, config, processes=6), Fleet(aws, config, processes=1, model=OTHER)
    outcomes: dict[str, Outcome] = {}

    busy = _run(held, 12, outcomes)  # six validators on a budget of about four calls a window
    assert wait_for(lambda: held.outcome.waits > 0, timeout=60, what="the configured model's budget full")
    _run(free, 8, outcomes).join(120)  # meanwhile, one validator of the other model
    busy.join(120)

    assert outcomes[configured].answered == 12 and outcomes[OTHER].answered == 8
    assert upstream.refused == {}  # no window of either model held more than its limit
    assert outcomes[OTHER].waits == 0  # never waited for a place: its budget is its own
    assert outcomes[configured].waits > 0
    # Each budget let through exactly what its model was sent.
    assert spent(aws.client("dynamodb"), config.governor_table) == upstream.tokens_of(configured)
    assert spent(aws.client("dynamodb"), config.governor_table, g.Scope(OTHER)) == upstream.tokens_of(OTHER)


@pytest.mark.slow(8)
def test_a_429_of_one_model_slows_its_budget_only(aws: Aws, settings: Settings, upstream_of: Any) -> None:
    config = _two_models(aws, settings, configured_tpm=PLENTY, other_tpm=PLENTY)
    configured = config.openai_model
    upstream = upstream_of({configured: (PLENTY, PLENTY), OTHER: (PLENTY, PLENTY)}, inject={OTHER: 2})
    refused, calm = Fleet(aws, config, processes=3, model=OTHER), Fleet(aws, config, processes=1)
    outcomes: dict[str, Outcome] = {}

    busy = _run(refused, 8, outcomes)
    assert wait_for(lambda: upstream.injected.get(OTHER) == 2, timeout=60, what="the other model's 429s")
    _run(calm, 8, outcomes).join(120)  # while the other model's budget is paused
    busy.join(120)

    assert outcomes[OTHER].answered == 8 and outcomes[configured].answered == 8
    assert outcomes[OTHER].refused == 2 and upstream.refused == {}
    penalized, untouched = _budget(aws, config, f"budget#{OTHER}"), _budget(aws, config, "budget")
    assert penalized["factor"] < 1 and "penalized_at" in penalized
    assert "penalized_at" not in untouched and untouched.get("factor", 1) == 1
    assert outcomes[configured].waits == 0  # the other model's pause held none of its calls back


def test_a_dead_lease_of_one_model_gives_its_tokens_back_to_that_models_budget(aws: Aws, settings: Settings) -> None:
    """Any validator's sweep (or the reconciler's) reclaims a dead lease of any model: the lease
    names its budget, so the tokens go back there."""
    config = _two_models(aws, settings, configured_tpm=PLENTY, other_tpm=PLENTY)
    dynamodb, table = aws.new_client("dynamodb"), config.governor_table
    live = LiveConfig(dynamodb, aws.new_client("ssm"), table, config.ssm_prefix, 60, configured=config.openai_model)
    other = Governor(dynamodb, table, lambda: live.limits(OTHER), WINDOW, 30.0, scope=g.Scope(OTHER))
    lease = other.lease("v-dead", lambda: 4)
    lease.reserve(1_000, time.time() + 10)  # a lease's worth taken, one call committed; then its holder dies
    later = time.time() + 60  # past the lease
    sweeper = Governor(
        dynamodb,
        table,
        live.limits,
        WINDOW,
        30.0,
        clock=lambda: later,
        limits_of=lambda scope: live.limits(scope.name(config.openai_model)),
    )

    assert sweeper.sweep(force=True) == 1

    assert lease.leased > lease.committed == 1_000
    assert _budget(aws, config, f"budget#{OTHER}")["returned"] == lease.leased - lease.committed
    assert "returned" not in _budget(aws, config, "budget") and "granted" not in _budget(aws, config, "budget")

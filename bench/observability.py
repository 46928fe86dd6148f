"""What observability costs, as ratios against the same thing without it, in the same run:

- the API's per-request middleware (request id, log context, route-template metrics): a
  FastAPI endpoint shaped like `GET /validations/{id}`, called through ASGI, with and
  without `app.observability.install`;
- a JSON log line (Powertools' formatter, with the bound ids) against the stdlib text line;
- a Lambda invocation wrapped by `@observed` (log keys, one EMF document to a sink) against
  the bare handler, both doing the same counting-free work.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx
from fastapi import FastAPI

from app.observability import install, logs
from core import lambda_env
from lambdas.common import observability

CONCURRENCY = 8
REQUESTS = 2000
ROUNDS = 5
LOG_LINES = 20_000
INVOCATIONS = 20_000


def small_app(observed: bool) -> FastAPI:
    app = FastAPI()
    if observed:
        install(app)

    @app.get("/validations/{validation_id}")
    async def one(validation_id: str) -> dict[str, Any]:
        return {"id": validation_id, "status": "RUNNING", "progress": {"total": 3, "succeeded": 1}}

    return app


async def drive(app: FastAPI) -> float:
    """Requests per second through the app itself (ASGI, no sockets: the client and uvicorn
    would dominate), CONCURRENCY at a time."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=30) as client:
        queue = iter(range(REQUESTS))

        async def worker() -> None:
            for i in queue:
                answer = await client.get(f"/validations/v{i}")
                assert answer.status_code == 200

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return REQUESTS / (time.perf_counter() - started)


def requests_per_second() -> tuple[float, float]:
    """(bare, observed) medians over alternating rounds (the machine is shared and noisy)."""
    apps = {observed: small_app(observed) for observed in (False, True)}
    results: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(ROUNDS):
        for observed, app in apps.items():
            results[observed].append(asyncio.run(drive(app)))
    return statistics.median(results[False]), statistics.median(results[True])


def per_call_seconds(call: Callable[[], Any], times: int) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(times):
            call()
        best = min(best, (time.perf_counter() - started) / times)
    return best


def log_line_seconds() -> tuple[float, float]:
    record = logging.LogRecord("app.validations", logging.INFO, "service.py", 1, "read %s", ("v1",), None)
    text = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    json_formatter = logs.JsonFormatter()
    logs.bind(request_id="0123456789abcdef0123456789abcdef", validation_id="v1")
    try:
        return per_call_seconds(lambda: text.format(record), LOG_LINES), per_call_seconds(
            lambda: json_formatter.format(record), LOG_LINES
        )
    finally:
        logs.clear()


class _Context:
    function_name = "bench-validate-part"
    aws_request_id = "bench"


def invocation_seconds() -> tuple[float, float]:
    event = {"validation_id": "v1", "run": 1, "parts": {"first": "000000#0000", "last": "000000#0003"}}

    def handler(event: dict[str, Any], context: Any) -> int:
        return len(event)

    def counting(event: dict[str, Any], context: Any) -> int:
        observability.count("ModelCalls")
        observability.count("PromptTokens", 1500)
        return len(event)

    wrapped = observability.observed(counting)
    remove = observability.add_sink("bench-observability", lambda document: None)
    token = lambda_env.use({"POWERTOOLS_SERVICE_NAME": "bench-observability"})
    try:
        return per_call_seconds(lambda: handler(event, _Context()), INVOCATIONS), per_call_seconds(
            lambda: wrapped(event, _Context()), INVOCATIONS
        )
    finally:
        lambda_env.reset(token)
        remove()


def main() -> None:
    bare_rps, observed_rps = requests_per_second()
    text_s, json_s = log_line_seconds()
    bare_s, wrapped_s = invocation_seconds()
    rows = [
        ("API requests/s through the ASGI app, `GET /validations/{id}`-shaped", bare_rps, observed_rps, "{:.0f}"),
        ("one log line, µs (stdlib text vs JSON with the ids)", text_s * 1e6, json_s * 1e6, "{:.1f}"),
        ("one Lambda invocation, µs (bare vs `@observed`, one EMF document)", bare_s * 1e6, wrapped_s * 1e6, "{:.1f}"),
    ]
    print(f"\n## Observability overhead ({CONCURRENCY} concurrent requests; medians or bests of {ROUNDS} rounds)")
    print("| measure | without | with | with ÷ without |")
    print("|---|---:|---:|---:|")
    for label, without, with_, shape in rows:
        print(f"| {label} | {shape.format(without)} | {shape.format(with_)} | {with_ / without:.2f} |")


if __name__ == "__main__":
    main()

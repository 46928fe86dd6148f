"""A whole local run as `make run` serves it (`python -m app`): its logs are JSON lines tied
together by request and validation ids, an expected condition (a validation whose calls
wait for its only call slot) is one INFO line without a traceback, and /metrics on its
own port counts what happened.
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from local.simulator.server import SimulatorServer
from tests.servers import free_port, process
from tests.support.stack import HeldCalls, wait_for

pytestmark = pytest.mark.stack  # a whole run with servers of its own
# At a cap of two the Map is two wide: 12 one-part files make more than one inline item, so the
# Distributed Map (`INLINE_MAP_MAX_ITEMS` 1), two children of six parts.
FILES = 12


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, labels), parsed with prometheus-client's own parser."""
    families = text_string_to_metric_families(httpx.get(url, timeout=10).text)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def _sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.mark.slow(15)
def test_a_contended_run_logs_json_lines_without_tracebacks_and_metrics_count_what_happened(
    simulator: SimulatorServer, hold_calls: Callable[[int], HeldCalls]
) -> None:
    held = hold_calls(0)  # every model call waits at the simulator until released
    port, metrics_port = free_port(), free_port()
    base, metrics = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
    env = {
        "PORT": str(port),
        "METRICS_PORT": str(metrics_port),
        "METRICS_CACHE_SECONDS": "0",
        "ADMIN_API_KEY": "k",
        "OPENAI_BASE_URL": simulator.base_url,
        "OPENAI_MODEL": "simulator",
        "SFN_RETRY_INTERVAL_SECONDS": "1",
        # A validator gives up waiting for a call slot after 1 s (CapacityUnavailable) and
        # Step Functions retries it (the Lambdas read their settings from the process in local mode).
        "CAPACITY_WAIT_SECONDS": "1",
        "INLINE_MAP_MAX_ITEMS": "1",
        "CONFIG_CACHE_SECONDS": "0",  # a PATCH of max-parallelism reaches the next read of it
    }
    headers = {"Authorization": "Bearer k"}
    gets = 0
    with tempfile.TemporaryFile() as stderr:
        with (
            process(["-m", "app"], f"{base}/healthz", env=env, stderr_to=stderr),
            httpx.Client(base_url=base, headers=headers, timeout=30) as api,
        ):
            assert api.patch("/admin/parallelism", json={"max_parallelism": 2}).status_code == 200
            created = api.post(
                "/validations",
                json={
                    "documents": [{"name": f"f{i}.txt", "content": "one\n"} for i in range(FILES - 1)]
                    + [{"name": "b.txt", "content": "a secret\n"}],
                    "rules": ['must not contain "secret"'],
                },
                headers={"X-Request-ID": "submit-1"},
            )
            assert created.status_code == 202, created.text
            assert created.headers["X-Request-ID"] == "submit-1"  # accepted and echoed
            vid = created.json()["id"]

            # Each child's call is held at the simulator; the cap goes down to one. The child that
            # held the slot above the cap gives it up after its call and waits for the other's,
            # again and again (CapacityUnavailable, retried), until that call is released. Which
            # slot is above the cap is the governor's choice: calls are released one at a time,
            # the oldest first, until one child waits.
            wait_for(lambda: held.waiting == 2, what="both children's calls held")
            assert api.patch("/admin/parallelism", json={"max_parallelism": 1}).status_code == 200

            def next_step(arrived: int) -> str | None:
                if _sample(_scrape(metrics), "validation_capacity_unavailable_total") >= 1:
                    return "waited"
                return "held" if held.arrived > arrived else None

            for _ in range(FILES):
                arrived = held.arrived
                held.release_one()
                step = wait_for(functools.partial(next_step, arrived), timeout=60, what="a wait, or the next call held")
                if step == "waited":
                    break
            during = _scrape(metrics)
            assert _sample(during, "validations", status="RUNNING") == 1
            assert _sample(during, "governor_calls_in_flight") == 1
            held.release()

            def ended() -> dict[str, Any] | None:
                nonlocal gets
                gets += 1
                answer = api.get(f"/validations/{vid}")
                assert answer.headers["X-Request-ID"]  # generated when absent
                return answer.json() if answer.json()["status"] in ("SUCCEEDED", "FAILED") else None

            done = wait_for(ended, timeout=90, interval=0.2, what="the validation to end")
            after = _scrape(metrics)
        log = _read(stderr)  # the whole run's, the process has ended
    assert done["status"] == "SUCCEEDED"

    # /metrics counted what happened.
    stats = simulator.stats
    assert _sample(after, "validation_model_calls_total") == stats.part_calls + stats.combine_calls == FILES
    tokens = _sample(after, "validation_prompt_tokens_total") + _sample(after, "validation_completion_tokens_total")
    assert tokens == stats.billed_tokens
    assert (
        _sample(after, "http_requests_total", method="GET", route="/validations/{validation_id}", status="200") == gets
    )
    assert _sample(after, "http_requests_total", method="POST", route="/validations", status="202") == 1
    assert _sample(after, "validations", status="RUNNING") == 0
    assert _sample(after, "validation_succeeded_total") == 1
    waits = _sample(after, "validation_capacity_unavailable_total")
    assert _sample(after, "validation_task_retries_total") == waits  # the only retried error
    assert _sample(after, "validation_lambda_errors_total") == 0

    # Every line of the run's log is JSON; not one carries a traceback.
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert [r for r in records if _traceback_in(r) or r["level"] in ("ERROR", "CRITICAL")] == []
    # Each CapacityUnavailable is one INFO line, tied to its validation, run and part.
    capacity = [r for r in records if str(r["message"]).startswith("CapacityUnavailable")]
    assert len(capacity) == waits
    assert {(r["level"], r["validation_id"], r["run"], r["function_name"]) for r in capacity} == {
        ("INFO", vid, 1, "validation-validate-part")
    }
    assert all(r["part_range"] and isinstance(r["cold_start"], bool) for r in capacity)
    # Every Lambda line names the validation; every access line of it, its request.
    lambda_lines = [r for r in records if "function_name" in r]
    assert lambda_lines and all(r["validation_id"] == vid for r in lambda_lines)
    access = [r for r in records if r.get("name") == "uvicorn.access" and r["path"].startswith(f"/validations/{vid}")]
    assert len(access) == gets
    assert all(r["validation_id"] == vid and r["request_id"] and r["status"] == 200 for r in access)
    submitted = [r for r in records if r.get("request_id") == "submit-1"]
    assert submitted and all(r["validation_id"] == vid for r in submitted)


def _traceback_in(record: dict[str, Any]) -> bool:
    """A traceback as a field (logging's exc_info) or as text in the message."""
    message = str(record.get("message"))
    return "exception" in record or "Traceback (most recent call last)" in message or '\n  File "' in message


def _read(file: Any) -> str:
    file.seek(0)
    return file.read().decode()

"""A validation past the inline Map's limits, validated by the Distributed Map over part ranges
read from S3 (core/part_ranges.py), with the limits set low so that a few hundred parts reach it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from app.settings import Settings
from core.part_ranges import manifest_key
from local.simulator.server import SimulatorServer
from tests.events.sse import Message, parse
from tests.support.stack import (
    Aws,
    HeldCalls,
    MakeApi,
    all_results,
    lines_document,
    set_parallelism,
    wait_for,
    wait_for_status,
)

NO_SECRET = {"id": "no-secret", "text": 'The file must not contain "secret".'}
PARTS_PER_ITEM = 3
INLINE_MAP_MAX_ITEMS = 20


def _submit(api: Any, document: str) -> dict[str, Any]:
    """One file, every part asked (no reuse of the other run's verdicts)."""
    body = {"documents": [{"name": "big.log", "content": document}], "rules": [NO_SECRET], "reuse": False}
    answer = api.post("/validations", json=body)
    assert answer.status_code == 202, answer.text
    created: dict[str, Any] = answer.json()
    return created


def _history(aws: Aws, settings: Settings, validation_id: str, run: int) -> list[dict[str, Any]]:
    machine = aws.machine_arn(settings.state_machine_name)
    name = validation_id if run == 1 else f"{validation_id}-r{run}"
    sfn = aws.client("stepfunctions")
    executions = sfn.list_executions(stateMachineArn=machine, maxResults=1000)["executions"]
    (arn,) = [e["executionArn"] for e in executions if e["name"] == name]
    pages = sfn.get_paginator("get_execution_history").paginate(executionArn=arn, PaginationConfig={"PageSize": 1000})
    return [event for page in pages for event in page["events"]]


@pytest.mark.slow(60)
def test_a_validation_past_the_inline_maps_limits_survives_a_cancel_and_a_retry_on_the_distributed_map(
    make_api: MakeApi,
    aws: Aws,
    settings: Settings,
    simulator: SimulatorServer,
    hold_calls: Callable[[int], HeldCalls],
) -> None:
    api = make_api(
        part_max_tokens=100,
        inline_map_max_items=INLINE_MAP_MAX_ITEMS,
        parts_per_item=PARTS_PER_ITEM,
        cancel_settle_seconds=0,
        # The reach is the cap (one call per invocation, items as planned), so that the retry's
        # hundreds of pending parts are past the inline Map's limits too, as the first run's are.
        map_concurrency_ceiling=4,
    )
    set_parallelism(aws, settings, 4)
    document = lines_document(700, marker_every=97)
    held = hold_calls(40)  # the first 40 calls answer, then every call waits until released
    created = _submit(api, document)
    vid, total = created["id"], created["progress"]["total"]
    assert total > PARTS_PER_ITEM * INLINE_MAP_MAX_ITEMS  # more than the inline Map may hold
    wait_for(lambda: held.waiting == 4, what="four calls held mid-call after the first 40")

    assert api.delete(f"/validations/{vid}").status_code == 202
    held.release()  # the calls in flight at the stop answer now
    cancelled = wait_for_status(api, vid, statuses=("CANCELLED",))
    done_before = cancelled["progress"]["succeeded"]
    assert 40 <= done_before < total
    assert held.arrived == 44  # no call started after the stop

    retried = api.post(f"/validations/{vid}/retry")
    assert retried.status_code == 202, retried.text
    run = retried.json()["run"]
    done = wait_for_status(api, vid, timeout=300)

    assert done["status"] == "SUCCEEDED", done
    assert done["progress"] == {"total": total, "succeeded": total, "failed": 0, "pending": 0}
    assert simulator.stats.part_calls == total  # every part asked once: the retry skipped the settled ones
    # The event stream tells both runs as on the inline path: replayed from the start, then `end`.
    messages: list[Message] = []
    with api.stream("GET", f"/validations/{vid}/events") as stream:
        assert stream.status_code == 200
        for item in parse(stream.iter_lines()):
            if isinstance(item, Message):
                messages.append(item)
                if item.event == "end":
                    break
    statuses = [m.data["status"] for m in messages if m.event == "status"]
    assert statuses == ["RUNNING", "CANCELLED", "RUNNING", "SUCCEEDED"], statuses
    succeeded = [m.data["succeeded"] for m in messages if m.event == "progress"]
    assert succeeded == sorted(succeeded) and succeeded[-1] == total  # never backwards, across the retry
    assert [m.data["file"] for m in messages if m.event == "result"] == ["big.log"]
    assert messages[-1].event == "end" and messages[-1].data == {"status": "SUCCEEDED"}
    ids = [int(m.id or 0) for m in messages[:-1]]
    assert ids == list(range(1, len(ids) + 1))  # no gap, no duplicate
    # Both runs went through the Distributed Map, its items read from the manifest in S3.
    for r in (1, run):
        history = _history(aws, settings, vid, r)
        types = [e["type"] for e in history]
        assert types.count("MapRunStarted") == 1
        # No part's item in the parent's history: only the combine step's one file, once it runs.
        assert types.count("MapIterationStarted") == (1 if r == run else 0)
        assert len(history) < 100  # a few events per state, whatever the number of part ranges
    manifest = json.loads(
        aws.client("s3").get_object(Bucket=settings.bucket, Key=manifest_key(vid, run))["Body"].read()
    )
    assert len(manifest) > 0 and all(set(item) == {"first", "last"} for item in manifest)
    assert len(manifest) >= (total - done_before) / PARTS_PER_ITEM

    # The same file through the inline Map: the same verdicts.
    inline_api = make_api(part_max_tokens=100)
    inline = _submit(inline_api, document)
    inline_done = wait_for_status(inline_api, inline["id"], timeout=300)
    assert inline_done["status"] == "SUCCEEDED"
    assert "MapRunStarted" not in [e["type"] for e in _history(aws, settings, inline["id"], 1)]
    (distributed_result,) = all_results(api, vid)
    (inline_result,) = all_results(inline_api, inline["id"])
    assert distributed_result["rules"] == inline_result["rules"]
    assert [f["line"] for f in distributed_result["rules"][0]["findings"]] == list(range(97, 701, 97))

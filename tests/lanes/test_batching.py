"""The batch lane's rules without I/O (core/batching.py)."""

from __future__ import annotations

import json

import pytest

from core.batching import Filling, Limits, custom_id, next_wait, part_of, read_results, request_line, summary


def test_a_custom_id_carries_the_part_and_its_prompts_nonce_back() -> None:
    assert part_of(custom_id("00003-000012", "ab12")) == ("00003-000012", "ab12")
    with pytest.raises(ValueError):
        part_of("someone-elses-id")
    line = json.loads(request_line("00000-000000/n", {"model": "m"}))
    assert line == {
        "custom_id": "00000-000000/n",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m"},
    }


def test_a_batch_fills_until_a_limit_and_a_request_above_the_queue_waits_unless_the_queue_is_empty() -> None:
    filling = Filling(Limits(max_requests=2, max_bytes=100, max_tokens=50))
    assert filling.fits(40, 20)
    filling.add(40, 20)
    assert filling.fits(40, 20) and not filling.fits(70, 20) and not filling.fits(40, 31)
    filling.add(40, 20)
    assert not filling.fits(1, 1)  # two requests: the batch is full
    assert not Filling(Limits(10, 100, 50)).fits(10, 60)  # other batches hold the queue: wait
    assert Filling(Limits(10, 100, 50), queue_empty=True).fits(10, 60)  # alone in an empty queue


def test_the_poll_spacing_doubles_up_to_its_cap() -> None:
    waits = [next_wait(None, 30, 600)]
    for _ in range(6):
        waits.append(next_wait(waits[-1], 30, 600))
    assert waits == [30, 60, 120, 240, 480, 600, 600]


def test_results_are_read_by_part_and_a_malformed_line_is_counted() -> None:
    ok = {"custom_id": "00000-000000/n1", "response": {"status_code": 200, "body": {"choices": []}}, "error": None}
    failed = {
        "custom_id": "00001-000000/n2",
        "response": {"status_code": 500, "body": {"error": {"message": "boom"}}},
        "error": None,
    }
    expired = {"custom_id": "00002-000000/n3", "response": None, "error": {"code": "batch_expired", "message": "late"}}
    content = "\n".join([json.dumps(ok), json.dumps(ok)[:20], json.dumps(failed), "", json.dumps(expired)]).encode()

    read = read_results(content)

    assert [(a.part_id, a.nonce) for a in read.answered] == [("00000-000000", "n1")]
    assert [(u.part_id, u.code) for u in read.unanswered] == [
        ("00001-000000", "status_500"),
        ("00002-000000", "batch_expired"),
    ]
    assert read.malformed == 1


def test_a_validation_shows_its_least_advanced_open_batch_and_the_counts_of_all() -> None:
    batches = [
        {"status": "completed", "request_counts": {"total": 2, "completed": 2, "failed": 0}},
        {"status": "finalizing", "request_counts": {"total": 3, "completed": 2, "failed": 1}},
        {"status": "in_progress", "request_counts": {"total": 3, "completed": 1, "failed": 0}},
    ]
    assert summary(batches) == {
        "status": "in_progress",
        "request_counts": {"total": 8, "completed": 5, "failed": 1},
        "batches": 3,
        "open": 2,
    }
    assert summary(batches[:1])["status"] == "completed"

"""`progress` events (core/events.progress_of): the counters, and parts settled per file for per-file progress."""

from __future__ import annotations

from core.events import progress_of


def test_progress_carries_counts_parallelism_and_parts_settled_per_file() -> None:
    record = {"total_parts": 5, "succeeded": 2, "failed": 1, "parallelism": 3, "file_settled": {"0": 2, "1": 1}}

    assert progress_of(record) == {
        "total": 5,
        "succeeded": 2,
        "failed": 1,
        "pending": 2,
        "parallelism": 3,
        "file_parts_settled": {"0": 2, "1": 1},
    }


def test_a_record_without_per_file_counts_gives_the_counts_alone() -> None:
    assert progress_of({"total_parts": 1, "succeeded": 0, "failed": 0}) == {
        "total": 1,
        "succeeded": 0,
        "failed": 0,
        "pending": 1,
    }

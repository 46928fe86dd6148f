"""Pure logic shared by the API and the Lambdas: batches and record keys."""

from __future__ import annotations

import json

from core.records import (
    MAX_MAP_ITEMS,
    batches,
    combine_node_id,
    file_batches,
    file_index_of,
    file_range,
    part_id,
    verdict_id,
)


def test_batches_stay_under_the_map_item_limit_and_cover_every_part() -> None:
    ids = [part_id(f, c) for f in range(100) for c in range(600)]  # 60,000 parts

    items = batches(ids)

    assert len(items) <= MAX_MAP_ITEMS
    assert len(json.dumps(items).encode()) < 256 * 1024
    assert items[0]["first"] == ids[0] and items[-1]["last"] == ids[-1]
    assert all(a["last"] < b["first"] for a, b in zip(items, items[1:], strict=False))
    assert batches(ids[:3]) == [{"first": i, "last": i} for i in ids[:3]]
    assert len(batches(ids[:160])) == 160  # one part per item while 40 iterations have 4 items each
    assert len(batches(ids[:500])) == 125  # then a few parts per item (fewer invocations, leases, transitions)
    assert len(batches(ids[:1200])) == 300


def test_file_ranges_select_one_files_parts() -> None:
    first, last = file_range(3, 3)
    assert first <= part_id(3, 0) <= part_id(3, 999_999) <= last
    assert not first <= part_id(4, 0) <= last
    assert file_index_of(part_id(42, 7)) == 42


def test_verdict_and_combine_keys_sort_after_every_part_so_part_queries_never_see_them() -> None:
    first, last = file_range(0, 99_999)
    for key in (verdict_id(3), combine_node_id(3, 1, 0)):
        assert not first <= key <= last
    assert verdict_id(2) < verdict_id(10)


def test_file_batches_cover_every_file_to_combine_within_the_map_limit() -> None:
    files = list(range(0, 5000, 2))
    items = file_batches(files)
    assert len(items) <= MAX_MAP_ITEMS
    assert items[0]["first"] == 0 and items[-1]["last"] == files[-1]
    assert file_batches([3, 7]) == [{"first": 3, "last": 3}, {"first": 7, "last": 7}]
    assert file_batches([]) == []

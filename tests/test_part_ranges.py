"""core/part_ranges.py: the Distributed Map's items, and the state machine's two parts' Maps."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from core import headroom, part_ranges
from core.records import batches, part_id
from local.aws.provision import render_template

ASL = Path(__file__).resolve().parents[1] / "infra" / "terraform" / "statemachine" / "validation.asl.json"


def _ids(items: list[dict[str, str]], parts_per_file: list[int]) -> list[str]:
    """Every part id the items cover, in order."""
    return [
        part_id(f, p)
        for item in items
        for f, lo, hi in part_ranges._segments(item["first"], item["last"], parts_per_file)
        for p in range(lo, hi + 1)
    ]


def test_ranges_across_files_are_counted_from_each_files_parts_skipping_files_without_parts() -> None:
    parts_per_file = [3, 0, 10, 5]  # file 1 was rejected: no parts
    ranges = [{"first": "00000-000001", "last": "00002-000004"}, {"first": "00003-000000", "last": "00003-000004"}]

    assert part_ranges.count(ranges, parts_per_file) == [2 + 5, 5]


def test_split_cuts_ranges_into_items_of_at_most_the_size_covering_every_part_once() -> None:
    parts_per_file = [3, 0, 10, 5]
    ranges = [{"first": "00000-000001", "last": "00002-000004"}, {"first": "00003-000000", "last": "00003-000004"}]

    items = part_ranges.split(ranges, parts_per_file, 4)

    assert items == [
        {"first": "00000-000001", "last": "00002-000001"},  # an item may span files
        {"first": "00002-000002", "last": "00002-000004"},  # never two given ranges
        {"first": "00003-000000", "last": "00003-000003"},
        {"first": "00003-000004", "last": "00003-000004"},
    ]
    assert _ids(items, parts_per_file) == _ids(ranges, parts_per_file)


def test_a_gibibyte_log_becomes_items_of_a_few_parts_in_a_manifest_of_a_few_megabytes() -> None:
    parts_per_file = [344_000]
    given = batches([part_id(0, p) for p in range(344_000)])  # the execution's input: 1,000 ranges

    items = part_ranges.split(given, parts_per_file, 8)

    assert len(given) == 1000 and max(part_ranges.count(given, parts_per_file)) == 344
    assert len(items) == 43_000 and max(part_ranges.count(items, parts_per_file)) == 8
    manifest = json.dumps(items, separators=(",", ":")).encode()
    assert len(manifest) < 2 * 1024 * 1024
    assert max(len(json.dumps(item)) for item in items) < 64  # a child's item, far below 256 KiB


@settings(max_examples=300, deadline=None)
@given(
    parts_per_file=st.lists(st.integers(0, 400), min_size=1, max_size=5),
    width=st.integers(1, 40),
    k=st.integers(1, headroom.MAX_CALLS),
    parts_per_item=st.integers(1, 10),
)
def test_a_distributed_maps_shape_never_starts_a_child_only_to_wait_and_keeps_its_reach(
    parts_per_file: list[int], width: int, k: int, parts_per_item: int
) -> None:
    ids = [part_id(f, p) for f, n in enumerate(parts_per_file) for p in range(n)]
    ranges = batches(ids, max_items=7) if ids else []

    shaped, items = part_ranges.shape(ranges, parts_per_file, width, k, parts_per_item)

    assert _ids(items, parts_per_file) == ids  # every part once, in order
    counts = part_ranges.count(items, parts_per_file)
    assert max(counts, default=0) <= parts_per_item * k  # rounds of k calls, as the inline Map's items
    assert shaped.map_concurrency <= width  # no wider than the planned parallelism
    if not ids:
        return
    # As wide as planned, or as the items when fewer: every child of the width has an item.
    assert shaped.map_concurrency == min(width, len(items))
    # The reach is kept (up to what an invocation may run): a raised cap reaches the children as workers.
    reach = shaped.map_concurrency * shaped.calls_per_invocation
    assert reach >= min(width * k, shaped.map_concurrency * headroom.MAX_CALLS)
    assert shaped.calls_per_invocation <= headroom.MAX_CALLS
    # No item longer than makes one per child of the width (or than k parts, which one child runs at once).
    assert max(counts) <= max(k, math.ceil(len(ids) / width))


def test_the_inline_map_holds_up_to_its_item_count_and_item_length() -> None:
    assert not part_ranges.distributed([8] * 100, max_items=100, parts_per_item=8)
    assert part_ranges.distributed([1] * 101, max_items=100, parts_per_item=8)
    assert part_ranges.distributed([8] * 99 + [9], max_items=100, parts_per_item=8)


def test_both_parts_maps_run_the_same_states_one_inline_one_distributed_over_the_manifest() -> None:
    template = ASL.read_text()
    states = json.loads(render_template(template, dict.fromkeys(re.findall(r"\$\{(\w+)\}", template), 1)))["States"]
    inline, distributed = states["ValidateParts"], states["ValidatePartRanges"]

    assert inline["ItemProcessor"]["States"] == distributed["ItemProcessor"]["States"]
    assert inline["ItemSelector"] == distributed["ItemSelector"]
    assert distributed["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert distributed["ItemReader"]["Parameters"] == {
        "Bucket.$": "$.plan.manifest.bucket",
        "Key.$": "$.plan.manifest.key",
    }
    assert distributed["ToleratedFailurePercentage"] == 0  # a failed child: its part was never recorded
    assert inline["ResultPath"] is None and distributed["ResultPath"] is None
    assert inline["Next"] == distributed["Next"] == "CombineFiles"
    assert states["PartsMap"]["Choices"][0]["Next"] == "ValidatePartRanges"
    assert states["PartsMap"]["Default"] == "ValidateParts"

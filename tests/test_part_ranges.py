"""core/part_ranges.py: the Distributed Map's items, and the state machine's two parts' Maps."""

from __future__ import annotations

import json
import re
from pathlib import Path

from core import part_ranges
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

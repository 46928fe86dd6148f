"""The parts' Map items of a validation too large for the inline Map: ranges of part ids, read
from S3 by a Distributed Map (docs/architecture/state-machine.md#the-distributed-path).

An inline Map's items travel in the execution's state and its iterations write the parent's
history (~7 events an item, ~100 when an item spends every retry), so it holds at most
`inline_map_max_items` items; and one item is one validator invocation, which must finish
within the Lambda timeout, so it holds at most `parts_per_item` parts per call it runs at once
(rounds of ~3 s calls). A validation whose inline items break either bound is validated by a
Distributed Map instead: its items are written to a JSON manifest in the uploads bucket, each
a range {first, last} of at most `parts_per_item` rounds of k part ids (`shape`), which the
validator resolves with
the Query it uses for any batch (a range stays ~45 bytes whatever it holds; a list of ids
would grow with the item).

Part ids are `ffff-pppppp` (core/records.part_id): sorted by file, then position. A range
may span files; its parts are counted from each file's number of parts, never read.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

from core import headroom
from core.records import file_index_of, part_id, part_index_of


def _segments(first: str, last: str, parts_per_file: Sequence[int]) -> Iterator[tuple[int, int, int]]:
    """(file, first part, last part) of each file a range {first, last} covers, non-empty ones only."""
    first_file, last_file = file_index_of(first), file_index_of(last)
    for f in range(first_file, min(last_file, len(parts_per_file) - 1) + 1):
        lo = part_index_of(first) if f == first_file else 0
        hi = min(part_index_of(last) if f == last_file else parts_per_file[f] - 1, parts_per_file[f] - 1)
        if lo <= hi:
            yield f, lo, hi


def count(ranges: Sequence[Mapping[str, str]], parts_per_file: Sequence[int]) -> list[int]:
    """The part ids each range covers."""
    return [sum(hi - lo + 1 for _, lo, hi in _segments(r["first"], r["last"], parts_per_file)) for r in ranges]


def split(ranges: Sequence[Mapping[str, str]], parts_per_file: Sequence[int], size: int) -> list[dict[str, str]]:
    """The ranges cut into ranges of at most `size` part ids each, in order (a cut range never
    spans two given ranges: what lies between them is not to be validated)."""
    size = max(1, size)
    items: list[dict[str, str]] = []
    for r in ranges:
        start, end, held = "", "", 0  # the range being filled: its first and last ids, its parts
        for f, lo, hi in _segments(r["first"], r["last"], parts_per_file):
            p = lo
            while p <= hi:
                take = min(size - held, hi - p + 1)
                start = start or part_id(f, p)
                end, held, p = part_id(f, p + take - 1), held + take, p + take
                if held == size:
                    items.append({"first": start, "last": end})
                    start, held = "", 0
        if held:
            items.append({"first": start, "last": end})
    return items


def distributed(item_parts: Sequence[int], *, max_items: int, parts_per_item: int) -> bool:
    """Whether the inline Map cannot hold these items (their parts counted by `count`): too many
    for the parent's history, or one too long for an invocation (`parts_per_item` already
    multiplied by the calls an invocation runs at once)."""
    return len(item_parts) > max_items or max(item_parts, default=0) > parts_per_item


def shape(
    ranges: Sequence[Mapping[str, str]], parts_per_file: Sequence[int], width: int, k: int, parts_per_item: int
) -> tuple[headroom.Shape, list[dict[str, str]]]:
    """The Distributed Map shaped as the inline Map would be (core/headroom.py): no wider than
    `width` (the planned parallelism), so no child at the planned cap starts only to wait for a
    call slot, and `k` calls per child, so a raised cap reaches running children as workers.
    Items hold at most `parts_per_item` rounds of k parts, and no more than makes one item per
    child of the width (each at least k parts); when there are fewer items than the width, the
    Map is as wide as the items and each child runs more calls, for the same reach. Returns the
    Map's shape (its items are never merged: `group` 1) and the items."""
    width, k = max(1, width), max(1, k)
    size = min(parts_per_item * k, math.ceil(sum(count(ranges, parts_per_file)) / width))
    items = split(ranges, parts_per_file, max(k, size))
    if 0 < len(items) < width:
        k = min(headroom.MAX_CALLS, math.ceil(width * k / len(items)))
        width = len(items)
    return headroom.Shape(width, k, 1), items


def manifest_key(validation_id: str, run: int) -> str:
    """Beside the validation's files, so it expires with them (the bucket's lifecycle)."""
    return f"validations/{validation_id}/map-items/run-{run:04d}.json"

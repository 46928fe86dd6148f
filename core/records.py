"""Names and keys shared by the API and the Lambdas: statuses, part ids, batch ranges."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from core.dynamo import typed


class ValidationStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"


TERMINAL = frozenset({ValidationStatus.SUCCEEDED, ValidationStatus.FAILED, ValidationStatus.CANCELLED})


class PartStatus(StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


def part_id(file_index: int, part_index: int) -> str:
    """Sortable by file then position, so one file's parts are one key range."""
    return f"{file_index:05d}-{part_index:06d}"


def file_range(first_file: int, last_file: int) -> tuple[str, str]:
    """The part-id range (inclusive) covering files first..last."""
    return f"{first_file:05d}-", f"{last_file:05d}-~"


def parts_query(parts_table: str, validation_id: str, first: str, last: str) -> dict[str, Any]:
    """The Query of a validation's parts with ids first..last (core/steps.query_all pages it)."""
    return {
        "TableName": parts_table,
        "KeyConditionExpression": "validation_id = :v AND part_id BETWEEN :first AND :last",
        "ExpressionAttributeValues": typed({":v": validation_id, ":first": first, ":last": last}),
        "ConsistentRead": True,
    }


def file_index_of(part: str) -> int:
    return int(part.split("-", 1)[0])


# Step Functions: an inline Map writes ~7 history events per iteration and the limit is
# 25,000 per execution, so a validation never has more than this many Map items; parts
# are grouped into contiguous id ranges when there are more.
MAX_MAP_ITEMS = 1000


# Below that, parts are still grouped a few per item once there are more than 4 items per
# possible Map iteration (an inline Map runs at most 40 at once): one invocation, call slot
# and token lease then serve several parts, and Step Functions records (and bills) fewer
# state transitions, while 40 iterations still have work.
GROUP_UP_TO = 4
ITEMS_FOR_FULL_MAP = 40 * GROUP_UP_TO


def batches(part_ids: list[str], max_items: int = MAX_MAP_ITEMS) -> list[dict[str, str]]:
    """Contiguous ranges {first, last} of sorted part ids, at most `max_items` of them."""
    ordered = sorted(part_ids)
    if not ordered:
        return []
    size = max(-(-len(ordered) // max_items), min(GROUP_UP_TO, -(-len(ordered) // ITEMS_FOR_FULL_MAP)))
    return [
        {"first": group[0], "last": group[-1]}
        for group in (ordered[i : i + size] for i in range(0, len(ordered), size))
    ]


# --- whole-file verdicts ------------------------------------------------------------------------
# A multi-part file's verdict and the intermediate reports of its combine tree live in the
# parts table beside its parts, under keys that sort after every part id (digits < "c" < "v"),
# so the file-range queries of parts never see them.


def verdict_id(file_index: int) -> str:
    return f"verdict#{file_index:05d}"


def verdict_range(first_file: int, last_file: int) -> tuple[str, str]:
    return verdict_id(first_file), verdict_id(last_file)


def combine_node_id(file_index: int, level: int, index: int) -> str:
    """An intermediate report of a file's combine tree (level 1 combines parts, level 2 those, ...)."""
    return f"combine#{file_index:05d}#{level:02d}#{index:05d}"


def part_index_of(part: str) -> int:
    return int(part.split("-", 1)[1])


def file_batches(file_indexes: list[int], max_items: int = MAX_MAP_ITEMS) -> list[dict[str, int]]:
    """Contiguous ranges {first, last} of the files to combine, at most `max_items` of them.

    Ranges may include single-part files between multi-part ones: the combine step skips them."""
    ordered = sorted(file_indexes)
    if not ordered:
        return []
    size = -(-len(ordered) // max_items)
    return [
        {"first": group[0], "last": group[-1]}
        for group in (ordered[i : i + size] for i in range(0, len(ordered), size))
    ]

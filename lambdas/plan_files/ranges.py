"""`PlanFile` for a line-oriented file (text, JSONL, CSV, TSV): read in ranges of
`plan_range_bytes` (ranged GETs IfMatch the ETag confirmed at upload), never whole, over as
many invocations as it takes. Memory holds one range (and a line longer than one, up to
`plan_max_line_bytes`); time is bounded by stopping, with a cursor, when the invocation's
remaining time nears `reserve_millis` or it has read `plan_invocation_bytes`.

Two passes, so that a file refused by a check gets no part records:
1. check: the text checks (core/text.TextScan), the CSV/TSV sniff of the first records
   (core/parts.TableSniff), the longest line, and the declared SHA-256. hashlib's state cannot
   be saved, so a file with a declared SHA-256 is checked in one invocation (reading is fast
   next to splitting: seconds per GiB); one too slow for that is refused, not half-checked.
2. split: core/part_stream.StreamSplitter, whose parts are `split_file`'s; each range's
   finished parts are written as they come (their ids are the file index and the position,
   so an invocation run again writes the same records).

The cursor is the state's own payload (a few hundred bytes, far below Step Functions'
256 KiB): the invocation's answer carries it with `more`, and `PlanMore` sends it back. An
invocation retried with the same cursor plans the same ranges again.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from core import text
from core.part_stream import SplitState, StreamSplitter, whole_lines
from core.parts import TableSniff, suffix_kind
from core.planning import PartCosts
from lambdas.common.config import LambdaConfig
from lambdas.common.errors import FileChanged
from lambdas.common.stores import Store

log = logging.getLogger(__name__)

MIB = 1024 * 1024


class Refused(Exception):
    """The file fails a check: its `rejected` answer (type, detail)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.detail = kind, detail


@dataclass
class _Reader:
    """Ranged reads of one uploaded file within one invocation's limits."""

    store: Store
    config: LambdaConfig
    file: dict[str, Any]
    remaining_millis: Callable[[], int]
    read_bytes: int = 0

    @property
    def size(self) -> int:
        return int(self.file["size"])

    def read(self, start: int, end: int) -> bytes:
        name = self.file["name"]
        try:
            data, size = self.store.files.range(self.file["key"], start, end, self.file.get("etag"))
        except FileChanged as changed:
            after = "" if changed.gone else " after it was uploaded"
            raise Refused("file_changed", f"File {name!r} {changed}{after}.") from None
        if size != self.size or len(data) != end - start:
            raise Refused("file_changed", f"File {name!r} does not hold the bytes uploaded.")
        self.read_bytes += len(data)
        return data

    def spent(self) -> bool:
        """Stop here (and go on in another invocation)."""
        return (
            self.read_bytes >= self.config.plan_invocation_bytes or self.remaining_millis() < self.config.reserve_millis
        )


def new_cursor(config: LambdaConfig) -> dict[str, Any]:
    return {"pass": "check", "budget": config.part_max_tokens, "estimate": 0}


def plan_in_ranges(
    store: Store,
    config: LambdaConfig,
    validation_id: str,
    index: int,
    file: dict[str, Any],
    rules: list[dict[str, str]],
    expires_at: int,
    cursor: dict[str, Any],
    remaining_millis: Callable[[], int],
) -> dict[str, Any]:
    """The file planned further: `{"more": True, "cursor": ...}` to go on, `{"rejected": ...}`, or its plan."""
    reader = _Reader(store, config, file, remaining_millis)
    cursor = dict(cursor)
    try:
        if cursor["pass"] == "check" and not _check(reader, cursor):
            return {"more": True, "cursor": cursor}
        costs = PartCosts(validation_id, index, file["name"], file["key"], rules, config.completion_max_tokens)
        return _split(reader, cursor, costs, expires_at)
    except Refused as refused:
        return {"rejected": {"type": refused.kind, "detail": refused.detail}}


def _check(reader: _Reader, cursor: dict[str, Any]) -> bool:
    """The check pass from the cursor on; True when it is done (the cursor then starts the split)."""
    config, file, name = reader.config, reader.file, reader.file["name"]
    scan = text.TextScan(name, **cursor.get("scan", {}))
    sniff = TableSniff(**cursor["sniff"]) if "sniff" in cursor else TableSniff()
    line_bytes = int(cursor.get("line_bytes", 0))  # of the line the last range ended in
    max_line = max(config.plan_max_line_bytes, config.plan_range_bytes)
    long_line: int | None = cursor.get("long_line")
    digest = hashlib.sha256() if file.get("sha256") else None
    if digest is None:
        _check_name(name)
    failure: str | None = None
    offset = scan.offset
    while offset < reader.size or reader.size == 0:
        end = min(reader.size, offset + config.plan_range_bytes)
        data = reader.read(offset, end) if end > offset else b""
        final = end >= reader.size
        if failure is None:
            try:
                piece = scan.feed(data, final)
            except text.NotText as refused:
                if digest is None:  # UTF-8 is checked before anything but the digest
                    raise Refused("not_text", str(refused)) from None
                failure = str(refused)
            else:
                if not sniff.done:
                    sniff.feed(piece, final)
                long_line = long_line or _long_line(data[: scan.offset - offset], offset, line_bytes, max_line)
                line_bytes = _trailing_line(data[: scan.offset - offset], line_bytes)
        used = len(data) if failure is not None else scan.offset - offset
        if digest is not None:
            digest.update(memoryview(data)[:used])
        offset += used
        if final:
            break
        if digest is None and reader.spent():
            cursor.update(scan=_fields(scan), sniff=asdict(sniff), line_bytes=line_bytes, long_line=long_line)
            return False
        if digest is not None and reader.remaining_millis() < config.reserve_millis:
            raise Refused(
                "too_large",
                f"File {name!r} could not be checked against its declared SHA-256 within one invocation "
                f"({offset // MIB} of {reader.size // MIB} MiB read).",
            )
    if digest is not None and digest.hexdigest() != file["sha256"]:
        # A multipart upload's parts are checked by S3 one by one, the whole file only here.
        raise Refused("sha256_mismatch", f"File {name!r} does not match its declared SHA-256.")
    _check_name(name)
    if failure is not None:
        raise Refused("not_text", failure)
    try:
        scan.finish()
    except text.NotText as refused:
        raise Refused("not_text", str(refused)) from None
    if not scan.text_seen:
        raise Refused("empty", f"File {name!r} is empty: nothing to validate.")
    if long_line is not None:
        raise Refused(
            "line_too_long",
            f"File {name!r} has a line longer than {max_line // MIB} MiB (from byte {long_line}): "
            "a file this large is read in ranges of whole lines.",
        )
    kind = suffix_kind(name) or sniff.kind() or "text"
    split = SplitState(kind, int(cursor["budget"])).to_dict()  # the budget read when the plan began
    cursor.clear()
    cursor.update({"pass": "split", "estimate": 0, "split": split})
    return True


def _check_name(name: str) -> None:
    try:
        text.check_name(name)
    except text.NotText as refused:
        raise Refused("not_text", str(refused)) from None


def _fields(scan: text.TextScan) -> dict[str, Any]:
    values = asdict(scan)
    values.pop("name")
    return values


def _long_line(data: bytes, offset: int, line_bytes: int, max_line: int) -> int | None:
    """Where a line longer than `max_line` starts, if the one running into `data` is (lines wholly
    inside a range are shorter than a range, which `max_line` is not)."""
    breaks = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]
    first = min(breaks) if breaks else len(data)
    return offset - line_bytes if line_bytes + first > max_line else None


def _trailing_line(data: bytes, line_bytes: int) -> int:
    last = max(data.rfind(b"\n"), data.rfind(b"\r"))
    return line_bytes + len(data) if last < 0 else len(data) - last - 1


def _split(reader: _Reader, cursor: dict[str, Any], costs: PartCosts, expires_at: int) -> dict[str, Any]:
    """The split pass from the cursor on: each range's finished parts written; the plan at the end."""
    config, store = reader.config, reader.store
    splitter = StreamSplitter(SplitState.of(cursor["split"]))
    start, position = splitter.state.offset, splitter.state.done
    estimate = int(cursor["estimate"])
    offset = start
    while True:
        length = config.plan_range_bytes
        while True:  # a range of whole lines: grown while it holds none (a line longer than a range)
            end = min(reader.size, offset + length)
            data = reader.read(offset, end) if end > offset else b""
            at_end = end >= reader.size
            whole = whole_lines(data, at_end)
            if whole or at_end:
                break
            length *= 2
        spans = splitter.feed(data[:whole].decode("utf-8"), final=at_end)
        del data
        multi = not at_end or position + len(spans) > 1  # a part finished mid-file has a successor
        records = [costs.record(position + i, span, multi) for i, span in enumerate(spans)]
        store.parts.put_planned(records, expires_at)
        position += len(records)
        estimate += sum(int(r["estimate"]) for r in records)
        offset += whole
        if at_end:
            break
        if reader.spent() and splitter.state.offset > start:
            cursor.update(split=splitter.state.to_dict(), estimate=estimate)
            return {"more": True, "cursor": cursor}
    combine_calls, combine = costs.combine(position, splitter.state.budget)
    log.info("planned %s in ranges: %d parts, %d lines", costs.name, position, splitter.last_line)
    return {
        "parts": position,
        "kind": splitter.state.kind,
        "last_line": max(1, splitter.last_line),
        "combine_estimate": combine,
        "estimate": estimate + combine,
    }

"""A line-oriented file split range by range (core/part_stream.py), each range by a splitter
rebuilt from the last one's JSON state as a new invocation would, gives exactly the parts
`split_file` cuts from the whole file; its checks (core/text.TextScan) and its sniff
(core/parts.TableSniff), fed at any byte, answer what they answer for the whole file."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import text
from core.part_stream import SplitState, StreamSplitter, whole_lines
from core.parts import PartSpan, TableSniff, file_kind, split_file, suffix_kind
from tests.test_parts import ALPHABET, PROPERTY, csv_files, stored, texts

NAMES = st.sampled_from(["app.log", "notes.txt", "rows.csv", "rows.tsv", "events.jsonl", "README", "data.dat"])


def scanned(name: str, content: bytes, size: int) -> tuple[text.TextScan, TableSniff]:
    """The checks and the sniff over ranges of `size` bytes (cut anywhere, mid-character or mid-CRLF);
    4 bytes at least, as a UTF-8 character may take 4."""
    scan, sniff = text.TextScan(name), TableSniff()
    while True:
        end = scan.offset + size
        piece = scan.feed(content[scan.offset : end], final=end >= len(content))
        if not sniff.done:
            sniff.feed(piece, final=end >= len(content))
        if end >= len(content):
            return scan, sniff


def split_in_ranges(kind: str, content: bytes, budget: int, size: int) -> tuple[list[PartSpan], int, int]:
    """(parts, lines, invocations): ranges of whole lines (grown until one holds a line), a new
    splitter from the last one's JSON state as soon as that state moved on (as plan_files does)."""
    state, spans, invocations = SplitState(kind, budget), [], 0
    while True:
        splitter = StreamSplitter(SplitState.of(json.loads(json.dumps(state.to_dict()))))
        start = offset = state.offset
        invocations += 1
        while True:
            length = size
            while True:
                data = content[offset : offset + length]
                at_end = offset + length >= len(content)
                whole = whole_lines(data, at_end)
                if whole or at_end:
                    break
                length *= 2
            spans += splitter.feed(data[:whole].decode("utf-8"), final=at_end)
            offset += whole
            if at_end:
                return spans, splitter.last_line, invocations
            if splitter.state.offset > start:  # an open record held back is read again by the next one
                break
        state = splitter.state


def planned_in_ranges(name: str, content: bytes, budget: int, size: int) -> list[PartSpan]:
    _, sniff = scanned(name, content, size)
    kind = suffix_kind(name) or sniff.kind() or "text"
    spans, _, _ = split_in_ranges(kind, content, budget, size)
    return spans


@PROPERTY
@given(text_=texts(), bom=st.booleans(), budget=st.integers(12, 80), size=st.integers(4, 64), name=NAMES)
def test_text_split_in_ranges_is_split_whole(text_: str, bom: bool, budget: int, size: int, name: str) -> None:
    content = stored(text_, bom)
    assert planned_in_ranges(name, content, budget, size) == split_file(name, content, budget)


@PROPERTY
@given(
    csv=csv_files(),
    bom=st.booleans(),
    budget=st.integers(20, 120),
    size=st.integers(4, 64),
    name=st.sampled_from(["rows.csv", "rows.txt"]),
    tail=st.sampled_from(["", 'x,"open\nquote,\n', "a,b\n" * 3]),
)
def test_tables_split_in_ranges_are_split_whole(
    csv: tuple[str, list[str]], bom: bool, budget: int, size: int, name: str, tail: str
) -> None:
    """Records spanning lines, a header too costly to repeat, a quote that never closes."""
    content = stored(csv[0] + tail, bom)
    assert planned_in_ranges(name, content, budget, size) == split_file(name, content, budget)


@PROPERTY
@given(
    rows=st.lists(st.text(ALPHABET + "\n\r", max_size=30), min_size=1, max_size=14),
    delimiter=st.sampled_from(["\t", ","]),
    size=st.integers(4, 40),
)
def test_the_sniff_fed_at_any_byte_answers_as_for_the_whole_file(rows: list[str], delimiter: str, size: int) -> None:
    content = "\r\n".join(delimiter.join([r, r[::-1], "x"]) for r in rows).encode()
    _, sniff = scanned("rows.txt", content, size)
    assert (sniff.kind() or "text") == file_kind("rows.txt", content.decode())


@PROPERTY
@given(data=st.binary(max_size=300) | texts().map(str.encode), size=st.integers(4, 70_000), name=NAMES)
def test_the_text_checks_in_ranges_answer_as_on_the_whole_file(data: bytes, size: int, name: str) -> None:
    def whole() -> str:
        try:
            text.check(name, data)
        except text.NotText as refused:
            return str(refused)
        return f"blank: {text.blank(data)}"

    try:
        scan, _ = scanned(name, data, size)
        scan.finish()
        answer = f"blank: {not scan.text_seen}"
    except text.NotText as refused:
        answer = str(refused)
    assert answer == whole()


def test_a_log_read_in_many_small_ranges_keeps_its_parts_lines_and_long_lines() -> None:
    content = ("".join(f"line {i} " + ("w" * (i * 37 % 400)) + "\r\n" for i in range(300)) + "tail").encode()
    spans, lines, invocations = split_in_ranges("text", content, 60, 256)
    assert spans == split_file("app.log", content, 60)
    assert lines == 301 and invocations > 50


@pytest.mark.parametrize(("data", "at_end", "whole"), [(b"a\r", False, 0), (b"a\r\nb", False, 3), (b"a\rb", False, 2)])
def test_a_range_ends_at_its_last_whole_line_never_between_cr_and_lf(data: bytes, at_end: bool, whole: int) -> None:
    assert whole_lines(data, at_end) == whole

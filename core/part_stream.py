"""Split a line-oriented file (text, JSONL, CSV, TSV) fed in ranges of whole lines, into the
parts `core/parts.split_file` cuts from the whole file: the same units (lines, pieces of a
line too big for a part, CSV/TSV records with the header row as context), packed by the
same greedy packer, with the same tokens, lines and byte ranges.

An uploaded file of gigabytes cannot be held in memory, and planning one may take longer
than a Lambda invocation (lambdas/plan_files): the splitter holds one range of lines and the
record in progress, and `state()` is all it needs to go on in another invocation, in plain
numbers (a few hundred bytes of JSON): where to read next, the part being filled, the header.

Where it resumes: after the last line whose units went to the packer. A CSV/TSV record still
open (its quotes unbalanced, within a part's room) is not packed yet: the next invocation
reads it again from its first line. Once an open record outgrows a part's room it is split
by lines as `split_file` does (whether it closes or not, the result is the same), so the
record held back is never bigger than one part.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from core.lines import BOM, LINE_BREAK
from core.parts import Header, PartSpan, _byte_offsets, _Draft, _Index, _Packer, _Unit, prefix_tokens
from core.tokens import count_tokens

__all__ = ["STREAMED_KINDS", "SplitState", "StreamSplitter", "whole_lines"]

STREAMED_KINDS = frozenset({"text", "jsonl", "csv", "tsv"})
_TABLES = frozenset({"csv", "tsv"})
_CACHE_LINES = 65_536  # distinct lines whose counts are kept (repeated log lines are counted once)


def whole_lines(data: bytes | memoryview, at_end: bool) -> int:
    """How many of `data`'s first bytes are whole lines: up to its last LF, or its last CR unless
    that is its last byte (a LF may follow, making one CRLF); all of it at the file's end. Line
    breaks are ASCII, never inside a UTF-8 sequence, so whole lines are whole characters too."""
    data = bytes(data)
    if at_end:
        return len(data)
    cr = data.rfind(b"\r", 0, len(data) - 1)
    return max(data.rfind(b"\n"), cr) + 1


@dataclass
class SplitState:
    """Where a split stands between ranges, as plain values (a cursor a state machine carries)."""

    kind: str
    budget: int
    offset: int = 0  # the byte the next range starts at: a line's start (an open record's first line)
    line: int = 1  # that line's number
    done: int = 0  # parts finished before `draft`
    draft: list[int] | None = None  # the part being filled: start, end (bytes), first, last line, tokens
    header: list[int] | None = None  # CSV/TSV: the header row's end byte, first and last line, tokens
    header_known: bool = False  # the first record was read (or outgrew half the budget)
    quotes: int = 0  # parity of the quotes of an oversized record being split by lines
    oversized: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, values: dict[str, Any]) -> SplitState:
        return cls(**values)


@dataclass
class _Line:
    start: int  # bytes
    end: int
    number: int
    tokens: int  # content and terminator, plus its prefix


@dataclass
class StreamSplitter:
    """Feed it whole lines from `state.offset` on; it answers the parts they finish."""

    state: SplitState
    _byte: int = 0  # where the next line fed starts
    _line: int = 1
    _packer: _Packer | None = None
    _open: list[_Line] = field(default_factory=list)  # the CSV/TSV record in progress
    _open_tokens: int = 0
    _open_quotes: int = 0
    _counts: dict[str, int] = field(default_factory=dict)
    _lines_seen: bool = False

    def __post_init__(self) -> None:
        s = self.state
        self._byte, self._line = s.offset, s.line
        self._lines_seen = s.offset > 0
        if s.kind not in _TABLES or s.header_known:
            self._packer = self._new_packer(s.draft, s.done)

    @property
    def last_line(self) -> int:
        """Lines fed so far (the file's line count once it is all fed)."""
        return self._line - 1

    def feed(self, text: str, final: bool) -> list[PartSpan]:
        """`text`: whole lines from the byte `state.offset` (then where the last feed stopped); at
        byte 0 with the file's BOM, if any. `final`: the file ends with them."""
        if self._byte == 0 and text.startswith(BOM):
            text, self._byte = text[1:], len(BOM.encode())
        spans: list[PartSpan] = []
        start = 0
        for match in LINE_BREAK.finditer(text):
            self._add_line(text[start : match.end()], spans)
            start = match.end()
        if start < len(text):
            if not final:
                raise ValueError("a range must end at a line break, except the file's last")
            self._add_line(text[start:], spans)
        if final:
            self._finish(spans)
        return spans

    # --- lines to units ---------------------------------------------------------------------

    def _add_line(self, text: str, spans: list[PartSpan]) -> None:
        self._lines_seen = True
        size = len(text) if text.isascii() else len(text.encode())
        line = _Line(self._byte, self._byte + size, self._line, self._tokens(text) + prefix_tokens(self._line))
        self._byte, self._line = line.end, line.number + 1
        s = self.state
        if s.kind not in _TABLES:
            self._pack(self._line_units(text, line, s.budget), spans)
        elif s.oversized:
            self._pack(self._line_units(text, line, self._room()), spans)
            s.quotes = (s.quotes + text.count('"')) % 2
            s.oversized = s.quotes == 1
        else:
            self._record_line(text, line, spans)
        if not self._open:
            self._resume_here()

    def _record_line(self, text: str, line: _Line, spans: list[PartSpan]) -> None:
        """A line of a CSV/TSV record (RFC 4180 quote parity, as core/parts._records)."""
        s = self.state
        self._open.append(line)
        self._open_tokens += line.tokens
        self._open_quotes = (self._open_quotes + text.count('"')) % 2
        complete = self._open_quotes == 0
        if not s.header_known:
            if complete and self._open_tokens * 2 <= s.budget:  # core/parts._table_units' header
                first, last = self._open[0], self._open[-1]
                s.header = [last.end, first.number, last.number, self._open_tokens]
            if complete or self._open_tokens * 2 > s.budget:
                s.header_known = True
                self._packer = self._new_packer(None, 0)
            else:
                return
        room = self._room()
        if complete and self._open_tokens <= room:
            first, last = self._open[0], self._open[-1]
            self._pack([_Unit(first.start, last.end, first.number, last.number, self._open_tokens)], spans)
        elif complete or self._open_tokens > room:
            # Bigger than a part: its lines, then pieces (core/parts._table_units); an open one goes on by lines.
            self._flush_open(text, room, spans)
            s.oversized, s.quotes = not complete, self._open_quotes
        else:
            return
        self._open, self._open_tokens, self._open_quotes = [], 0, 0

    def _flush_open(self, text: str, room: int, spans: list[PartSpan]) -> None:
        """The open record as line units: all but the last fit the room (else it was flushed then)."""
        *before, last = self._open
        units = [_Unit(x.start, x.end, x.number, x.number, x.tokens) for x in before]
        self._pack([*units, *self._line_units(text, last, room)], spans)

    def _line_units(self, text: str, line: _Line, budget: int) -> list[_Unit]:
        """The line as one unit, or cut into pieces when it is bigger than `budget` (core/parts._Index._pieces)."""
        if line.tokens <= budget:
            return [_Unit(line.start, line.end, line.number, line.number, line.tokens)]
        pieces = _Index(text)._pieces(_Unit(0, len(text), line.number, line.number, line.tokens), budget)
        ends = _byte_offsets(text, [p.end for p in pieces], line.start)
        starts = [line.start, *ends[:-1]]
        return [
            _Unit(start, end, p.first_line, p.last_line, p.tokens)
            for p, start, end in zip(pieces, starts, ends, strict=True)
        ]

    def _tokens(self, text: str) -> int:
        tokens = self._counts.get(text)
        if tokens is None:
            if len(self._counts) >= _CACHE_LINES:
                self._counts.clear()
            tokens = self._counts[text] = count_tokens(text)
        return tokens

    # --- packing ------------------------------------------------------------------------------

    def _room(self) -> int:
        header = self.state.header
        return self.state.budget - header[3] if header else self.state.budget

    def _new_packer(self, draft: list[int] | None, done: int) -> _Packer:
        current = None
        if draft:
            start, end, first, last, tokens = draft
            current = _Draft(start, end, first, last, tokens, None, None)
        return _Packer(self.state.budget, self._room(), current, done)

    def _pack(self, units: list[_Unit], spans: list[PartSpan]) -> None:
        assert self._packer is not None
        for unit in units:
            position = self._packer.done
            finished = self._packer.add(unit)
            if finished is not None:
                spans.append(self._span(finished, position))

    def _span(self, draft: _Draft, position: int) -> PartSpan:
        header = self.state.header
        context = Header(0, header[0], header[1], header[2], header[3]) if header and position else None
        start = 0 if position == 0 else draft.start  # the first part covers the BOM
        return PartSpan(
            start, draft.end, draft.first_line, draft.last_line, draft.tokens, header=context, kind=self.state.kind
        )

    def _resume_here(self) -> None:
        s, packer = self.state, self._packer
        s.offset, s.line = self._byte, self._line
        if packer is not None:
            d = packer.current
            s.draft = [d.start, d.end, d.first_line, d.last_line, d.tokens] if d else None
            s.done = packer.done

    def _finish(self, spans: list[PartSpan]) -> None:
        s = self.state
        if not self._lines_seen:  # no text: one empty part (core/parts.split_file)
            spans.append(PartSpan(0, self._byte, 1, 1, prefix_tokens(1), kind=s.kind))
            return
        if self._open:  # a record whose quote never closes: the rest split by lines
            if not s.header_known:
                s.header_known = True
                self._packer = self._new_packer(None, 0)
            # Each of its lines fits the room: a bigger one would have split the record by lines then.
            self._pack([_Unit(x.start, x.end, x.number, x.number, x.tokens) for x in self._open], spans)
            self._open = []
        assert self._packer is not None
        if self._packer.current is not None:
            spans.append(self._span(self._packer.current, self._packer.done))
            self._packer.current = None
        self._resume_here()

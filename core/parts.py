"""Split a stored file into parts that each fit a token budget, along the file's structure.

A part is a byte range of the stored bytes (only keys and offsets travel through the
workflow, never text) plus the file lines it covers, which the model cites as finding
locations. The model sees `numbered(decode_part(bytes, start_byte), first_line)`.

Why it works this way:
- Tiling. Parts tile the stored bytes exactly, BOM included: the first part starts at
  byte 0 and `decode_part` drops the BOM from it. Cuts fall on character boundaries and
  never between the CR and LF of a CRLF, so every part decodes alone and its first line
  carries the right number even when the part starts mid-line.
- Structure. Where the file has records, a part holds whole ones: CSV/TSV records (RFC 4180
  quote parity, so quoted newlines stay inside their record, with the header row given to
  later parts as context), JSONL lines, elements of a JSON array or members of a JSON
  object (recursing into one too big for a part), Markdown sections. Anything else is
  packed line by line. A record, element or section bigger than a part falls back to
  lines, and a line bigger than a part is cut into pieces: unavoidable, the budget wins.
- Budget. A part's `tokens` is the sum of its lines' counts, each line counted once
  (with its terminator, which stands for the "\\n" of the display) plus its "N| " prefix.
  BPE counts are not additive: the display of a whole part may count a few tokens more
  or less than this sum. Tests allow `budget * 1.1 + 8`; callers keep that slack below
  the model's context window.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from itertools import accumulate, islice, pairwise
from pathlib import PurePosixPath

from core.lines import BOM, LINE_BREAK, iter_lines, split_lines
from core.tokens import count_tokens

__all__ = [
    "WHOLE_FILE_KINDS",
    "Header",
    "PartSpan",
    "TableSniff",
    "file_kind",
    "prefix_tokens",
    "split_file",
    "suffix_kind",
]


@dataclass(frozen=True)
class Header:
    """The CSV/TSV header row, given to every part after the first as labelled context."""

    start_byte: int  # 0: like the first part, the range covers the BOM (decode_part drops it)
    end_byte: int
    first_line: int
    last_line: int
    tokens: int


@dataclass(frozen=True)
class PartSpan:
    start_byte: int  # into the stored bytes; the first part starts at 0 and covers the BOM
    end_byte: int  # exclusive
    first_line: int  # 1-based line holding the part's first character
    last_line: int  # line holding its last character
    tokens: int  # of numbered(decode_part(...), first_line), per-line estimate (see module doc)
    header: Header | None = None  # CSV/TSV parts after the first
    json_path: str | None = None  # parts of a split JSON document: "$[0]..$[41]", "$.data[42]..$.data[97]"
    kind: str = "text"  # "csv" | "tsv" | "jsonl" | "json" | "markdown" | "text"


def prefix_tokens(line_number: int) -> int:
    """Tokens of the "N| " prefix: cl100k groups digits by three, plus "|" and " "."""
    return len(str(line_number)) // 3 + 3


_SUFFIX_KINDS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".md": "markdown",
    ".markdown": "markdown",
}
_SNIFFED_SUFFIXES = {"", ".txt", ".dat"}
# Kinds whose units need the whole document (JSON containers, Markdown sections); the others are
# line-oriented and can be split range by range (core/part_stream.py).
WHOLE_FILE_KINDS = frozenset({"json", "markdown"})
_SNIFF_RECORDS = 10  # look at up to this many first records
_MIN_SNIFF_RECORDS = 3


def suffix_kind(name: str) -> str | None:
    """How to split a file, by its name alone; None when its first records decide (`file_kind`)."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in _SUFFIX_KINDS:
        return _SUFFIX_KINDS[suffix]
    return None if suffix in _SNIFFED_SUFFIXES else "text"


def file_kind(name: str, text: str) -> str:
    """How to split a file: by its name's suffix; .txt, .dat and suffix-less files are sniffed for CSV/TSV."""
    kind = suffix_kind(name)
    if kind is None:
        return _sniff_table(text.removeprefix(BOM)) or "text"
    return kind


def split_file(name: str, content: bytes, budget: int) -> list[PartSpan]:
    """Parts tiling `content` (stored bytes, valid UTF-8, maybe with BOM), each at most `budget` tokens.

    For CSV/TSV the header's tokens count against the budget of the parts that carry it.
    Raises ValueError when the budget cannot hold a line prefix and one character.
    """
    if budget <= prefix_tokens(1):
        raise ValueError(f"budget must exceed {prefix_tokens(1)} tokens (a line prefix), got {budget}")
    text = content.decode("utf-8").removeprefix(BOM)
    kind = file_kind(name, text)
    if not text:
        return [PartSpan(0, len(content), 1, 1, prefix_tokens(1), kind=kind)]
    index = _Index(text)
    header: _Unit | None = None
    if kind in ("csv", "tsv"):
        units, header = _table_units(index, budget)
    elif kind == "json":
        json_units = _json_units(index, budget)
        kind = "json" if json_units is not None else "text"  # invalid JSON is split as text
        units = json_units if json_units is not None else index.line_units(0, len(text), budget)
    elif kind == "markdown":
        units = _markdown_units(index, budget)
    else:  # text, and JSONL whose records are lines already
        units = index.line_units(0, len(text), budget)
    drafts = _pack(units, budget, budget - header.tokens if header else budget)
    return _spans(drafts, content, text, kind, header)


# --- units: runs of text the packer keeps whole -------------------------------------------


@dataclass(frozen=True, slots=True)
class _Unit:
    start: int  # character offsets into the BOM-stripped text
    end: int
    first_line: int
    last_line: int
    tokens: int  # alone in a part: content tokens plus a prefix for every line it touches
    label: str | None = None  # JSON path of the element it belongs to
    break_before: bool = False  # start a new part here (an oversized Markdown section)


class _Index:
    """The BOM-stripped text and its lines; each distinct line's tokens are counted once."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lines = split_lines(text)
        self.starts = list(accumulate(map(len, self.lines), initial=0))  # one more: len(text)
        self._line_tokens: dict[str, int] = {}  # by line text: repeated lines are counted once too

    def line_index(self, offset: int) -> int:
        """0-based index of the line holding the character at `offset`."""
        return bisect_right(self.starts, offset) - 1

    def segment_tokens(self, line: int, start: int, end: int) -> int:
        if start == self.starts[line] and end == self.starts[line + 1]:
            text = self.lines[line]
            tokens = self._line_tokens.get(text)
            if tokens is None:
                tokens = self._line_tokens[text] = count_tokens(text)
            return tokens
        return count_tokens(self.text[start:end])

    def segments(self, start: int, end: int) -> Iterator[tuple[int, int, int]]:
        """(line index, start, end) of each line's share of text[start:end]."""
        line = self.line_index(start)
        while start < end:
            stop = min(end, self.starts[line + 1])
            yield line, start, stop
            start, line = stop, line + 1

    def unit(self, start: int, end: int, label: str | None = None) -> _Unit:
        """text[start:end] as one unit, whatever its cost."""
        tokens, first, last = 0, -1, -1
        for line, s, e in self.segments(start, end):
            tokens += self.segment_tokens(line, s, e) + prefix_tokens(line + 1)
            first, last = (line if first < 0 else first), line
        return _Unit(start, end, first + 1, last + 1, tokens, label)

    def lines_unit(self, first: int, stop: int) -> _Unit:
        """Whole lines [first, stop) (0-based) as one unit: `unit` without the offset lookups."""
        starts = self.starts
        tokens = sum(self.segment_tokens(i, starts[i], starts[i + 1]) for i in range(first, stop))
        tokens += sum(prefix_tokens(i + 1) for i in range(first, stop))
        return _Unit(starts[first], starts[stop], first + 1, stop, tokens)

    def line_units(self, start: int, end: int, budget: int, label: str | None = None) -> list[_Unit]:
        """text[start:end] as one unit per line, a line too big for `budget` cut into pieces."""
        units: list[_Unit] = []
        for i, s, e in self.segments(start, end):
            unit = _Unit(s, e, i + 1, i + 1, self.segment_tokens(i, s, e) + prefix_tokens(i + 1), label)
            units.extend([unit] if unit.tokens <= budget else self._pieces(unit, budget))
        return units

    def _pieces(self, segment: _Unit, budget: int) -> list[_Unit]:
        """A one-line segment cut at character boundaries into pieces of at most `budget` tokens."""
        prefix = prefix_tokens(segment.first_line)
        room = budget - prefix
        chars_per_token = (segment.end - segment.start) / max(1, segment.tokens - prefix)
        pieces: list[_Unit] = []
        start = segment.start
        while start < segment.end:
            size = max(1, int(room * chars_per_token * 0.9))
            while True:
                end = self._cut(start, min(segment.end, start + size))
                tokens = count_tokens(self.text[start:end])
                if tokens <= room:
                    break
                if size == 1:
                    raise ValueError(f"budget {budget} cannot hold one character of line {segment.first_line}")
                size = max(1, min(end - start - 1, int((end - start) * room / tokens * 0.9)))
            pieces.append(_Unit(start, end, segment.first_line, segment.first_line, tokens + prefix, segment.label))
            chars_per_token = (end - start) / max(1, tokens)  # the next piece is likely alike
            start = end
        return pieces

    def _cut(self, start: int, end: int) -> int:
        """`end`, moved off the middle of a CRLF (never leaving an empty piece)."""
        if end < len(self.text) and self.text[end - 1] == "\r" and self.text[end] == "\n":
            return end - 1 if end - 1 > start else end + 1
        return end


# --- CSV / TSV ----------------------------------------------------------------------------------

_QUOTED = re.compile(r'"[^"]*"')


def _records(lines: Iterable[str]) -> Iterator[list[str]]:
    """Complete records: RFC 4180, a record ends at a line break after an even number of quotes."""
    record: list[str] = []
    quotes = 0
    for line in lines:
        record.append(line)
        quotes += line.count('"')
        if quotes % 2 == 0:
            yield record
            record, quotes = [], 0


def _field_count(record: list[str], delimiter: str) -> int:
    return _QUOTED.sub("", "".join(record)).count(delimiter) + 1


def _sniff_table(text: str) -> str | None:
    """Sniff a table: "tsv" (else "csv") if a delimiter gives the first 3+ records one field count of 2+."""
    records = list(islice(_records(iter_lines(text)), _SNIFF_RECORDS))
    if len(records) < _MIN_SNIFF_RECORDS:
        return None
    for delimiter, kind in (("\t", "tsv"), (",", "csv")):
        counts = {_field_count(record, delimiter) for record in records}
        if len(counts) == 1 and counts.pop() >= 2:
            return kind
    return None


@dataclass
class TableSniff:
    """`_sniff_table` over text fed in pieces (a file read in ranges), holding only counts: the
    first records' field counts, and the record in progress (its quote parity and delimiters
    outside quotes so far). Its fields are plain values, so a sniff can stop and resume."""

    tabs: list[int] = field(default_factory=list)  # field counts of the complete records
    commas: list[int] = field(default_factory=list)
    quotes: int = 0  # quote parity of the record in progress
    open_tabs: int = 0  # its delimiters outside quotes so far
    open_commas: int = 0
    in_line: bool = False  # text seen since the last line break
    after_cr: bool = False  # the last piece ended with CR: a LF opening the next one completes a CRLF

    @property
    def done(self) -> bool:
        return len(self.tabs) >= _SNIFF_RECORDS

    def feed(self, text: str, final: bool) -> None:
        if self.after_cr and text.startswith("\n"):
            text = text[1:]
        self.after_cr = text.endswith("\r")
        start = 0
        for match in LINE_BREAK.finditer(text):
            self._content(text[start : match.start()])
            self._line_end()
            start = match.end()
            if self.done:
                return
        self._content(text[start:])
        if final and self.in_line:
            self._line_end()

    def kind(self) -> str | None:
        """What `_sniff_table` answers for the records fed."""
        if len(self.tabs) < _MIN_SNIFF_RECORDS:
            return None
        for counts, kind in ((self.tabs, "tsv"), (self.commas, "csv")):
            if len(set(counts)) == 1 and counts[0] >= 2:
                return kind
        return None

    def _content(self, text: str) -> None:
        if not text:
            return
        self.in_line = True
        # `_field_count` drops each "..." pair: a delimiter counts when an even number of quotes precede it.
        for i, run in enumerate(text.split('"')):
            if (self.quotes + i) % 2 == 0:
                self.open_tabs += run.count("\t")
                self.open_commas += run.count(",")
        self.quotes = (self.quotes + text.count('"')) % 2

    def _line_end(self) -> None:
        self.in_line = False
        if self.quotes == 0:
            self.tabs.append(self.open_tabs + 1)
            self.commas.append(self.open_commas + 1)
            self.open_tabs = self.open_commas = 0


def _table_units(index: _Index, budget: int) -> tuple[list[_Unit], _Unit | None]:
    """One unit per record, and the header record when later parts can afford it as context."""
    bounds = list(accumulate((len(record) for record in _records(index.lines)), initial=0))
    header = index.lines_unit(0, bounds[1]) if len(bounds) > 1 else None
    if header is not None and header.tokens * 2 > budget:
        header = None  # a header costing over half the budget would crowd out the records: no context
    room = budget - header.tokens if header else budget
    units: list[_Unit] = []
    for first, stop in pairwise(bounds):
        record = index.lines_unit(first, stop)
        # A record bigger than a part falls back to lines (then pieces): unavoidable.
        units.extend([record] if record.tokens <= room else index.line_units(record.start, record.end, room))
    # An unbalanced quote never closes its record: the rest of the file is split by lines.
    units.extend(index.line_units(index.starts[bounds[-1]], len(index.text), room))
    return units, header


# --- JSON -----------------------------------------------------------------------------------------

_JSON_WS = re.compile(r"[ \t\n\r]*")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class _Member:
    """An array element, or an object member (key, colon and value)."""

    path: str
    start: int
    value_start: int
    end: int


def _json_units(index: _Index, budget: int) -> list[_Unit] | None:
    """Units of whole elements/members, or None when the text is not JSON."""
    try:
        json.loads(index.text)
    except (ValueError, RecursionError):  # invalid, or nested deeper than Python's recursion limit
        return None
    try:
        return _container_units(index, 0, len(index.text), _skip_ws(index.text, 0), "$", budget)
    except RecursionError:  # json.loads nests deeper than this walk can: split as text
        return None


def _container_units(index: _Index, start: int, end: int, value_start: int, path: str, budget: int) -> list[_Unit]:
    """Units covering text[start:end], which holds the value at `value_start` and what surrounds it."""
    text = index.text
    members = _members(text, value_start, path)
    if not members:  # a scalar or an empty container too big for a part
        return index.line_units(start, end, budget, path)
    bounds = [start, *(_gap_end(text, a.end, b.start) for a, b in pairwise(members)), end]
    units: list[_Unit] = []
    for member, (a, b) in zip(members, pairwise(bounds), strict=True):
        unit = index.unit(a, b, member.path)
        if unit.tokens <= budget:
            units.append(unit)
        elif text[member.value_start] in "[{":
            units.extend(_container_units(index, a, b, member.value_start, member.path, budget))
        else:
            units.extend(index.line_units(a, b, budget, member.path))
    return units


def _members(text: str, value_start: int, path: str) -> list[_Member]:
    """Elements or members of the (valid) container at `value_start`; [] for a scalar."""
    opener = text[value_start]
    if opener not in "[{":
        return []
    members: list[_Member] = []
    pos = _skip_ws(text, value_start + 1)
    while text[pos] not in "]}":
        start = pos
        if opener == "{":
            key, pos = _DECODER.raw_decode(text, pos)
            pos = _skip_ws(text, _skip_ws(text, pos) + 1)  # past the colon
            member_path = _key_path(path, key)
        else:
            member_path = f"{path}[{len(members)}]"
        member_start = pos
        _, pos = _DECODER.raw_decode(text, pos)
        members.append(_Member(member_path, start, member_start, pos))
        pos = _skip_ws(text, pos)
        if text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
    return members


def _skip_ws(text: str, pos: int) -> int:
    match = _JSON_WS.match(text, pos)
    assert match is not None  # "*" matches the empty string
    return match.end()


def _key_path(path: str, key: str) -> str:
    if _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def _gap_end(text: str, prev_end: int, next_start: int) -> int:
    """Where the gap between two members is cut: after its last line break, so a part starts on a fresh line."""
    cut = next_start
    for match in LINE_BREAK.finditer(text, prev_end, next_start):
        cut = match.end()
    return cut


# --- Markdown -------------------------------------------------------------------------------------

_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r" {0,3}#{1,6}(?:[ \t]|$)")  # CommonMark ATX: "#" run then space, tab or line end


def _section_starts(lines: list[str]) -> list[int]:
    """Indices of the lines that open a section: 0, then every ATX heading outside fenced code."""
    starts = [0]
    fence: str | None = None
    for i, line in enumerate(lines):
        content = line.rstrip("\r\n")
        if fence is not None:
            fence = None if _closes(fence, content) else fence
            continue
        if opening := _FENCE.match(content):
            fence = opening[1]
        elif i and _HEADING.match(content):
            starts.append(i)
    return starts


def _closes(fence: str, line: str) -> bool:
    """CommonMark: a closing fence repeats the opening's character at least as often, then only spaces."""
    run = line.strip(" \t")
    indent = len(line) - len(line.lstrip(" "))
    return indent <= 3 and len(run) >= len(fence) and run == fence[0] * len(run)


def _markdown_units(index: _Index, budget: int) -> list[_Unit]:
    """One unit per section; a section bigger than a part starts a part and is split by lines."""
    units: list[_Unit] = []
    for first, stop in pairwise([*_section_starts(index.lines), len(index.lines)]):
        section = index.lines_unit(first, stop)
        if section.tokens <= budget:
            units.append(section)
        else:
            lines = index.line_units(section.start, section.end, budget)
            units.extend([replace(lines[0], break_before=True), *lines[1:]])
    return units


# --- packing ------------------------------------------------------------------------------------------


@dataclass
class _Draft:
    start: int
    end: int
    first_line: int
    last_line: int
    tokens: int
    first_label: str | None
    last_label: str | None

    @classmethod
    def of(cls, unit: _Unit) -> _Draft:
        return cls(unit.start, unit.end, unit.first_line, unit.last_line, unit.tokens, unit.label, unit.label)

    def add(self, unit: _Unit, tokens: int) -> None:
        self.end, self.last_line, self.tokens = unit.end, unit.last_line, self.tokens + tokens
        self.first_label = self.first_label or unit.label
        self.last_label = unit.label or self.last_label


class _Packer:
    """Greedy: units join the current part while it stays within budget, else start the next.
    Fed one unit at a time, so a file read in ranges is packed as one read whole (core/part_stream.py)."""

    def __init__(self, first_budget: int, rest_budget: int, current: _Draft | None = None, done: int = 0) -> None:
        self.first_budget, self.rest_budget = first_budget, rest_budget
        self.current = current  # the part being filled
        self.done = done  # parts finished before it

    def add(self, unit: _Unit) -> _Draft | None:
        """Pack `unit`; the part it finished, if any."""
        current = self.current
        if current is not None:
            budget = self.rest_budget if self.done else self.first_budget
            # A unit continuing the part's last line shares that line's prefix.
            tokens = unit.tokens - (prefix_tokens(unit.first_line) if unit.first_line == current.last_line else 0)
            if not unit.break_before and current.tokens + tokens <= budget:
                current.add(unit, tokens)
                return None
            self.done += 1
        self.current = _Draft.of(unit)
        return current


def _pack(units: Iterable[_Unit], first_budget: int, rest_budget: int) -> list[_Draft]:
    packer = _Packer(first_budget, rest_budget)
    drafts = [draft for unit in units if (draft := packer.add(unit)) is not None]
    return drafts if packer.current is None else [*drafts, packer.current]


def _spans(drafts: list[_Draft], content: bytes, text: str, kind: str, header: _Unit | None) -> list[PartSpan]:
    """Drafts (character ranges of the BOM-stripped text) as byte ranges of the stored bytes."""
    bom = len(content) - len(text.encode("utf-8"))
    starts = _byte_offsets(text, [d.start for d in drafts], bom)
    starts[0] = 0  # the first part covers the BOM
    ends = [*starts[1:], len(content)]
    context = None
    if header is not None and len(drafts) > 1:
        header_end = bom + len(text[: header.end].encode("utf-8"))
        context = Header(0, header_end, header.first_line, header.last_line, header.tokens)
    split_json = kind == "json" and len(drafts) > 1
    return [
        PartSpan(
            start,
            end,
            draft.first_line,
            draft.last_line,
            draft.tokens,
            header=context if i else None,
            json_path=_path_range(draft) if split_json else None,
            kind=kind,
        )
        for i, (draft, start, end) in enumerate(zip(drafts, starts, ends, strict=True))
    ]


def _byte_offsets(text: str, offsets: list[int], base: int) -> list[int]:
    """Byte offsets of ascending character offsets, encoding each stretch once."""
    result: list[int] = []
    byte = base
    previous = 0
    for offset in offsets:
        byte += len(text[previous:offset].encode("utf-8"))
        result.append(byte)
        previous = offset
    return result


def _path_range(draft: _Draft) -> str | None:
    if draft.first_label is None or draft.first_label == draft.last_label:
        return draft.first_label
    return f"{draft.first_label}..{draft.last_label}"

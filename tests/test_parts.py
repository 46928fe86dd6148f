"""Lines and parts: every part decodes alone, cites the file's own line numbers, fits the budget,
and keeps the file's records whole (CSV/TSV, JSONL, JSON, Markdown)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import core.parts
from core.lines import BOM, decode_part, line_contents, numbered, parse_numbered, split_lines
from core.parts import PartSpan, file_kind, prefix_tokens, split_file
from core.tokens import count_tokens

PROPERTY = settings(derandomize=True, deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
BOM_BYTES = BOM.encode()
# Characters that break naive splitters: multi-byte UTF-8, and what str.splitlines() wrongly treats as breaks.
ALPHABET = 'ab xyz,.;"|#\té漢😀\u2028\x0c\x85'
TERMINATORS = st.sampled_from(["\n", "\r\n", "\r"])


# --- helpers -----------------------------------------------------------------------------------------


def part_text(content: bytes, part: PartSpan) -> str:
    return decode_part(content[part.start_byte : part.end_byte], part.start_byte)


def stripped(content: bytes) -> str:
    return content.decode("utf-8").removeprefix(BOM)


def assert_tiles(content: bytes, parts: list[PartSpan]) -> None:
    """Byte ranges tile the stored bytes in order, each decoding alone, never inside a CRLF."""
    assert parts[0].start_byte == 0 and parts[-1].end_byte == len(content)
    for before, after in zip(parts, parts[1:], strict=False):
        assert before.end_byte == after.start_byte
        assert content[after.start_byte - 1 : after.start_byte + 1] != b"\r\n"
    for part in parts:
        assert part.start_byte < part.end_byte or len(parts) == 1
        part_text(content, part)  # strict UTF-8: raises if cut inside a character


def assert_lines_numbered(content: bytes, parts: list[PartSpan]) -> None:
    """The numbered displays, read back and joined per number, are the file's own lines."""
    shown: list[tuple[int, str]] = []
    for part in parts:
        pairs = parse_numbered(numbered(part_text(content, part), part.first_line))
        assert pairs[0][0] == part.first_line and pairs[-1][0] == part.last_line
        if shown and shown[-1][0] == pairs[0][0]:  # the part continues a line cut by the previous one
            shown[-1] = (pairs[0][0], shown[-1][1] + pairs[0][1])
            pairs = pairs[1:]
        shown.extend(pairs)
    expected = line_contents(stripped(content)) or [""]
    assert shown == list(enumerate(expected, start=1))


def assert_within_budget(content: bytes, parts: list[PartSpan], budget: int) -> None:
    for part in parts:
        context = part.header.tokens if part.header else 0
        assert part.tokens + context <= budget
        # BPE is not additive: the display may count a little more than the per-line sum.
        assert count_tokens(numbered(part_text(content, part), part.first_line)) + context <= budget * 1.1 + 8


def assert_valid(content: bytes, parts: list[PartSpan], budget: int) -> None:
    assert_tiles(content, parts)
    assert_lines_numbered(content, parts)
    assert_within_budget(content, parts, budget)


def byte_range(text: str, start: int, end: int, bom: bool) -> tuple[int, int]:
    """A character range of the BOM-stripped text as a byte range of the stored bytes."""
    base = len(BOM_BYTES) if bom else 0
    return base + len(text[:start].encode()), base + len(text[:end].encode())


def holder(parts: list[PartSpan], start: int, end: int) -> PartSpan:
    """The one part holding the whole byte range [start, end)."""
    holders = [p for p in parts if p.start_byte < end and start < p.end_byte]
    assert len(holders) == 1, f"bytes {start}..{end} are split across {len(holders)} parts"
    return holders[0]


@st.composite
def texts(draw: st.DrawFn, max_lines: int = 40) -> str:
    """Short and long lines, any mix of CRLF/CR/LF, with or without a final terminator."""
    line = st.text(ALPHABET, max_size=12) | st.text(ALPHABET, min_size=40, max_size=300)
    lines, unterminated = draw(st.tuples(st.lists(st.tuples(line, TERMINATORS), max_size=max_lines), st.booleans()))
    text = "".join(content + end for content, end in lines)
    if lines and unterminated:
        text = text[: -len(lines[-1][1])]
    return text


def stored(text: str, bom: bool) -> bytes:
    return (BOM if bom else "").encode() + text.encode()


# --- core.lines ----------------------------------------------------------------------------------------


def test_only_crlf_cr_and_lf_end_lines() -> None:
    text = "a\x0cb\u2028c\x85d\r\ne\rf\ng"
    assert split_lines(text) == ["a\x0cb\u2028c\x85d\r\n", "e\r", "f\n", "g"]
    assert line_contents(text) == ["a\x0cb\u2028c\x85d", "e", "f", "g"]
    assert split_lines("") == [] and line_contents("") == []
    assert line_contents("a\n") == ["a"] and line_contents("\n\n") == ["", ""]


def test_decode_part_drops_the_bom_only_at_byte_zero() -> None:
    assert decode_part(BOM_BYTES + b"x", 0) == "x"
    assert decode_part(BOM_BYTES + b"x", 7) == BOM + "x"  # a U+FEFF inside the file is text
    with pytest.raises(UnicodeDecodeError):
        decode_part("é".encode()[:1], 5)


def test_numbered_keeps_the_first_line_number_for_a_part_starting_mid_line() -> None:
    assert numbered("tail of 7\nline 8\n", 7) == "7| tail of 7\n8| line 8"
    assert numbered("", 12) == "12| "
    assert numbered("\r\nx", 3) == "3| \n4| x"


@PROPERTY
@given(text=texts(), first=st.integers(1, 10**7))
def test_parse_numbered_inverts_numbered(text: str, first: int) -> None:
    contents = line_contents(text) or [""]
    assert parse_numbered(numbered(text, first)) == list(enumerate(contents, start=first))


# --- any file: tiling, line numbers, budget ---------------------------------------------------------------


@PROPERTY
@given(
    text=texts(),
    bom=st.booleans(),
    budget=st.integers(20, 60),
    name=st.sampled_from(["notes.log", "notes.txt", "a.md", "a.csv", "a.jsonl", "a.json", "README"]),
)
def test_any_file_is_tiled_with_its_own_line_numbers_within_budget(
    text: str, bom: bool, budget: int, name: str
) -> None:
    content = stored(text, bom)
    parts = split_file(name, content, budget)
    assert_valid(content, parts, budget)


@pytest.mark.parametrize("content", [b"", BOM_BYTES])
def test_an_empty_file_is_one_empty_part(content: bytes) -> None:
    assert [(p.start_byte, p.end_byte, p.first_line, p.last_line) for p in split_file("a.txt", content, 50)] == [
        (0, len(content), 1, 1)
    ]


def test_a_budget_without_room_for_a_line_prefix_is_refused() -> None:
    with pytest.raises(ValueError):
        split_file("a.txt", b"x", prefix_tokens(1))


def test_a_line_longer_than_a_part_is_cut_into_pieces_with_its_number() -> None:
    content = ("intro\n" + "漢字😀é word " * 400 + "\r\nend").encode()
    parts = split_file("a.txt", content, 40)
    assert_valid(content, parts, 40)
    pieces = [p for p in parts if p.first_line == p.last_line == 2]
    assert len(pieces) > 10


def test_secret_lines_are_shown_at_their_numbers_in_an_800_line_bom_file() -> None:
    lines = [f"line {n} {'secret' if n in (5, 300, 799) else 'plain'} é" for n in range(1, 801)]
    content = BOM_BYTES + "\r\n".join(lines).encode()
    parts = split_file("big.txt", content, 200)
    assert len(parts) > 10
    shown = {
        number
        for part in parts
        for number, line in parse_numbered(numbered(part_text(content, part), part.first_line))
        if "secret" in line
    }
    assert shown == {5, 300, 799}
    assert_valid(content, parts, 200)


def test_each_distinct_line_is_tokenized_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real: Callable[[str], int] = vars(core.parts)["count_tokens"]  # the name the splitter calls, patched below

    def counting(text: str) -> int:
        calls.append(text)
        return real(text)

    monkeypatch.setattr(core.parts, "count_tokens", counting)
    lines = [f"row {n}, value {n * 7}\n" for n in range(3000)]
    for name in ("a.txt", "a.csv", "a.md", "a.jsonl"):
        calls.clear()
        split_file(name, "".join(lines + lines).encode(), 300)
        assert len(calls) == len(lines), name  # the second copy of every line is not counted again


# --- CSV / TSV ---------------------------------------------------------------------------------------------


def csv_field() -> st.SearchStrategy[str]:
    plain = st.text("abcé 1.", max_size=6)
    quoted = st.text('abé,"\n', max_size=6).map(lambda s: '"' + s.replace('"', '""') + '"')
    return plain | quoted


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A CSV text and its records (with terminators); quoted fields hold commas, quotes and newlines."""
    end = draw(st.sampled_from(["\n", "\r\n"]))
    rows = draw(st.lists(st.lists(csv_field(), min_size=3, max_size=3), min_size=4, max_size=40))
    records = ["id,name,note" + end] + [",".join(row) + end for row in rows]
    return "".join(records), records


@PROPERTY
@given(csv=csv_files(), bom=st.booleans(), budget=st.integers(60, 120))
def test_csv_records_stay_whole_and_later_parts_carry_the_header(
    csv: tuple[str, list[str]], bom: bool, budget: int
) -> None:
    text, records = csv
    content = stored(text, bom)
    parts = split_file("data.csv", content, budget)
    assert_valid(content, parts, budget)
    offset = 0
    for record in records:
        holder(parts, *byte_range(text, offset, offset + len(record), bom))
        offset += len(record)
    assert parts[0].header is None
    for part in parts[1:]:
        assert part.header is not None and part.kind == "csv"
        header_text = decode_part(content[part.header.start_byte : part.header.end_byte], part.header.start_byte)
        assert header_text == records[0]
        assert part.header.first_line == part.header.last_line == 1 < part.first_line


def test_a_header_costing_over_half_the_budget_is_not_repeated() -> None:
    header = ",".join(f"column_{n}_漢字" for n in range(12)) + "\n"
    content = (header + "".join(f"{n},x\n" for n in range(200))).encode()
    parts = split_file("wide.csv", content, 60)
    assert len(parts) > 1 and all(p.header is None for p in parts)
    assert_valid(content, parts, 60)


def test_an_unbalanced_quote_still_splits_the_rest_of_the_file() -> None:
    content = ('a,b\n1,"never closed\n' + "".join(f"{n},row {n}\n" for n in range(300))).encode()
    parts = split_file("broken.csv", content, 50)
    assert len(parts) > 10
    assert_valid(content, parts, 50)


def test_tables_are_sniffed_conservatively_for_txt_dat_and_suffixless_names() -> None:
    assert file_kind("data.txt", 'a,b\n1,"x,\ny"\n') == "text"  # two records (three lines) only
    assert file_kind("data.txt", 'a,b\n1,"x,\ny"\n2,3\n') == "csv"
    assert file_kind("export", "a\tb,c\n1\t2\n3\t4,5\n") == "tsv"
    assert file_kind("x.DAT", BOM + "a,b\n1,2\n3\n") == "text"  # field counts differ
    assert file_kind("notes.log", "a,b\n1,2\n3,4\n") == "text"
    assert file_kind("notes.CSV", "anything") == "csv"


def test_a_sniffed_tsv_file_gets_header_context() -> None:
    content = ("name\tscore\n" + "".join(f"p{n}\t{n}\n" for n in range(200))).encode()
    parts = split_file("scores.txt", content, 40)
    assert {p.kind for p in parts} == {"tsv"}
    assert all(p.header is not None for p in parts[1:])


# --- JSONL ----------------------------------------------------------------------------------------------------

JSON_SCALARS = st.integers(-(10**6), 10**6) | st.text(ALPHABET, max_size=4) | st.booleans() | st.none()


@PROPERTY
@given(
    records=st.lists(st.dictionaries(st.sampled_from("abc"), JSON_SCALARS, max_size=3), min_size=5, max_size=60),
    budget=st.integers(60, 100),
)
def test_jsonl_records_are_never_split(records: list[dict[str, object]], budget: int) -> None:
    content = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    parts = split_file("events.ndjson", content, budget)
    assert_valid(content, parts, budget)
    assert all(before.last_line < after.first_line for before, after in zip(parts, parts[1:], strict=False))


# --- JSON ------------------------------------------------------------------------------------------------------

JSON_VALUES = (
    JSON_SCALARS
    | st.lists(st.integers(0, 99), max_size=3)
    | st.dictionaries(st.sampled_from("xyz"), st.integers(0, 9), max_size=2)
)
# (after the opening bracket, between items, before the closing bracket)
LAYOUTS = {
    "minified": ("", ",", ""),
    "spaced": ("", ", ", ""),
    "pretty": ("\n  ", ",\n  ", "\n"),
    "crlf": ("\r\n  ", ",\r\n  ", "\r\n"),
}
Item = tuple[str, int, int]  # JSON path, character range


def build(items: list[tuple[str, str]], brackets: str, layout: str, offset: int = 0) -> tuple[str, list[Item]]:
    """A JSON container from (path, text) items, and each item's character range."""
    lead, between, trail = LAYOUTS[layout]
    text = brackets[0] + lead
    ranges: list[Item] = []
    for i, (path, item) in enumerate(items):
        text += between if i else ""
        ranges.append((path, offset + len(text), offset + len(text) + len(item)))
        text += item
    return text + trail + brackets[1], ranges


def assert_json_parts(text: str, bom: bool, parts: list[PartSpan], items: list[Item], budget: int) -> None:
    """Items are never split, and each part's json_path names the first..last item starting in it."""
    content = stored(text, bom)
    assert_valid(content, parts, budget)
    assert {p.kind for p in parts} == {"json"}
    if len(parts) == 1:
        assert parts[0].json_path is None
        return
    held: dict[int, list[str]] = {}
    for path, start, end in items:
        first, last = byte_range(text, start, end, bom)
        held.setdefault(parts.index(holder(parts, first, last)), []).append(path)
    for i, part in enumerate(parts):
        paths = held[i]
        assert part.json_path == (paths[0] if len(paths) == 1 else f"{paths[0]}..{paths[-1]}")


@PROPERTY
@given(
    values=st.lists(JSON_VALUES, min_size=5, max_size=50),
    layout=st.sampled_from(sorted(LAYOUTS)),
    bom=st.booleans(),
    budget=st.integers(30, 60),
)
def test_a_json_array_is_split_between_elements(values: list[object], layout: str, bom: bool, budget: int) -> None:
    text, items = build([(f"$[{i}]", json.dumps(v, ensure_ascii=False)) for i, v in enumerate(values)], "[]", layout)
    parts = split_file("list.json", stored(text, bom), budget)
    assert_json_parts(text, bom, parts, items, budget)


@PROPERTY
@given(
    values=st.lists(JSON_VALUES, min_size=5, max_size=50),
    layout=st.sampled_from(sorted(LAYOUTS)),
    budget=st.integers(30, 60),
)
def test_a_json_object_is_split_between_members(values: list[object], layout: str, budget: int) -> None:
    members = [(f"$.k{i}", f'"k{i}": {json.dumps(v, ensure_ascii=False)}') for i, v in enumerate(values)]
    text, items = build(members, "{}", layout)
    assert_json_parts(text, False, split_file("map.json", text.encode(), budget), items, budget)


@PROPERTY
@given(
    names=st.lists(st.text(ALPHABET, max_size=4), min_size=12, max_size=40),
    layout=st.sampled_from(sorted(LAYOUTS)),
    budget=st.integers(40, 80),
)
def test_a_nested_array_too_big_for_a_part_is_split_between_its_elements(
    names: list[str], layout: str, budget: int
) -> None:
    head = '{"data": '
    rows = [(f"$.data[{i}]", json.dumps({"id": i, "name": n}, ensure_ascii=False)) for i, n in enumerate(names)]
    data, items = build(rows, "[]", layout, offset=len(head))
    text = head + data + ', "meta": 1}'
    items.append(("$.meta", text.index('"meta"'), len(text) - 1))
    parts = split_file("wrapped.json", text.encode(), budget)
    assert len(parts) > 1
    assert_json_parts(text, False, parts, items, budget)


def test_minified_json_on_one_line_is_split_mid_line() -> None:
    text = json.dumps({"users": [{"id": i, "tags": ["a", "b"]} for i in range(300)]}, separators=(",", ":"))
    parts = split_file("users.json", text.encode(), 100)
    assert len(parts) > 10 and all(p.first_line == p.last_line == 1 for p in parts)
    paths = [p.json_path or "" for p in parts]
    assert paths[0].startswith("$.users[0]..") and paths[-1].endswith("..$.users[299]")
    assert_valid(text.encode(), parts, 100)


def test_keys_that_are_not_identifiers_are_quoted_in_paths() -> None:
    text = json.dumps({"odd key": list(range(80)), "é": list(range(80)), "ok_1": 2}, indent=1, ensure_ascii=False)
    paths = [p.json_path or "" for p in split_file("odd.json", text.encode(), 60)]
    assert paths[0].startswith('$["odd key"][0]..') and paths[-1].endswith("..$.ok_1")
    assert any(path.startswith('$["é"][') for path in paths)


@pytest.mark.parametrize("text", ['{"a": [1, 2', "[1, 2]\n[3]", "{'a': 1}"])
def test_invalid_json_is_split_as_text(text: str) -> None:
    parts = split_file("bad.json", ((text + "\n") * 50).encode(), 30)
    assert {p.kind for p in parts} == {"text"} and all(p.json_path is None for p in parts)


def test_json_that_fits_one_part_has_no_path() -> None:
    [part] = split_file("small.json", b'{"a": [1, 2, 3]}\n', 100)
    assert part.json_path is None and part.kind == "json"


# --- Markdown -----------------------------------------------------------------------------------------------------


@st.composite
def markdown_files(draw: st.DrawFn) -> tuple[str, set[int]]:
    """A Markdown text and the numbers of its heading lines; fenced code holds "#" lines that are not headings."""
    end = draw(st.sampled_from(["\n", "\r\n"]))
    body = st.lists(st.text("abcé xyz.", max_size=12), max_size=3)
    lines = draw(body)
    headings: set[int] = set()
    section = st.tuples(st.integers(1, 6), st.text("abc é", max_size=8), body, st.booleans())
    for level, title, paragraph, fenced in draw(st.lists(section, min_size=3, max_size=16)):
        headings.add(len(lines) + 1)
        lines.append("#" * level + " " + title)
        lines.extend(paragraph)
        if fenced:
            lines.extend(["```sh", "# not a heading", "```"])
    return "".join(line + end for line in lines), headings


@PROPERTY
@given(markdown=markdown_files(), budget=st.integers(110, 200))
def test_markdown_parts_start_at_headings_when_sections_fit(markdown: tuple[str, set[int]], budget: int) -> None:
    text, headings = markdown
    content = text.encode()
    parts = split_file("guide.md", content, budget)
    assert_valid(content, parts, budget)
    assert all(p.first_line in headings for p in parts[1:])


def test_a_section_bigger_than_a_part_starts_a_part_and_is_split_by_lines() -> None:
    big = "# Big\n" + "".join(f"body line {n} with some words\n" for n in range(60))
    text = "# Small\nintro\n" + big + "## After\nend\n"
    content = text.encode()
    parts = split_file("guide.markdown", content, 80)
    assert_valid(content, parts, 80)
    assert [p.first_line for p in parts][:2] == [1, 3]  # "# Big" (line 3) opens a part
    [after] = [p for p in parts if p.first_line <= 64 <= p.last_line]  # "## After" (lines 64-65) stays whole
    assert after.last_line == 65

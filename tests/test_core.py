"""Pure logic shared by the API and the Lambdas: chunking, batches, prompts, token counts."""

from __future__ import annotations

import json

import pytest

from core.chunking import chunk_text
from core.prompt import numbered
from core.prompt import InvalidAnswer, messages, parse_answer
from core.records import MAX_MAP_ITEMS, batches, chunk_id, file_index_of, file_range
from core.tokens import count_tokens


@pytest.mark.parametrize(
    "text",
    [
        "".join(f"line {i} of some text\n" for i in range(500)),
        "no newline at the end",
        "é" * 3000 + "\nshort\n",  # one line longer than the budget, multi-byte
        "a\r\nb\r\n\r\nc",
    ],
)
def test_chunks_cover_the_text_exactly_in_order_within_budget(text):
    spans = chunk_text(text, 60)
    raw = text.encode()

    assert b"".join(raw[s.start_byte : s.end_byte] for s in spans) == raw
    assert all(s.tokens <= 60 for s in spans)
    assert all(a.end_byte == b.start_byte for a, b in zip(spans, spans[1:]))
    assert [s.first_line for s in spans] == sorted(s.first_line for s in spans)
    for span in spans:  # every chunk's bytes decode: no cut inside a character
        raw[span.start_byte : span.end_byte].decode("utf-8")


def test_chunk_line_numbers_match_the_file():
    text = "".join(f"line {i}\n" for i in range(1, 101))
    spans = chunk_text(text, 30)
    raw = text.encode()
    for span in spans:
        lines = raw[span.start_byte : span.end_byte].decode().splitlines()
        assert lines[0] == f"line {span.first_line}"
        assert lines[-1] == f"line {span.last_line}"
    assert numbered("a\nb", 7) == "7| a\n8| b"


def test_token_counts_are_exact_cl100k_counts_offline():
    assert count_tokens("hello world") == 2
    assert count_tokens("") == 0


def test_batches_stay_under_the_map_item_limit_and_cover_every_chunk():
    ids = [chunk_id(f, c) for f in range(100) for c in range(600)]  # 60,000 chunks

    items = batches(ids)

    assert len(items) <= MAX_MAP_ITEMS
    assert len(json.dumps(items).encode()) < 256 * 1024
    assert items[0]["first"] == ids[0] and items[-1]["last"] == ids[-1]
    assert all(a["last"] < b["first"] for a, b in zip(items, items[1:]))
    assert batches(ids[:3]) == [{"first": i, "last": i} for i in ids[:3]]
    assert len(batches(ids[:160])) == 160  # one chunk per item while 40 iterations have 4 items each
    assert len(batches(ids[:500])) == 125  # then a few chunks per item (fewer invocations, leases, transitions)
    assert len(batches(ids[:1200])) == 300


def test_file_ranges_select_one_files_chunks():
    first, last = file_range(3, 3)
    assert first <= chunk_id(3, 0) <= chunk_id(3, 999_999) <= last
    assert not first <= chunk_id(4, 0) <= last
    assert file_index_of(chunk_id(42, 7)) == 42


def test_parse_answer_orders_by_rules_and_rejects_missing_rules():
    rules = [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}]
    content = json.dumps({"results": [{"rule_id": "b", "passed": False, "findings": [{"location": "line 1", "message": "m"}]}, {"rule_id": "a", "passed": True, "findings": []}]})

    assert [r["id"] for r in parse_answer(content, rules)] == ["a", "b"]
    with pytest.raises(InvalidAnswer):
        parse_answer(json.dumps({"results": [{"rule_id": "a", "passed": True, "findings": []}]}), rules)
    with pytest.raises(InvalidAnswer):
        parse_answer("not json", rules)


def test_prompt_carries_rules_and_numbered_lines():
    user = messages("f.txt", 10, 11, "x\ny", [{"id": "a", "text": "t"}])[1]["content"]
    assert '[{"id": "a", "text": "t"}]' in user
    assert "10| x\n11| y" in user

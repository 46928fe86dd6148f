"""The byte-based floor never exceeds what splitting and counting charges, whatever the file."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.bounds import file_cost_floor, line_count, prefix_tokens_total, text_tokens_floor
from core.lines import split_lines
from core.parts import prefix_tokens, split_file
from core.tokens import max_token_bytes

COMPLETION = 512

line_text = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=120
) | st.sampled_from(["", " ", "a", "id,note", '"quoted, with\nnewline"', "{", "}", "# Heading", "```"])
ending = st.sampled_from(["\n", "\r\n", "\r", ""])


@st.composite
def files(draw: st.DrawFn) -> tuple[str, bytes]:
    lines = draw(st.lists(st.tuples(line_text, ending), min_size=1, max_size=40))
    text = "".join(t + e for t, e in lines)
    if draw(st.booleans()):  # structured files as well as free text
        text = json.dumps([t for t, _ in lines], indent=draw(st.sampled_from([None, 1])))
    bom = "\ufeff" if draw(st.booleans()) else ""
    name = draw(st.sampled_from(["a.txt", "a.csv", "a.tsv", "a.json", "a.jsonl", "a.md", "noext"]))
    return name, (bom + text).encode("utf-8")


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(files(), st.sampled_from([20, 60, 400]))
def test_the_floor_is_at_most_what_the_parts_are_charged(file: tuple[str, bytes], budget: int) -> None:
    name, content = file
    if not content.decode("utf-8").removeprefix("\ufeff"):
        return  # empty files are refused at intake
    spans = split_file(name, content, budget)
    charged = sum(s.tokens for s in spans)

    assert text_tokens_floor(content, max_token_bytes()) <= charged
    assert file_cost_floor(content, budget, COMPLETION, max_token_bytes()) <= charged + len(spans) * COMPLETION


@given(st.text(st.sampled_from("ab\r\n"), max_size=40))
def test_line_count_is_the_number_of_lines_core_lines_splits(text: str) -> None:
    assert line_count(text.encode()) == len(split_lines(text))


def test_prefix_total_sums_each_lines_prefix() -> None:
    for lines in (0, 1, 9, 10, 99, 100, 1234, 100_000):
        assert prefix_tokens_total(lines) == sum(prefix_tokens(i) for i in range(1, lines + 1))


def test_ten_files_of_short_lines_are_priced_out_of_a_default_quota_by_bytes_alone() -> None:
    """The issue's probe: ten 5 MiB files of short lines took seconds to tokenize before their 422."""
    content = b"a\n" * (5 * 1024 * 1024 // 2)

    floor = 10 * file_cost_floor(content, 1500, COMPLETION, max_token_bytes())

    assert floor > 1_000_000  # DEFAULT_CAPACITY_TOKENS


def test_planning_stops_after_the_file_that_passes_the_capacity(monkeypatch: pytest.MonkeyPatch) -> None:
    import app.validations.service as service
    import core.parts as parts
    import core.planning as planning
    from app.validations.intake import Document, Rule, Submission

    prose = "".join(f"Line {i} of a report, with enough words to cost some tokens.\n" for i in range(300)).encode()
    documents = [Document(f"f{i}.txt", prose) for i in range(5)]
    rules = [Rule("r1", "be tidy")]
    one = service._plan(Submission(documents[:1], rules), "v", 1500, 512)[2]
    split = parts.split_file
    calls: list[str] = []

    def counted(name: str, *args: Any) -> Any:
        calls.append(name)
        return split(name, *args)

    monkeypatch.setattr(planning, "split_file", counted)

    with pytest.raises(service._OverCapacity) as stopped:
        service._plan(Submission(documents, rules), "v", 1500, 512, capacity=one + 1)

    assert calls == ["f0.txt", "f1.txt"]  # the second file passed the capacity; three were never split
    assert stopped.value.estimate == 2 * one

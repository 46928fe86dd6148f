"""core/grounding.py: findings held to the stored text, moved to their quote's line or set aside."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from core import grounding
from core.grounding import PartLines, bare_quote, ground_combine, ground_part, settle, squeeze

TEXT = "id,name,note\n1,Ada,likes tea\n2,Linus,the secret is 42\n3,Grace,  spaced   out\n4,Ken,the secret is 42\n"


def claim(line: int, quote: str, end_line: int | None = None, kind: str = "text") -> dict[str, Any]:
    return {"line": line, "end_line": end_line or line, "kind": kind, "quote": quote, "message": "m"}


def verdict(rule: str, *findings: dict[str, Any], evidence: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"id": rule, "passed": not findings, "findings": list(findings), "evidence": evidence or []}


def test_a_quote_in_its_cited_line_stands_with_the_line_s_text_beside_it() -> None:
    grounded = ground_part([verdict("r", claim(3, "the secret is 42"))], TEXT, 1, 5)

    [found] = grounded.verdicts[0]["findings"]
    assert (found["line"], found["kind"], found["snippet"]) == (3, "text", "2,Linus,the secret is 42")
    assert "cited_line" not in found and grounded.relocated == grounded.ungrounded == 0 and not grounded.reask


def test_a_misnumbered_finding_moves_to_the_nearest_line_holding_its_quote_and_keeps_the_cited_line() -> None:
    grounded = ground_part([verdict("r", claim(4, "the secret is 42"), claim(2, "Ada"))], TEXT, 1, 5)

    moved = grounded.verdicts[0]["findings"]
    assert [(f["line"], f.get("cited_line")) for f in moved] == [(2, None), (3, 4)]  # 3 and 5 hold it: 3 is nearer
    assert grounded.relocated == 1


def test_whitespace_and_line_number_prefixes_are_ignored_but_nothing_else() -> None:
    lines = PartLines(TEXT, 1)

    assert lines.locate("4| 3,Grace, spaced out", 4, 4) == grounding.Located(4, 4, False)
    assert lines.locate("3,Grace,spacedout", 4, 4) is not None
    assert lines.locate("3,grace,spaced out", 4, 4) is None  # case is not whitespace


def test_an_invented_quote_is_ungrounded_and_a_failure_left_without_findings_is_asked_again() -> None:
    grounded = ground_part([verdict("r", claim(2, "password=hunter2")), verdict("s")], TEXT, 1, 5)

    first = grounded.verdicts[0]
    assert first["findings"] == [] and first["passed"] is False
    assert first["ungrounded"] == [
        {"line": 2, "end_line": 2, "quote": "password=hunter2", "message": "m", "source": "finding"}
    ]
    assert grounded.reask == ["r"] and grounded.ungrounded == 1


def test_a_failure_with_one_grounded_finding_left_is_not_asked_again() -> None:
    grounded = ground_part([verdict("r", claim(3, "the secret is 42"), claim(2, "nowhere at all"))], TEXT, 1, 5)

    assert [f["line"] for f in grounded.verdicts[0]["findings"]] == [3] and grounded.reask == []


def test_the_context_header_of_a_later_part_is_never_a_match() -> None:
    # A later CSV part: its text starts at line 40; the header row ("id,name,note") is context, not its text.
    part = "40,Barbara,fine\n41,Dennis,fine\n"

    grounded = ground_part([verdict("r", claim(40, "id,name,note"))], part, 40, 41)

    assert grounded.verdicts[0]["findings"] == [] and grounded.reask == ["r"]


def test_a_quote_spanning_lines_matches_across_the_cited_range_only() -> None:
    lines = PartLines("alpha\nbeta\ngamma\n", 10)

    assert lines.locate("alpha\nbeta", 10, 11) == grounding.Located(10, 11, False)
    assert lines.locate("alpha beta", 10, 11) == grounding.Located(10, 11, False)  # two cited lines
    assert lines.locate("alpha beta", 10, 10) is None  # one quoted line, one cited: no match across a break
    assert lines.locate("alpha beta", 12, 13) == grounding.Located(10, 11, True)
    assert lines.locate("beta\ngamma", 10, 10) == grounding.Located(11, 12, True)


def test_absence_findings_span_the_whole_part_and_need_no_quote() -> None:
    grounded = ground_part(
        [verdict("r", claim(1, "", 5, kind="absence")), verdict("s", claim(2, "", 3, kind="absence"))], TEXT, 1, 5
    )

    whole, partial = grounded.verdicts
    assert whole["findings"][0] | {"message": "m"} == grounding.absence_finding(1, 5, "m")
    assert partial["findings"] == [] and partial["ungrounded"][0]["source"] == "finding"
    assert grounded.checked == 0  # an absence claim has no quote to look up


def test_evidence_is_checked_like_a_finding() -> None:
    evidence = [
        {"line": 1, "quote": "4,Ken,the secret", "note": "n"},  # moves to line 5
        {"line": 2, "quote": "Copyright 2024", "note": "invented"},
    ]

    grounded = ground_part([verdict("r", evidence=evidence)], TEXT, 1, 5)

    [kept] = grounded.verdicts[0]["evidence"]
    assert (kept["line"], kept["snippet"]) == (5, "4,Ken,the secret is 42")
    assert [c["source"] for c in grounded.verdicts[0]["ungrounded"]] == ["evidence"]
    assert grounded.reask == []  # a part's pass needs no evidence


def test_quotes_and_snippets_are_escaped_and_cut() -> None:
    text = "plain\nbell \x07 and escape \x1b[31m red" + "x" * 300 + "\n"

    grounded = ground_part([verdict("r", claim(2, "bell \x07 and escape \x1b[31m red"))], text, 1, 2)

    [found] = grounded.verdicts[0]["findings"]
    assert "\x1b" not in found["quote"] and "\\x1b" in found["quote"] and "\\x07" in found["snippet"]
    assert len(found["snippet"]) == grounding.SNIPPET_CHARS and found["snippet"].endswith("…")


def test_settle_takes_the_second_answer_for_rules_asked_again_only() -> None:
    first = ground_part([verdict("r", claim(2, "invented")), verdict("s", claim(3, "the secret is 42"))], TEXT, 1, 5)
    second = ground_part([verdict("r"), verdict("s")], TEXT, 1, 5)

    settled = settle(first, second)

    assert [v["passed"] for v in settled.verdicts] == [True, False]  # s keeps the first answer
    assert settled.verdicts[0]["ungrounded"][0]["quote"] == "invented"  # kept for audit


def test_a_rule_the_second_answer_does_not_back_either_is_undecided() -> None:
    first = ground_part([verdict("r", claim(2, "invented"))], TEXT, 1, 5)
    second = ground_part([verdict("r", claim(2, "invented again"))], TEXT, 1, 5)

    for settled in (settle(first, second), settle(first, None)):
        [rule] = settled.verdicts
        assert (rule["passed"], rule["undecided"], rule["findings"]) == (None, "ungrounded", [])
        assert settled.undecided
    assert [c["quote"] for c in settle(first, second).verdicts[0]["ungrounded"]] == ["invented", "invented again"]


def _reports() -> list[list[dict[str, Any]]]:
    holder = ground_part(
        [verdict("copyright", evidence=[{"line": 3, "quote": "the secret is 42", "note": "holds"}])], TEXT, 1, 5
    )
    lacking = ground_part([verdict("copyright", claim(6, "", 9, kind="absence"))], "a\nb\nc\nd\n", 6, 9)
    return [holder.verdicts, lacking.verdicts]


def test_a_combine_pass_over_a_failing_report_rests_on_grounded_evidence_copied_from_a_report() -> None:
    reports = _reports()
    backed = {"id": "copyright", "passed": True, "findings": [], "evidence": [{"line": 1, "quote": "secret is"}]}
    unbacked = {**backed, "evidence": [{"line": 3, "quote": "Copyright ACME"}]}

    grounded = ground_combine([backed], reports, [[]], (1, 9), 9)
    refused = ground_combine([unbacked], reports, [[]], (1, 9), 9)

    assert grounded.verdicts[0]["evidence"][0]["line"] == 3 and grounded.relocated == 1 and grounded.reask == []
    assert refused.verdicts[0]["evidence"] == [] and refused.reask == ["copyright"]


def test_a_combine_adds_absence_spanning_its_range_or_quotes_from_reports() -> None:
    reports = _reports()
    raw = {
        "id": "copyright",
        "passed": False,
        "findings": [claim(1, "", 9, kind="absence"), claim(4, "secret is 42"), claim(2, "not in any report")],
        "evidence": [],
    }

    [result] = ground_combine([raw], reports, [[]], (1, 9), 9).verdicts

    assert [(f["line"], f["kind"]) for f in result["findings"]] == [(1, "absence"), (3, "text")]
    assert [c["quote"] for c in result["ungrounded"]] == ["not in any report"]


# --- properties -------------------------------------------------------------------------------------

_WORDS = st.text(alphabet="abcdefgh ,;\t", min_size=0, max_size=30)


@st.composite
def parts(draw: st.DrawFn) -> tuple[str, int]:
    """A part's text (its lines tagged with unique markers, so a marker quote is unique) and its first line."""
    first = draw(st.integers(1, 500))
    bodies = draw(st.lists(_WORDS, min_size=1, max_size=25))
    ending = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    return "".join(f"<{first + i}>{body}{ending}" for i, body in enumerate(bodies)), first


@given(parts(), st.data())
@settings(max_examples=200, deadline=None)
def test_any_misnumbered_finding_inside_the_part_comes_back_to_its_line(part: tuple[str, int], data: Any) -> None:
    text, first = part
    lines = PartLines(text, first)
    true_line = data.draw(st.integers(first, lines.last))
    cited = data.draw(st.integers(first, lines.last))
    content = lines.contents[true_line - first]
    start = data.draw(st.integers(0, max(0, len(content) - 1)))
    quote = content[: max(start, content.index(">") + 1)]  # always holds the line's unique marker

    grounded = ground_part([verdict("r", claim(cited, quote))], text, first, lines.last)

    [found] = grounded.verdicts[0]["findings"]
    assert found["line"] == found["end_line"] == true_line
    assert found.get("cited_line") == (None if cited == true_line else cited)


@given(parts(), st.text(min_size=1, max_size=40), st.integers(-5, 600), st.integers(0, 3))
@settings(max_examples=300, deadline=None)
def test_a_delivered_finding_always_holds_its_quote_within_the_part(
    part: tuple[str, int], quote: str, cited: int, extra: int
) -> None:
    text, first = part
    lines = PartLines(text, first)
    line = max(1, cited)

    grounded = ground_part([verdict("r", claim(line, quote, line + extra))], text, first, lines.last)

    for found in grounded.verdicts[0]["findings"]:
        # relocation never leaves the part
        assert first <= found["line"] <= found["end_line"] <= lines.last
        # never matched across a line break outside the lines it stands at, nor wider than allowed
        held = "".join(lines.contents[found["line"] - first : found["end_line"] - first + 1])
        assert bare_quote(quote) in squeeze(held)
        assert found["end_line"] - found["line"] <= max(grounding.quote_lines(quote), extra + 1) - 1
    if bare_quote(quote) not in squeeze(text):  # a quote absent from the part is never delivered
        assert grounded.verdicts[0]["findings"] == []

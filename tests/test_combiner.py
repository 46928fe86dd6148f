"""The combine step's tree: groups of reports within the part budget, every level smaller."""

from __future__ import annotations

from core import prompt
from core.grounding import absence_finding, text_finding
from core.planning import combine_calls
from core.prompt import combine_groups as groups
from core.prompt import report_tokens
from core.tokens import count_tokens


def _report(i: int, findings: int) -> prompt.Report:
    verdicts = [
        {
            "id": "no-secret",
            "passed": not findings,
            "findings": [
                text_finding(i * 10 + k, i * 10 + k, 'contains "secret"', "the secret", "the secret")
                for k in range(findings)
            ],
            "evidence": [],
        },
        {
            "id": "copyright",
            "passed": i == 0,
            "findings": [] if i == 0 else [absence_finding(i * 10, i * 10 + 9, "does not contain")],
            "evidence": [{"line": 1, "quote": "Copyright 2026", "note": "holds it"}] if i == 0 else [],
        },
        {"id": "polite", "passed": True, "findings": [], "evidence": []},
    ]
    return prompt.Report(i * 10, i * 10 + 9, verdicts)


def _tree(reports: list[prompt.Report], budget: int) -> tuple[int, list[list[list[prompt.Report]]]]:
    levels, calls = [], 0
    while True:
        grouped = groups(reports, budget)
        levels.append(grouped)
        calls += len(grouped)
        if len(grouped) == 1:
            return calls, levels
        reports = [prompt.Report(g[0].first_line, g[-1].last_line, g[0].verdicts) for g in grouped]


def test_groups_keep_order_hold_two_or_more_and_fit_the_budget_in_real_tokens() -> None:
    reports = [_report(i, i % 4) for i in range(60)]
    for budget in (300, 1500):
        grouped = groups(reports, budget)
        assert [r for g in grouped for r in g] == reports
        assert all(len(g) >= 2 for g in grouped)
        for g in grouped:
            lines = "\n".join(prompt.report_line(n, r) for n, r in enumerate(g, start=1))
            if len(g) > 2:  # two reports always go together, whatever they cost
                assert count_tokens(lines) <= budget
            assert sum(report_tokens(n, r) for n, r in enumerate(g, start=1)) >= count_tokens(lines) * 0.95


def test_a_file_of_hundreds_of_parts_combines_in_a_bounded_tree() -> None:
    calls, levels = _tree([_report(i, 1) for i in range(300)], 1500)

    assert len(levels[-1]) == 1
    assert calls < 300 // 5  # many reports per call at the default budget
    assert [len(level) for level in levels] == sorted((len(level) for level in levels), reverse=True)


def test_one_call_combines_the_few_parts_of_an_ordinary_file() -> None:
    calls, _ = _tree([_report(i, 2) for i in range(8)], 1500)
    assert calls == 1


def test_the_intake_estimate_counts_the_tree_s_calls() -> None:
    assert combine_calls(1, 10) == 0
    assert combine_calls(8, 10) == 1
    assert combine_calls(11, 10) == 3
    assert combine_calls(300, 2) >= 299  # an upper bound: a lone last report joins the group before it

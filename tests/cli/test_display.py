"""What the CLI shows (cli/display.py): the live view fed events by hand (per-file bars from
`file_parts_settled`, lines for results), the results table with snippets and undecided rules, and cost:
a validation's, an estimate's (answers checked against the API's own schemas) and the caller's spend."""

from __future__ import annotations

import io
import re
from typing import Any

from rich.console import Console

from app.pricing.schemas import UsageOut
from app.validations.schemas import EstimateOut, ValidationOut
from cli.display import (
    LiveView,
    budget_line,
    estimate_table,
    failing_examples,
    file_summary,
    report_line,
    results_table,
    rule_test_table,
    spend_table,
    status_table,
    usage_line,
    usd,
    verdict_line,
)
from cli.follow import Event

VALIDATION = {
    "id": "0123456789abcdef",
    "status": "RUNNING",
    "run": 1,
    "files": [{"name": "big.csv", "parts": 2}, {"name": "small.md", "parts": 1}],
}


def states(view: LiveView) -> list[tuple[str, float, str, bool]]:
    assert view.progress is not None
    return [(t.description.strip(), t.completed, t.fields["state"], t.visible) for t in view.progress.tasks[1:]]


def test_file_bars_follow_parts_settled_then_give_way_to_the_files_result_line() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, color_system=None, width=120)

    with LiveView(console, VALIDATION) as view:
        view.handle(Event("progress", "2", {"total": 3, "succeeded": 1, "failed": 0, "file_parts_settled": {"0": 1}}))
        assert states(view) == [("big.csv", 1, "running", True), ("small.md", 0, "waiting", True)]
        view.handle(
            Event("progress", "3", {"total": 3, "succeeded": 2, "failed": 0, "file_parts_settled": {"0": 2, "1": 0}})
        )
        assert states(view)[0] == ("big.csv", 2, "combining", True)  # all parts in: its combine step decides
        result = {
            "file": "big.csv",
            "status": "SUCCEEDED",
            "rules": [{"id": "r1", "passed": False, "findings": [{"line": 9, "message": "secret"}]}],
        }
        view.handle(Event("result", "4", result))
        assert states(view)[0][3] is False  # the finished file's bar is hidden...
        assert view.progress is not None and view.progress.tasks[0].completed == 2

    assert "FAIL  big.csv: r1 (1 finding)" in screen.getvalue()  # ...and its line printed above the bars


def test_outside_a_terminal_only_lines_are_printed_and_earlier_runs_stay_quiet() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=False, width=120)

    with LiveView(console, {**VALIDATION, "run": 2}, quiet_before_run=2) as view:
        view.handle(Event("status", "1", {"status": "RUNNING", "run": 1}))
        view.handle(Event("result", "2", {"file": "small.md", "status": "SUCCEEDED", "rules": []}))
        view.handle(Event("status", "5", {"status": "RUNNING", "run": 2}))
        view.handle(Event("result", "6", {"file": "big.csv", "status": "FAILED", "rules": [],
                                          "error": {"type": "InvalidAnswer", "message": "no verdict"}}))  # fmt: skip

    assert view.progress is None
    assert screen.getvalue().splitlines() == [
        "Validation 0123456789abcdef: 2 files, 3 parts",
        "Status RUNNING (run 2)",
        "ERROR big.csv: InvalidAnswer: no verdict",
    ]


# --- the results table and the lines: grounded findings, undecided rules, untrusted text ----------------------
def shown(*renderables: object) -> str:
    """What a reader sees (no colour), wide enough that nothing folds."""
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=False, color_system=None, width=240)
    for renderable in renderables:
        console.print(renderable, highlight=False)
    return screen.getvalue()


GROUNDED = {
    "file": "app.env",
    "status": "SUCCEEDED",
    "rules": [
        {
            "id": "no-secret",
            "passed": False,
            "findings": [
                {"line": 4, "end_line": 4, "location": "line 4", "message": "a token", "kind": "text",
                 "quote": "tok_live", "snippet": "API_TOKEN=tok_live_" + "x" * 100},
                {"line": 9, "end_line": 10, "location": "lines 9-10", "message": "a password", "kind": "text",
                 "quote": "hunter2", "snippet": "user=root\npassword=hunter2", "cited_line": 7},
                {"line": 1, "end_line": 12, "location": "lines 1-12", "message": "no header", "kind": "absence",
                 "quote": "", "snippet": ""},
            ],
        },
        {
            "id": "ids",
            "passed": None,
            "findings": [],
            "ungrounded": [{"line": 2, "end_line": 2, "quote": "x", "message": "m", "source": "finding"}] * 2,
            "undecided": "ungrounded",
        },
    ],
}  # fmt: skip
VALIDATION_DONE = {"id": "v1", "status": "SUCCEEDED", "rules": [{"id": "no-secret"}, {"id": "ids"}]}


def test_the_table_shows_each_findings_snippet_where_it_was_moved_from_and_undecided_rules() -> None:
    text = shown(results_table(VALIDATION_DONE, [GROUNDED]), verdict_line(VALIDATION_DONE, [GROUNDED]))

    assert "line 4: a token" in text
    assert "> API_TOKEN=tok_live_" + "x" * 60 + "…" in text  # the first line, cut to 80 characters
    assert "lines 9-10: a password (model said line 7)" in text  # relocated by the service
    assert "> user=root …" in text  # the first line of two
    assert "lines 1-12: no header (absence)" in text  # nothing to quote: no snippet line
    assert text.count("> ") == 2
    assert "UNDECIDED (ungrounded)" in text
    assert "the model's findings could not be found in the text (2 claims not found)" in text
    assert "1 failed, 1 undecided." in text


def test_a_file_with_no_failure_but_an_undecided_rule_is_undecided_not_passed() -> None:
    undecided = {**GROUNDED, "rules": [{"id": "no-secret", "passed": True, "findings": []}, GROUNDED["rules"][1]]}
    old = {**GROUNDED, "rules": [{"id": "ids", "passed": None, "findings": []}]}  # stored before reasons

    assert file_summary(undecided) == "[yellow]UNDECIDED[/] app.env: ids (ungrounded)"
    assert file_summary(old) == "[yellow]UNDECIDED[/] app.env: ids"
    assert file_summary(GROUNDED).startswith("[red]FAIL[/]  app.env: no-secret (3 findings)")  # a failure wins


def test_a_rule_not_decided_yet_is_pending_and_a_failed_files_rule_an_error() -> None:
    validation = {"id": "v2", "status": "RUNNING", "rules": [{"id": "no-secret"}]}
    running = {
        "file": "big.log",
        "status": "RUNNING",
        "rules": [{"id": "no-secret", "passed": None, "findings": [{"location": "line 3", "message": "s"}]}],
    }
    failed = {"file": "cut.log", "status": "FAILED", "error": {"type": "Timeout", "message": "part 2"},
              "rules": [{"id": "no-secret", "passed": None, "findings": [], "undecided": "error"}]}  # fmt: skip

    text = shown(results_table(validation, [running, failed]), verdict_line(validation, [running, failed]))

    assert re.search(r"big\.log .* pending .* line 3: s", text)
    assert re.search(r"cut\.log .* error .* Timeout: part 2", text)
    assert "0 passed, 0 failed, 1 undecided, 1 pending." in text


def test_text_from_files_and_models_is_shown_as_text_never_as_markup() -> None:
    hostile = "[bold red]PASS[/] [link=https://evil.example]x[/link] \\"
    result = {
        "file": "[b]f.txt",
        "status": "SUCCEEDED",
        "rules": [
            {"id": "r[1]", "passed": False, "findings": [{"location": "line 1", "message": hostile, "cited_line": 2,
                                                          "snippet": hostile, "quote": "q"}]},
            {"id": "r2", "passed": None, "findings": [], "undecided": "[/]"},
        ],
    }  # fmt: skip
    validation = {"id": "v3", "status": "SUCCEEDED", "rules": [{"id": "r[1]"}, {"id": "r2"}]}

    text = shown(results_table(validation, [result]), file_summary(result))

    assert "line 1: [bold red]PASS[/] [link=https://evil.example]x[/link]" in text
    assert "> [bold red]PASS[/] [link=https://evil.example]x[/link]" in text
    assert "[b]f.txt" in text and "r[1]" in text and "UNDECIDED ([/])" in text


def test_a_validation_by_a_stored_rule_set_names_its_version_and_a_rule_test_shows_its_table() -> None:
    by_version = {**VALIDATION_DONE, "ruleset": {"owner": "admin", "name": "pii", "version": 3, "reference": "pii@3"}}
    assert "2 rules (rule set pii@3): 0 passed, 1 failed, 1 undecided." in shown(verdict_line(by_version, [GROUNDED]))
    assert "(rule set" not in shown(verdict_line(VALIDATION_DONE, [GROUNDED]))

    report = {
        "validation_id": "t1",
        "status": "SUCCEEDED",
        "precision": 0.75,
        "recall": None,
        "rules": [
            {"id": "no-secret", "examples": 3, "tp": 1, "fp": 1, "fn": 0, "tn": 1, "undecided": 0, "precision": 0.5,
             "recall": 1.0, "line_exact": {"exact": 0, "checked": 1, "accuracy": 0.0},
             "failing": [
                 {"example": 2, "failure": "wrong_lines", "lines": [2], "undecided": None, "more_findings": 2,
                  "findings": [{"line": 4, "end_line": 5, "message": "[bold]x[/]"}]},
                 {"example": 3, "failure": "undecided", "lines": None, "undecided": "ungrounded", "more_findings": 0,
                  "findings": []},
             ]},
            {"id": "polite", "examples": 0, "tp": 0, "fp": 0, "fn": 0, "tn": 0, "undecided": 0, "precision": None,
             "recall": None, "line_exact": {"exact": 0, "checked": 0, "accuracy": None}, "failing": []},
        ],
    }  # fmt: skip
    text = shown(rule_test_table(report), *failing_examples(report), report_line(report))

    assert re.search(
        r"no-secret\s*│\s*3\s*│\s*1\s*│\s*1\s*│\s*0\s*│\s*1\s*│\s*0\s*│\s*0\.50\s*│\s*1\.00\s*│\s*0/1", text
    )
    assert re.search(r"polite\s*│\s*0(\s*│\s*0){5}\s*│\s*—\s*│\s*—\s*│\s*—", text)
    assert "no-secret example 2: flagged at other lines than its `lines` (expected 2)" in text
    assert "    line 4-5: [bold]x[/]" in text and "    … 2 more" in text  # model text stays text
    assert "no-secret example 3: no verdict (ungrounded)" in text
    assert "Overall: precision 0.75, recall —." in text


# --- cost ----------------------------------------------------------------------------------------------------
def test_amounts_are_dollars_to_the_millionth_the_api_gives_and_null_is_no_price() -> None:
    shown_amounts = [usd(a) for a in (0.001234, 0.0123, 5, 4.999876, 0, 1234.5, None)]

    assert shown_amounts == ["$0.001234", "$0.0123", "$5.00", "$4.999876", "$0.00", "$1234.50", "no price"]


def validation_with(usage: dict[str, Any]) -> dict[str, Any]:
    """A validation as GET /validations/{id} answers it (checked against its schema)."""
    answer = {
        "id": "v9", "status": "SUCCEEDED", "run": 1, "created_at": "2026-12-01T10:00:00Z", "estimated_tokens": 5000,
        "progress": {"total": 2, "succeeded": 2, "failed": 0, "pending": 0},
        "files": [{"name": "a.txt", "size": 10, "parts": 2}], "rules": [{"id": "r1", "text": "t"}],
        "usage": {"prompt_tokens": 1500, "completion_tokens": 120, **usage},
        "links": {"self": "/validations/v9", "results": "/validations/v9/results", "events": "/validations/v9/events"},
    }  # fmt: skip
    ValidationOut.model_validate(answer)
    return answer


def test_status_and_the_summary_show_the_cost_and_the_cached_prompt_tokens_beside_the_tokens() -> None:
    priced = validation_with({"cached_prompt_tokens": 1024, "cost_usd": 0.000417, "model": "gpt-4o-mini"})
    unpriced = validation_with({"model": "house-model"})  # no price: the cost is null, never a guess

    assert re.search(r"tokens\s+1620 used of ~5000 estimated, 1024 prompt tokens cached", shown(status_table(priced)))
    assert re.search(r"cost\s+\$0\.000417 \(gpt-4o-mini\)", shown(status_table(priced)))
    assert re.search(r"cost\s+no price \(house-model\)", shown(status_table(unpriced)))
    assert usage_line(priced) == "Tokens: 1620 used, 1024 prompt tokens cached; cost $0.000417."
    assert usage_line(unpriced) == "Tokens: 1620 used, 0 prompt tokens cached; cost no price."


ESTIMATE = {
    "dry_run": True, "model": "gpt-4o-mini", "tier": "flex", "ruleset": "pii@3", "files": 3, "parts": 5,
    "reused_parts": 1,
    "model_calls": {"parts": 4, "combine": 1, "total": 5},
    "prompt_tokens": {"parts": 12345, "combine": 700, "total": 13045, "cached": 3072, "shared_prefix": 1100},
    "completion_tokens": {"p50": 1044, "p90": 3261, "ratio": {"p50": 0.08, "p90": 0.25, "source": "prior"}},
    "cost_usd": {"standard": {"p50": 0.002264, "p90": 0.003687}, "flex": {"p50": 0.001132, "p90": 0.001844}},
    "reserved_tokens": 20000, "charged_tokens": 18000,
    "would": {"quota": "queue", "reason": "max_running",
              "budget": {"verdict": "admit", "estimate_usd": 0.003687, "remaining_usd": 4.5,
                         "resets_at": "2027-01-01T00:00:00.000Z"}},
    "duration_seconds": {"start_in": 0.0, "run": 12.5},
}  # fmt: skip


def estimate_shown(**changes: Any) -> str:
    answer = {**ESTIMATE, **changes}
    EstimateOut.model_validate(answer)  # the answer the API gives, not a shape made up here
    return "\n".join(line.rstrip() for line in shown(estimate_table(answer)).splitlines()) + "\n"


def test_an_estimate_shows_calls_tokens_the_ratios_source_cost_per_tier_and_what_quota_and_budget_would_do() -> None:
    text = estimate_shown()

    assert re.search(r"model\s+gpt-4o-mini at the flex tier, rule set pii@3", text)
    assert re.search(r"parts\s+5 in 3 files, 1 answered by the reuse cache \(no call\)", text)
    assert re.search(r"calls\s+5: 4 for parts, 1 to combine", text)
    assert re.search(
        r"prompt tokens\s+13,045: 12,345 for parts \(exact\), 700 to combine \(estimated\); 3,072 cached", text
    )
    assert re.search(r"completion tokens\s+p50 1,044, p90 3,261 \(completion ÷ prompt 0\.08 / 0\.25, the prior: ", text)
    assert re.search(r"cost p50–p90\s+standard \$0\.002264 – \$0\.003687\n\s+flex \$0\.001132 – \$0\.001844", text)
    assert re.search(r"quota\s+queue: you have max-running validations running", text)
    assert re.search(r"budget\s+admit: reserves \$0\.003687 of \$4\.50 left; resets 2027-01-01T00:00:00\.000Z", text)
    assert re.search(r"time\s+starts now, runs ~12\.5 s at the deployment's whole target TPM", text)


def test_an_estimate_without_a_price_a_budget_or_room_says_so() -> None:
    refused = {"verdict": "refuse", "estimate_usd": 0.01, "remaining_usd": 0.000001, "resets_at": "2026-12-02T00:00Z"}
    unpriced = {**refused, "estimate_usd": None}
    ratio = {"p50": 0.1, "p90": 0.3, "source": "history"}

    no_price = estimate_shown(cost_usd=None, would={"quota": "admit", "reason": None, "budget": None},
                              duration_seconds={"start_in": 0.0, "run": None})  # fmt: skip
    over = estimate_shown(would={"quota": "refuse", "reason": "max_queued", "budget": refused},
                          duration_seconds={"start_in": 150.0, "run": 7200.0},
                          completion_tokens={"p50": 1, "p90": 3, "ratio": ratio})  # fmt: skip
    budget_unpriced = estimate_shown(would={"quota": "admit", "reason": None, "budget": unpriced})

    assert re.search(r"cost\s+no price for gpt-4o-mini", no_price) and "standard" not in no_price
    assert re.search(r"quota\s+admit\n", no_price) and re.search(r"budget\s+no budget", no_price)
    assert re.search(r"time\s+starts now\n", no_price)
    assert re.search(r"quota\s+refuse \(429\): your queue of waiting validations is full", over)
    assert re.search(r"budget\s+refuse \(429\): needs \$0\.01, \$0\.000001 left; resets 2026-12-02T00:00Z", over)
    assert re.search(r"time\s+starts in ~2 min, runs ~2\.0 h", over)
    assert "from this deployment's ended runs of the model" in over
    assert re.search(r"budget\s+refuse \(422\): the model has no price", budget_unpriced)


def test_usage_shows_a_row_per_period_and_the_budget_line() -> None:
    answer: dict[str, Any] = {
        "user_id": "alice", "current": "day#2026-12-02", "next_cursor": None,
        "items": [
            {"period": "day#2026-12-02", "spent_usd": 0.0123, "reserved_usd": 0.002, "prompt_tokens": 120000,
             "cached_prompt_tokens": 4096, "completion_tokens": 9000, "runs": 7, "unpriced_runs": 1},
            {"period": "day#2026-12-01", "spent_usd": 0.5, "reserved_usd": 0, "prompt_tokens": 1,
             "cached_prompt_tokens": 0, "completion_tokens": 2, "runs": 1, "unpriced_runs": 0},
        ],
        "budget": {"max_spend_usd": 5, "spend_period": "day", "remaining_usd": 4.9857,
                   "resets_at": "2026-12-03T00:00:00.000Z", "threshold_alerted": True},
    }  # fmt: skip
    UsageOut.model_validate(answer)

    text = shown(spend_table(answer, "day"), budget_line(answer["budget"]))

    assert "Spend of alice per UTC day, newest first" in text
    assert re.search(r"^ *2026-12-02 +\$0\.0123 +\$0\.002 +7 +1 +120,000 +4,096 +9,000 *$", text, re.MULTILINE)
    assert text.index("2026-12-02") < text.index("2026-12-01")  # newest first, as the API answers
    assert "Budget $5.00 per day: $4.9857 left, resets 2026-12-03T00:00:00.000Z; 80% alert sent this period." in text
    assert budget_line(None) == "No spend budget."

"""Exports (app/validations/report.py): JSON Lines, CSV and SARIF 2.1.0 from file results.

The SARIF schema is the official one (oasis-tcs/sarif-spec, sarif-2.1/schema/sarif-schema-2.1.0.json,
errata01), shipped beside this test.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema

from app.validations.report import Facts, ReportFormat, render, report_for, stream

SCHEMA = json.loads((Path(__file__).parent / "sarif-schema-2.1.0.json").read_text())
RULES = [
    {"id": "no-secret", "text": 'The file must not contain "secret".'},
    {"id": "r2", "text": "Every row has an id.\nIds are integers, and this second line is not a short description."},
]


def finding(line: int, end: int, message: str, **grounding: Any) -> dict[str, Any]:
    """A finding; `grounding` adds what grounded results carry (quote, snippet, kind, cited_line)."""
    location = f"line {line}" if line == end else f"lines {line}-{end}"
    return {"line": line, "end_line": end, "location": location, "message": message, **grounding}


def grounded(line: int, end: int, message: str, quote: str, snippet: str, **more: Any) -> dict[str, Any]:
    return finding(line, end, message, kind="text", quote=quote, snippet=snippet, **more)


UNGROUNDED_CLAIM = {"line": 2, "end_line": 2, "quote": "passw0rd", "message": "a password", "source": "finding"}

# Five files: one failing a rule at two places (the second moved by the service from the line the
# model cited to where its quote is), one passing, one multi-part file still running (a violation
# found so far, not decided; stored before grounding, so without quote or snippet), one that failed
# to be judged, and one with a rule undecided (the model's failure never found in the text) and a
# rule failed for what the file lacks (an absence finding: no quote, no snippet).
RESULTS: list[dict[str, Any]] = [
    {
        "file": "data set.csv",
        "status": "SUCCEEDED",
        "rules": [
            {
                "id": "no-secret",
                "passed": False,
                "findings": [
                    grounded(3, 3, "secret", "secret", 'token = "secret"'),
                    grounded(7, 9, "=SUM(A1)", "=SUM(A1)", "=SUM(A1)\nb\\x00\nc", cited_line=6),
                ],
                "ungrounded": [],
            },
            {"id": "r2", "passed": True, "findings": [], "ungrounded": []},
        ],
        "parts": {"total": 1, "succeeded": 1, "failed": 0},
    },
    {
        "file": "clean.md",
        "status": "SUCCEEDED",
        "rules": [{"id": "no-secret", "passed": True, "findings": []}, {"id": "r2", "passed": True, "findings": []}],
        "parts": {"total": 1, "succeeded": 1, "failed": 0},
    },
    {
        "file": "big-é.log",
        "status": "RUNNING",
        "rules": [{"id": "no-secret", "passed": None, "findings": [finding(40, 40, "secret")]}],
        "parts": {"total": 3, "succeeded": 1, "failed": 0},
    },
    {
        "file": "broken.csv",
        "status": "FAILED",
        "rules": [],
        "parts": {"total": 1, "succeeded": 0, "failed": 1},
        "error": {"type": "InvalidAnswer", "message": "no verdict for r2"},
    },
    {
        "file": "vague.txt",
        "status": "SUCCEEDED",
        "rules": [
            {
                "id": "no-secret",
                "passed": None,
                "findings": [],
                "ungrounded": [UNGROUNDED_CLAIM],
                "undecided": "ungrounded",
            },
            {
                "id": "r2",
                "passed": False,
                "findings": [finding(1, 4, "no id column", kind="absence", quote="", snippet="")],
                "ungrounded": [],
            },
        ],
        "parts": {"total": 1, "succeeded": 1, "failed": 0},
    },
]


def sarif(status: str = "RUNNING") -> dict[str, Any]:
    document: dict[str, Any] = json.loads(render(report_for(ReportFormat.SARIF, "v1", status, RULES), RESULTS))
    return document


def test_sarif_report_is_valid_sarif_2_1_0_with_one_result_per_finding_at_its_lines() -> None:
    document = sarif()

    jsonschema.Draft4Validator(SCHEMA).validate(document)  # raises with the path at fault
    run = document["runs"][0]
    assert document["version"] == "2.1.0"
    assert [(r["id"], r["fullDescription"]["text"]) for r in run["tool"]["driver"]["rules"]] == [
        (r["id"], r["text"]) for r in RULES
    ]
    assert run["tool"]["driver"]["rules"][1]["shortDescription"]["text"] == "Every row has an id."
    shown = [
        (
            r["ruleId"],
            r["ruleIndex"],
            r["level"],
            r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            r["locations"][0]["physicalLocation"].get("region"),
            r["message"]["text"],
            r.get("properties"),
        )
        for r in run["results"]
    ]
    assert shown == [
        ("no-secret", 0, "error", "data%20set.csv", {"startLine": 3, "endLine": 3,
         "snippet": {"text": 'token = "secret"'}}, "secret", None),
        ("no-secret", 0, "error", "data%20set.csv", {"startLine": 7, "endLine": 9,
         "snippet": {"text": "=SUM(A1)\nb\\x00\nc"}}, "=SUM(A1)", {"cited_line": 6}),  # moved: the model said 6
        ("no-secret", 0, "warning", "big-%C3%A9.log", {"startLine": 40, "endLine": 40}, "secret",
         {"provisional": True}),  # stored before grounding: no snippet
        ("no-secret", 0, "note", "vague.txt", None,
         "Rule no-secret is undecided: the model's findings could not be found in the text (ungrounded)",
         {"undecided": "ungrounded"}),  # one note at the file, never a pass nor a failure
        ("r2", 1, "error", "vague.txt", {"startLine": 1, "endLine": 4}, "no id column", {"kind": "absence"}),
    ]  # fmt: skip
    invocation = run["invocations"][0]
    assert invocation["executionSuccessful"] is False
    assert [n["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for n in invocation[
        "toolExecutionNotifications"
    ]] == ["broken.csv"]  # fmt: skip


def test_sarif_notes_each_undecided_rule_of_a_failed_file_beside_its_notification() -> None:
    failed = {
        "file": "cut.txt",
        "status": "FAILED",
        "rules": [
            {"id": "no-secret", "passed": None, "findings": [finding(5, 5, "secret")], "undecided": "error"},
            {"id": "r2", "passed": None, "findings": [], "ungrounded": [], "undecided": "error"},
        ],
        "parts": {"total": 2, "succeeded": 1, "failed": 1},
        "error": {"type": "Timeout", "message": "part 2"},
    }
    document = json.loads(render(report_for(ReportFormat.SARIF, "v3", "FAILED", RULES), [failed]))

    jsonschema.Draft4Validator(SCHEMA).validate(document)
    run = document["runs"][0]
    assert [(r["ruleId"], r["level"], r["message"]["text"], r["properties"]) for r in run["results"]] == [
        ("no-secret", "note", "Rule no-secret is undecided: the file failed before the rule was decided (error)",
         {"undecided": "error"}),
        ("no-secret", "warning", "secret", {"provisional": True}),  # found by a part before the file failed
        ("r2", "note", "Rule r2 is undecided: the file failed before the rule was decided (error)",
         {"undecided": "error"}),
    ]  # fmt: skip
    assert len(run["invocations"][0]["toolExecutionNotifications"]) == 1


def test_sarif_of_a_succeeded_validation_without_findings_is_valid_and_empty() -> None:
    clean = [RESULTS[1]]
    document = json.loads(render(report_for(ReportFormat.SARIF, "v2", "SUCCEEDED", RULES), clean))

    jsonschema.Draft4Validator(SCHEMA).validate(document)
    assert document["runs"][0]["results"] == []
    assert document["runs"][0]["invocations"][0]["executionSuccessful"] is True


def test_csv_report_has_a_row_per_finding_and_one_per_file_and_rule_without_findings() -> None:
    text = render(report_for(ReportFormat.CSV, "v1", "RUNNING", RULES), RESULTS)
    rows = list(csv.DictReader(io.StringIO(text)))

    # data set.csv: 2 findings + r2 passed; clean.md: 2 passed; big-é.log: 1 provisional finding +
    # r2 without a verdict yet; broken.csv: both rules in error; vague.txt: one undecided rule, one
    # failed for what the file lacks.
    assert [(r["file"], r["rule"], r["verdict"], r["undecided"], r["line"], r["end_line"]) for r in rows] == [
        ("data set.csv", "no-secret", "failed", "", "3", "3"),
        ("data set.csv", "no-secret", "failed", "", "7", "9"),
        ("data set.csv", "r2", "passed", "", "", ""),
        ("clean.md", "no-secret", "passed", "", "", ""),
        ("clean.md", "r2", "passed", "", "", ""),
        ("big-é.log", "no-secret", "undecided", "", "40", "40"),  # not decided yet: no reason
        ("big-é.log", "r2", "undecided", "", "", ""),
        ("broken.csv", "no-secret", "error", "error", "", ""),
        ("broken.csv", "r2", "error", "error", "", ""),
        ("vague.txt", "no-secret", "undecided", "ungrounded", "", ""),
        ("vague.txt", "r2", "failed", "", "1", "4"),
    ]
    assert [(r["quote"], r["snippet"], r["cited_line"]) for r in rows[:2]] == [
        ("secret", 'token = "secret"', ""),
        ("'=SUM(A1)", "'=SUM(A1)\nb\\x00\nc", "6"),  # formulas from the file are text in a spreadsheet
    ]
    assert rows[1]["message"] == "'=SUM(A1)"  # a formula from the model is text in a spreadsheet
    assert rows[7]["message"] == "InvalidAnswer: no verdict for r2"
    assert (rows[10]["quote"], rows[10]["snippet"], rows[10]["message"]) == ("", "", "no id column")
    assert text.startswith(
        "file,file_status,rule,verdict,undecided,line,end_line,location,message,quote,snippet,cited_line,ruleset\r\n"
    )


def test_jsonl_report_has_one_object_per_file_and_rule() -> None:
    lines = render(report_for(ReportFormat.JSONL, "v1", "RUNNING", RULES), RESULTS).splitlines()
    records = [json.loads(line) for line in lines]

    assert len(records) == len(RESULTS) * len(RULES)
    assert [(r["file"], r["rule"], r["verdict"], r["undecided"], len(r["findings"])) for r in records] == [
        ("data set.csv", "no-secret", "failed", None, 2),
        ("data set.csv", "r2", "passed", None, 0),
        ("clean.md", "no-secret", "passed", None, 0),
        ("clean.md", "r2", "passed", None, 0),
        ("big-é.log", "no-secret", "undecided", None, 1),
        ("big-é.log", "r2", "undecided", None, 0),
        ("broken.csv", "no-secret", "error", "error", 0),
        ("broken.csv", "r2", "error", "error", 0),
        ("vague.txt", "no-secret", "undecided", "ungrounded", 0),
        ("vague.txt", "r2", "failed", None, 1),
    ]
    assert records[0]["findings"] == RESULTS[0]["rules"][0]["findings"]  # whole: quote, snippet, kind, cited_line
    assert records[8]["passed"] is None and records[8]["ungrounded"] == [UNGROUNDED_CLAIM]
    assert {len(r["ungrounded"]) for r in records[:8]} == {0}  # [] when the result has none
    assert records[6]["error"] == {"type": "InvalidAnswer", "message": "no verdict for r2"}
    assert {r["validation_id"] for r in records} == {"v1"}


async def test_streamed_pages_make_the_same_document_as_one_render() -> None:
    async def pages() -> AsyncIterator[list[dict[str, Any]]]:
        for start in range(0, len(RESULTS), 3):  # pages of 3: the second page holds one file
            yield RESULTS[start : start + 3]

    async def collect(report_format: ReportFormat) -> str:
        return "".join([piece async for piece in stream(report_for(report_format, "v1", "RUNNING", RULES), pages())])

    for report_format in ReportFormat:
        assert await collect(report_format) == render(report_for(report_format, "v1", "RUNNING", RULES), RESULTS)


def test_every_format_names_the_stored_ruleset_version_and_the_model_and_sarif_the_usage() -> None:
    facts = Facts(ruleset="house@3", model="m", usage={"cost_usd": 0.25})

    rows = [
        json.loads(line)
        for line in render(report_for(ReportFormat.JSONL, "v1", "RUNNING", RULES, facts), RESULTS).splitlines()
    ]
    table = list(
        csv.DictReader(io.StringIO(render(report_for(ReportFormat.CSV, "v1", "RUNNING", RULES, facts), RESULTS)))
    )
    sarif = json.loads(render(report_for(ReportFormat.SARIF, "v1", "SUCCEEDED", RULES, facts), RESULTS))

    assert {r["ruleset"] for r in rows} == {"house@3"}
    assert {r["ruleset"] for r in table} == {"house@3"}
    assert sarif["runs"][0]["properties"]["ruleset"] == "house@3"
    assert sarif["runs"][0]["properties"]["usage"] == {"cost_usd": 0.25}
    assert {r["model"] for r in rows} == {"m"} and sarif["runs"][0]["properties"]["model"] == "m"
    plain = render(report_for(ReportFormat.JSONL, "v1", "RUNNING", RULES), RESULTS).splitlines()
    assert all("ruleset" not in json.loads(line) for line in plain)  # no set: no key

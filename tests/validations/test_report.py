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

from app.validations.report import ReportFormat, render, report_for, stream

SCHEMA = json.loads((Path(__file__).parent / "sarif-schema-2.1.0.json").read_text())
RULES = [
    {"id": "no-secret", "text": 'The file must not contain "secret".'},
    {"id": "r2", "text": "Every row has an id.\nIds are integers, and this second line is not a short description."},
]


def finding(line: int, end: int, message: str) -> dict[str, Any]:
    location = f"line {line}" if line == end else f"lines {line}-{end}"
    return {"line": line, "end_line": end, "location": location, "message": message}


# Four files: one failing a rule at two places, one passing, one multi-part file still running
# (a violation found so far, not decided), one that failed to be judged.
RESULTS: list[dict[str, Any]] = [
    {
        "file": "data set.csv",
        "status": "SUCCEEDED",
        "rules": [
            {"id": "no-secret", "passed": False, "findings": [finding(3, 3, "secret"), finding(7, 9, "=SUM(A1)")]},
            {"id": "r2", "passed": True, "findings": []},
        ],
        "chunks": {"total": 1, "succeeded": 1, "failed": 0},
    },
    {
        "file": "clean.md",
        "status": "SUCCEEDED",
        "rules": [{"id": "no-secret", "passed": True, "findings": []}, {"id": "r2", "passed": True, "findings": []}],
        "chunks": {"total": 1, "succeeded": 1, "failed": 0},
    },
    {
        "file": "big-é.log",
        "status": "RUNNING",
        "rules": [{"id": "no-secret", "passed": None, "findings": [finding(40, 40, "secret")]}],
        "chunks": {"total": 3, "succeeded": 1, "failed": 0},
    },
    {
        "file": "broken.csv",
        "status": "FAILED",
        "rules": [],
        "chunks": {"total": 1, "succeeded": 0, "failed": 1},
        "error": {"type": "InvalidAnswer", "message": "no verdict for r2"},
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
            r["locations"][0]["physicalLocation"]["region"],
            r["message"]["text"],
        )
        for r in run["results"]
    ]
    assert shown == [
        ("no-secret", 0, "error", "data%20set.csv", {"startLine": 3, "endLine": 3}, "secret"),
        ("no-secret", 0, "error", "data%20set.csv", {"startLine": 7, "endLine": 9}, "=SUM(A1)"),
        ("no-secret", 0, "warning", "big-%C3%A9.log", {"startLine": 40, "endLine": 40}, "secret"),
    ]
    assert run["results"][2]["properties"] == {"provisional": True}
    invocation = run["invocations"][0]
    assert invocation["executionSuccessful"] is False
    assert [n["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for n in invocation[
        "toolExecutionNotifications"
    ]] == ["broken.csv"]  # fmt: skip


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
    # r2 without a verdict yet; broken.csv: both rules in error.
    assert [(r["file"], r["rule"], r["verdict"], r["line"], r["end_line"]) for r in rows] == [
        ("data set.csv", "no-secret", "failed", "3", "3"),
        ("data set.csv", "no-secret", "failed", "7", "9"),
        ("data set.csv", "r2", "passed", "", ""),
        ("clean.md", "no-secret", "passed", "", ""),
        ("clean.md", "r2", "passed", "", ""),
        ("big-é.log", "no-secret", "undecided", "40", "40"),
        ("big-é.log", "r2", "undecided", "", ""),
        ("broken.csv", "no-secret", "error", "", ""),
        ("broken.csv", "r2", "error", "", ""),
    ]
    assert rows[1]["message"] == "'=SUM(A1)"  # a formula from the model is text in a spreadsheet
    assert rows[7]["message"] == "InvalidAnswer: no verdict for r2"
    assert text.startswith("file,file_status,rule,verdict,line,end_line,location,message\r\n")


def test_jsonl_report_has_one_object_per_file_and_rule() -> None:
    lines = render(report_for(ReportFormat.JSONL, "v1", "RUNNING", RULES), RESULTS).splitlines()
    records = [json.loads(line) for line in lines]

    assert len(records) == len(RESULTS) * len(RULES)
    assert [(r["file"], r["rule"], r["verdict"], len(r["findings"])) for r in records] == [
        ("data set.csv", "no-secret", "failed", 2),
        ("data set.csv", "r2", "passed", 0),
        ("clean.md", "no-secret", "passed", 0),
        ("clean.md", "r2", "passed", 0),
        ("big-é.log", "no-secret", "undecided", 1),
        ("big-é.log", "r2", "undecided", 0),
        ("broken.csv", "no-secret", "error", 0),
        ("broken.csv", "r2", "error", 0),
    ]
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

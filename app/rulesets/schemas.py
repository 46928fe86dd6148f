"""Request and response shapes of `/rulesets`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.rulesets.records import Example, LastTest, Ruleset, RuleTest, StoredRule, Version
from app.rulesets.scoring import FailingExample, Report, RuleScore

NAME_PATTERN = r"^[a-z0-9_-]+$"  # never `@`, which separates the version in `name@3`
RULE_ID_PATTERN = r"^[A-Za-z0-9_.:-]+$"  # as a submission's rule ids
MAX_DESCRIPTION_CHARS = 2000


class ExampleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(description="A file's text the rule is judged on (one test file per example)")
    violates: bool = Field(description="Whether the text violates the rule: the rule must fail on it")
    lines: list[int] | None = Field(
        default=None,
        description="When it violates: the lines (1-based) its findings must cite, all and only these, for the "
        "example to count as line-exact",
    )


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=64, pattern=RULE_ID_PATTERN)
    text: str = Field(description="The rule as the model is asked it")
    examples: list[ExampleIn] = Field(default_factory=list, description="Test fixtures; never part of a prompt")


class VersionIn(BaseModel):
    """`POST /rulesets/{name}/versions`: the next version's content."""

    model_config = ConfigDict(extra="forbid")
    description: str = Field(default="", max_length=MAX_DESCRIPTION_CHARS)
    rules: list[RuleIn]
    shared: bool | None = Field(
        default=None, description="Admins: share the set with every user (true) or stop (false); omitted: unchanged"
    )


class RulesetIn(VersionIn):
    """`POST /rulesets`: a new rule set and its version 1."""

    name: str = Field(min_length=1, max_length=64, pattern=NAME_PATTERN)


class ExampleOut(BaseModel):
    text: str
    violates: bool
    lines: list[int] | None = None

    @classmethod
    def of(cls, example: Example) -> ExampleOut:
        return cls(text=example.text, violates=example.violates, lines=list(example.lines) or None)


class RuleOut(BaseModel):
    id: str
    text: str
    examples: list[ExampleOut]

    @classmethod
    def of(cls, rule: StoredRule) -> RuleOut:
        return cls(id=rule.id, text=rule.text, examples=[ExampleOut.of(e) for e in rule.examples])


class RuleTestOut(BaseModel):
    validation_id: str = Field(description="The test's validation (kind `test`): GET /validations/{id}, its events")
    started_at: str
    started_by: str
    reported: bool = Field(description="Whether its report is computed and stored on the version")

    @classmethod
    def of(cls, run: RuleTest, reported: bool) -> RuleTestOut:
        return cls(
            validation_id=run.validation_id, started_at=run.started_at, started_by=run.started_by, reported=reported
        )


class VersionSummary(BaseModel):
    version: int
    reference: str = Field(description="`name@version`: what `ruleset` in a submission takes")
    description: str
    rules: int
    examples: int
    digest: str = Field(description="SHA-256 of the description, rules and examples")
    created_at: str
    created_by: str
    test: RuleTestOut | None = None

    @classmethod
    def of(cls, version: Version) -> VersionSummary:
        return cls(
            version=version.version,
            reference=version.reference,
            description=version.description,
            rules=len(version.rules),
            examples=sum(len(r.examples) for r in version.rules),
            digest=version.digest,
            created_at=version.created_at,
            created_by=version.created_by,
            test=RuleTestOut.of(version.test, version.report is not None) if version.test else None,
        )


class VersionOut(BaseModel):
    owner: str
    name: str
    version: int
    reference: str = Field(description="`name@version`: what `ruleset` in a submission takes")
    description: str
    rules: list[RuleOut]
    digest: str = Field(description="SHA-256 of the description, rules and examples")
    created_at: str
    created_by: str
    test: RuleTestOut | None = Field(default=None, description="The version's latest test")

    @classmethod
    def of(cls, version: Version) -> VersionOut:
        return cls(
            owner=version.owner,
            name=version.name,
            version=version.version,
            reference=version.reference,
            description=version.description,
            rules=[RuleOut.of(r) for r in version.rules],
            digest=version.digest,
            created_at=version.created_at,
            created_by=version.created_by,
            test=RuleTestOut.of(version.test, version.report is not None) if version.test else None,
        )


class LastTestOut(BaseModel):
    version: int
    validation_id: str
    started_at: str
    reported: bool = Field(description="Whether its report is computed (GET …/versions/{v}/test computes it)")
    precision: float | None = Field(description="Over all rules: ΣTP / Σ(TP+FP); null when undefined or not reported")
    recall: float | None = Field(description="Over all rules: ΣTP / Σ(TP+FN); null when undefined or not reported")

    @classmethod
    def of(cls, last: LastTest) -> LastTestOut:
        return cls(
            version=last.version,
            validation_id=last.validation_id,
            started_at=last.started_at,
            reported=last.reported,
            precision=last.precision,
            recall=last.recall,
        )


class RulesetOut(BaseModel):
    owner: str
    name: str
    description: str = Field(description="The latest version's description")
    latest_version: int
    shared: bool = Field(description="Readable by every user (an admin's set)")
    retired_at: str | None = Field(
        description="Retired (DELETE): new validations refuse it; its versions stay readable"
    )
    created_at: str
    updated_at: str
    last_test: LastTestOut | None = Field(description="The last test started, of whichever version")

    @classmethod
    def of(cls, ruleset: Ruleset) -> RulesetOut:
        return cls(
            owner=ruleset.owner,
            name=ruleset.name,
            description=ruleset.description,
            latest_version=ruleset.latest,
            shared=ruleset.shared,
            retired_at=ruleset.retired_at,
            created_at=ruleset.created_at,
            updated_at=ruleset.updated_at,
            last_test=LastTestOut.of(ruleset.last_test) if ruleset.last_test else None,
        )


class RulesetDetail(RulesetOut):
    versions: list[VersionSummary] = Field(description="Newest first, a page at a time")
    next_cursor: str | None = Field(description="The next page of versions")


class RulesetPage(BaseModel):
    items: list[RulesetOut] = Field(description="Your sets by name, then the sets others share with you")
    next_cursor: str | None


class FindingOut(BaseModel):
    line: int | None
    end_line: int | None
    message: str


class FailingExampleOut(BaseModel):
    example: int = Field(description="The example's number within its rule (1-based)")
    file: str = Field(description="Its file in the test validation")
    violates: bool
    lines: list[int] | None
    failure: Literal["false_positive", "false_negative", "wrong_lines", "undecided"]
    passed: bool | None = Field(description="The model's verdict for the rule on it")
    undecided: str | None = Field(description="Why no verdict: ungrounded, error, missing (null: it never ended)")
    findings: list[FindingOut] = Field(description="The model's findings on it (the first 5)")
    more_findings: int

    @classmethod
    def of(cls, failing: FailingExample) -> FailingExampleOut:
        return cls(
            example=failing.example,
            file=failing.file,
            violates=failing.violates,
            lines=list(failing.lines) or None,
            failure=failing.failure,
            passed=failing.passed,
            undecided=failing.undecided,
            findings=[FindingOut(line=f.line, end_line=f.end_line, message=f.message) for f in failing.findings],
            more_findings=failing.more_findings,
        )


class LineExactOut(BaseModel):
    exact: int = Field(description="Violating examples whose findings cite exactly their `lines`")
    checked: int = Field(description="Decided violating examples that give `lines`")
    accuracy: float | None = Field(description="exact / checked; null when none was checked")


class RuleScoreOut(BaseModel):
    id: str
    examples: int
    tp: int = Field(description="True positives: violating examples the rule failed on")
    fp: int = Field(description="False positives: clean examples the rule failed on")
    fn: int = Field(description="False negatives: violating examples the rule passed")
    tn: int = Field(description="True negatives: clean examples the rule passed")
    undecided: int = Field(description="Examples without a verdict for the rule: in none of the four counts")
    precision: float | None = Field(description="TP / (TP + FP); null when no example was flagged")
    recall: float | None = Field(description="TP / (TP + FN); null when no example violates")
    line_exact: LineExactOut
    failing: list[FailingExampleOut]

    @classmethod
    def of(cls, score: RuleScore) -> RuleScoreOut:
        return cls(
            id=score.rule_id,
            examples=score.examples,
            tp=score.tp,
            fp=score.fp,
            fn=score.fn,
            tn=score.tn,
            undecided=score.undecided,
            precision=score.precision,
            recall=score.recall,
            line_exact=LineExactOut(exact=score.lines_exact, checked=score.lines_checked, accuracy=score.line_accuracy),
            failing=[FailingExampleOut.of(f) for f in score.failing],
        )


class ReportOut(BaseModel):
    validation_id: str
    status: str = Field(description="The test validation's final status")
    computed_at: str
    precision: float | None = Field(description="Over all rules: ΣTP / Σ(TP+FP)")
    recall: float | None = Field(description="Over all rules: ΣTP / Σ(TP+FN)")
    rules: list[RuleScoreOut]

    @classmethod
    def of(cls, report: Report) -> ReportOut:
        return cls(
            validation_id=report.validation_id,
            status=report.status,
            computed_at=report.computed_at,
            precision=report.precision,
            recall=report.recall,
            rules=[RuleScoreOut.of(r) for r in report.rules],
        )


class RuleTestReport(BaseModel):
    owner: str
    name: str
    version: int
    validation_id: str
    started_at: str
    status: str | None = Field(
        description="The test validation's status; null when you may not read it (a shared set's test, not "
        "reported yet)"
    )
    report: ReportOut | None = Field(description="Once the test ended: stored on the version, computed once")

"""HTTP surface of rule sets. Thin: parse, call the service, shape the answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from app.auth.dependencies import CurrentUser
from app.errors import problem_responses
from app.rulesets.dependencies import Owner, RulesetName, Rulesets, VersionNumber
from app.rulesets.schemas import (
    ReportOut,
    RulesetDetail,
    RulesetIn,
    RulesetOut,
    RulesetPage,
    RuleTestReport,
    VersionIn,
    VersionOut,
    VersionSummary,
)
from app.validations.dependencies import Service
from app.validations.schemas import ValidationOut

Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=2048)]

router = APIRouter(prefix="/rulesets", tags=["rulesets"], responses=problem_responses(401, 403, 422))


def _version_location(version: VersionOut) -> str:
    return f"/rulesets/{version.name}/versions/{version.version}"


@router.post("", status_code=201, response_model=VersionOut, responses=problem_responses(409, 413))
async def create_ruleset(
    body: RulesetIn, principal: CurrentUser, rulesets: Rulesets, response: Response, owner: Owner = None
) -> VersionOut:
    """Create a rule set: its version 1 (201, Location); `shared` (admins) lets every user read it."""
    version = VersionOut.of(await rulesets.create(principal, body, owner))
    response.headers["Location"] = _version_location(version)
    return version


@router.post(
    "/{name}/versions",
    status_code=201,
    response_model=VersionOut,
    responses={
        200: {"model": VersionOut, "description": "Same content as the latest version: that version"},
        **problem_responses(404, 409, 413),
    },
)
async def push_version(
    name: RulesetName,
    body: VersionIn,
    principal: CurrentUser,
    rulesets: Rulesets,
    response: Response,
    owner: Owner = None,
) -> VersionOut:
    """Add the next version (201); content equal to the latest version's answers with that version (200)."""
    version, created = await rulesets.push(principal, name, body, owner)
    shown = VersionOut.of(version)
    response.status_code = 201 if created else 200
    response.headers["Location"] = _version_location(shown)
    return shown


@router.get("", response_model=RulesetPage, responses=problem_responses(400))
async def list_rulesets(
    principal: CurrentUser, rulesets: Rulesets, limit: Limit = 20, cursor: Cursor = None, owner: Owner = None
) -> RulesetPage:
    """Your rule sets by name, then those shared with you; admins may name another user with `owner`."""
    items, next_cursor = await rulesets.list_page(principal, limit, cursor, owner)
    return RulesetPage(items=[RulesetOut.of(r) for r in items], next_cursor=next_cursor)


@router.get("/{name}", response_model=RulesetDetail, responses=problem_responses(400, 404))
async def get_ruleset(
    name: RulesetName,
    principal: CurrentUser,
    rulesets: Rulesets,
    owner: Owner = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> RulesetDetail:
    """A rule set (your own, else the one shared under the name) and its versions, newest first."""
    ruleset, versions, next_cursor = await rulesets.get(principal, name, owner, limit, cursor)
    return RulesetDetail(
        **RulesetOut.of(ruleset).model_dump(),
        versions=[VersionSummary.of(v) for v in versions],
        next_cursor=next_cursor,
    )


@router.get("/{name}/versions/{version}", response_model=VersionOut, responses=problem_responses(404))
async def get_version(
    name: RulesetName, version: VersionNumber, principal: CurrentUser, rulesets: Rulesets, owner: Owner = None
) -> VersionOut:
    """One version: its rules with their examples (never changed once written) and its latest test."""
    return VersionOut.of(await rulesets.version(principal, name, version, owner))


@router.delete("/{name}", response_model=RulesetOut, responses=problem_responses(404))
async def retire_ruleset(
    name: RulesetName, principal: CurrentUser, rulesets: Rulesets, owner: Owner = None
) -> RulesetOut:
    """Retire a rule set: new validations refuse it; its versions stay readable (pushing a version reinstates it)."""
    return RulesetOut.of(await rulesets.retire(principal, name, owner))


@router.post(
    "/{name}/versions/{version}/test",
    status_code=202,
    response_model=ValidationOut,
    responses=problem_responses(400, 404, 409, 429, 502),
)
async def start_test(
    name: RulesetName,
    version: VersionNumber,
    principal: CurrentUser,
    rulesets: Rulesets,
    validations: Service,
    response: Response,
    owner: Owner = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> ValidationOut:
    """Test a version: its examples judged by a validation of kind `test` (202, Location: the validation)."""
    validation = await rulesets.start_test(principal, name, version, owner, validations, idempotency_key)
    response.headers["Location"] = f"/validations/{validation.id}"
    return ValidationOut.of(validation)


@router.get("/{name}/versions/{version}/test", response_model=RuleTestReport, responses=problem_responses(404, 410))
async def get_test(
    name: RulesetName,
    version: VersionNumber,
    principal: CurrentUser,
    rulesets: Rulesets,
    validations: Service,
    owner: Owner = None,
) -> RuleTestReport:
    """The version's latest test: its status while it runs, then its report (per rule TP/FP/FN/TN, precision,
    recall, line-exact accuracy, failing examples)."""
    found, test, status, report = await rulesets.test_report(principal, name, version, owner, validations)
    return RuleTestReport(
        owner=found.owner,
        name=found.name,
        version=found.version,
        validation_id=test.validation_id,
        started_at=test.started_at,
        status=status,
        report=ReportOut.of(report) if report else None,
    )

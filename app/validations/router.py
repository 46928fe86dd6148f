"""HTTP surface of validations. Thin: parse, call the service, shape the answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from app.auth.dependencies import CurrentAdmin, CurrentUser
from app.deps import SettingsDep
from app.errors import problem_responses
from app.limits import ByteGate, declared_length
from app.pagination import encode_cursor
from app.validations import report
from app.validations.dependencies import Service, ValidationId
from app.validations.intake import JsonSubmission, read_submission
from app.validations.schemas import (
    EstimateOut,
    FileResult,
    HistoryPage,
    NotificationResent,
    ResultPage,
    ValidationOut,
    ValidationPage,
    ruleset_reference,
)

Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=2048)]

router = APIRouter(prefix="/validations", tags=["validations"], responses=problem_responses(401, 422))

_SUBMISSION_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files", "rules"],
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "rules": {"type": "string", "description": "JSON array of rules: strings or {id, text}"},
                    },
                }
            },
            "application/json": {
                "schema": JsonSubmission.model_json_schema(ref_template="#/components/schemas/{model}")
            },
        },
    }
}


@router.post(
    "",
    status_code=202,
    response_model=ValidationOut,
    openapi_extra=_SUBMISSION_BODY,
    responses={
        **problem_responses(400, 409, 413, 415, 429, 502),
        200: {"model": EstimateOut, "description": "`dry_run=true`: the estimate (nothing stored or started)"},
    },
)
async def create_validation(
    request: Request,
    response: Response,
    principal: CurrentUser,
    service: Service,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    dry_run: Annotated[
        bool, Query(description="true: answer what it would cost and when it would run (200); store nothing")
    ] = False,
) -> ValidationOut | JSONResponse:
    """Submit files and rules; the validation starts at once (202, Location). With `dry_run=true`,
    the same checks and errors, then an estimate instead (200): nothing stored, started or charged."""
    gate: ByteGate = request.app.state.intake_gate
    async with gate.hold(declared_length(request.scope) or gate.capacity):  # before a body byte is read
        submission = await read_submission(request, settings)
        if dry_run:
            estimate = EstimateOut.model_validate(await service.estimate(principal, submission))
            return JSONResponse(estimate.model_dump(mode="json"), status_code=200)
        validation, _ = await service.create(principal, submission, idempotency_key)
    response.headers["Location"] = f"/validations/{validation.id}"
    return ValidationOut.of(validation)


@router.get("", response_model=ValidationPage, responses=problem_responses(400, 403))
async def list_validations(
    principal: CurrentUser,
    service: Service,
    limit: Limit = 20,
    cursor: Cursor = None,
    owner: Annotated[str | None, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")] = None,
) -> ValidationPage:
    """The caller's validations, newest first; admins may name another user with `owner`."""
    items, next_cursor = await service.list_page(principal, limit, cursor, owner)
    return ValidationPage(items=[ValidationOut.of(i) for i in items], next_cursor=next_cursor)


@router.get("/{validation_id}", response_model=ValidationOut, responses=problem_responses(404))
async def get_validation(validation_id: ValidationId, principal: CurrentUser, service: Service) -> ValidationOut:
    """Status, progress and token usage of one validation."""
    return ValidationOut.of(await service.get(principal, validation_id))


@router.get("/{validation_id}/results", response_model=ResultPage, responses=problem_responses(400, 404, 410))
async def get_results(
    validation_id: ValidationId, principal: CurrentUser, service: Service, limit: Limit = 20, cursor: Cursor = None
) -> ResultPage:
    """Per-file results, readable while the validation runs (partial results)."""
    items, next_cursor = await service.results(principal, validation_id, limit, cursor)
    return ResultPage(items=[FileResult.model_validate(i) for i in items], next_cursor=next_cursor)


@router.get(
    "/{validation_id}/report",
    response_class=StreamingResponse,
    responses={
        200: {"content": {t: {} for t in report.MEDIA_TYPES.values()}, "description": "The report, streamed"},
        **problem_responses(400, 404),
    },
)
async def get_report(
    validation_id: ValidationId,
    principal: CurrentUser,
    service: Service,
    report_format: Annotated[report.ReportFormat, Query(alias="format", description="jsonl, csv or sarif (2.1.0)")],
) -> StreamingResponse:
    """Results as a download for CI or a spreadsheet: JSON Lines, CSV or SARIF 2.1.0, streamed."""
    validation = await service.get(principal, validation_id)  # same authorization as GET /validations/{id}
    usage = ValidationOut.of(validation).usage
    facts = report.Facts(
        ruleset=ruleset_reference(validation),
        model=validation.model,
        usage=usage.model_dump(include={"prompt_tokens", "cached_prompt_tokens", "completion_tokens", "cost_usd"}),
    )
    rendered = report.report_for(report_format, validation.id, validation.status, validation.rules, facts)
    return StreamingResponse(
        report.stream(rendered, service.result_pages(principal, validation_id)),
        media_type=report.MEDIA_TYPES[report_format],
        headers={"Content-Disposition": f'attachment; filename="{validation.id}.{report.SUFFIXES[report_format]}"'},
    )


@router.post(
    "/{validation_id}/retry",
    status_code=202,
    response_model=ValidationOut,
    responses=problem_responses(404, 409, 410, 429, 502),
)
async def retry_validation(validation_id: ValidationId, principal: CurrentUser, service: Service) -> ValidationOut:
    """Rerun only the parts without a result, as a new execution of the same validation."""
    return ValidationOut.of(await service.retry(principal, validation_id))


@router.post(
    "/{validation_id}/notification",
    status_code=202,
    response_model=NotificationResent,
    responses=problem_responses(404, 409, 502),
)
async def resend_notification(
    validation_id: ValidationId, principal: CurrentUser, service: Service
) -> NotificationResent:
    """Send the webhook event of an ended validation again (same `webhook-id`), with the usual
    retries: for a receiver that was down longer than them. 409 while its first delivery still
    runs, or within a minute of the last resend. Audited."""
    return NotificationResent(**await service.resend_notification(principal, validation_id))


@router.delete("/{validation_id}/data", response_model=ValidationOut, responses=problem_responses(404, 409, 502))
async def delete_validation_data(
    validation_id: ValidationId, principal: CurrentUser, service: Service
) -> ValidationOut:
    """Delete an ended validation's files, parts, results and events (owner or admin; 409 while it
    runs). What stays is a tombstone: status, counts, usage and `purged_at`. Audited."""
    return ValidationOut.of(await service.purge(principal, validation_id))


@router.delete(
    "/{validation_id}", status_code=202, response_model=ValidationOut, responses=problem_responses(404, 409, 502)
)
async def cancel_validation(validation_id: ValidationId, principal: CurrentUser, service: Service) -> ValidationOut:
    """Cancel (StopExecution): CANCELLED, or CANCELLING until the stop is confirmed."""
    return ValidationOut.of(await service.cancel(principal, validation_id))


@router.get("/{validation_id}/history", response_model=HistoryPage, responses=problem_responses(400, 403, 404, 502))
async def get_history(
    validation_id: ValidationId, principal: CurrentAdmin, service: Service, limit: Limit = 100, cursor: Cursor = None
) -> HistoryPage:
    """Step Functions history events of the current execution (admins, for debugging)."""
    events, token = await service.history(principal, validation_id, limit, cursor)
    return HistoryPage(events=events, next_cursor=encode_cursor(token) if token else None)

"""HTTP surface of uploads straight to S3. Thin: parse, call the service, shape."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.auth.dependencies import CurrentUser
from app.errors import problem_responses
from app.uploads.dependencies import UploadId, Uploads, presigning
from app.uploads.records import Declaration
from app.uploads.schemas import CompleteIn, UploadOut, UploadsIn, UploadsOut, ticket_of

router = APIRouter(prefix="/uploads", tags=["uploads"], lifespan=presigning, responses=problem_responses(401, 422))


@router.post("", status_code=201, response_model=UploadsOut, responses=problem_responses(413, 415))
async def create_uploads(body: UploadsIn, principal: CurrentUser, uploads: Uploads, response: Response) -> UploadsOut:
    """Declare files to upload straight to S3: per file, a presigned PUT or a multipart upload's part URLs."""
    issued = await uploads.create(principal, [Declaration(f.name, f.size, f.sha256) for f in body.files])
    response.headers["Cache-Control"] = "no-store"  # the URLs let anyone holding them write
    return UploadsOut(uploads=[ticket_of(i) for i in issued])


@router.get("/{upload_id}", response_model=UploadOut, responses=problem_responses(404))
async def get_upload(upload_id: UploadId, principal: CurrentUser, uploads: Uploads) -> UploadOut:
    """Your upload's state: pending, uploaded (S3 holds the declared bytes) or expired."""
    return UploadOut.of(await uploads.get(principal, upload_id))


@router.post("/{upload_id}/complete", response_model=UploadOut, responses=problem_responses(404, 409, 410))
async def complete_upload(
    upload_id: UploadId, principal: CurrentUser, uploads: Uploads, body: CompleteIn | None = None
) -> UploadOut:
    """Finish your upload: a multipart upload's parts are joined, a single PUT's object is checked."""
    parts = [(p.number, p.etag) for p in body.parts] if body else []
    return UploadOut.of(await uploads.complete(principal, upload_id, parts))

"""Request and response shapes of `/uploads`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.uploads.records import Upload, UploadState
from app.uploads.service import Issued
from core.clock import iso_of


class FileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=255, description="The file's name, checked as an inline file's")
    size: int = Field(ge=1, le=2**53, description="Its bytes, exactly (at most `MAX_UPLOAD_BYTES`)")
    sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-fA-F]{64}$",
        description="Its SHA-256 (hex): a single PUT of other bytes is refused by S3",
    )


class UploadsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    files: list[FileIn] = Field(min_length=1, description="The files to upload (at most `MAX_FILES`)")


class PartIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    number: int = Field(ge=1, le=10_000)
    etag: str = Field(min_length=1, max_length=128, description="The `ETag` header of the part's PUT answer")


class CompleteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    parts: list[PartIn] = Field(
        default_factory=list, max_length=10_000, description="A multipart upload's parts, in order; none for a PUT"
    )


class PartOut(BaseModel):
    number: int
    size: int = Field(description="The bytes this part's PUT must carry, exactly")
    url: str = Field(description="Presigned: PUT the part here")


class SinglePutOut(BaseModel):
    kind: Literal["single"]
    upload_id: str
    name: str
    size: int
    expires_at: str = Field(description="The URL and the upload expire then")
    method: Literal["PUT"]
    url: str = Field(description="Presigned: PUT the whole file here")
    headers: dict[str, str] = Field(
        description="Send these headers with the PUT, as given: the URL is signed with them"
    )


class MultipartOut(BaseModel):
    kind: Literal["multipart"]
    upload_id: str
    name: str
    size: int
    expires_at: str = Field(description="The URLs and the upload expire then")
    part_size: int = Field(description="Every part but the last has this many bytes")
    parts: list[PartOut]
    complete_url: str = Field(description="POST the parts' ETags here once every part is uploaded")


Ticket = Annotated[SinglePutOut | MultipartOut, Field(discriminator="kind")]


def ticket_of(issued: Issued) -> SinglePutOut | MultipartOut:
    upload = issued.upload
    expires_at = iso_of(upload.expires_at)
    if issued.put is not None:
        return SinglePutOut(
            kind="single",
            upload_id=upload.upload_id,
            name=upload.name,
            size=upload.size,
            expires_at=expires_at,
            method="PUT",
            url=issued.put.url,
            headers=issued.put.headers,
        )
    return MultipartOut(
        kind="multipart",
        upload_id=upload.upload_id,
        name=upload.name,
        size=upload.size,
        expires_at=expires_at,
        part_size=upload.part_size or 0,
        parts=[PartOut(number=p.number, size=p.size, url=p.url) for p in issued.parts],
        complete_url=f"/uploads/{upload.upload_id}/complete",
    )


class UploadsOut(BaseModel):
    uploads: list[Ticket] = Field(description="One per file, in the order declared")


class UploadOut(BaseModel):
    upload_id: str
    name: str
    size: int
    kind: Literal["single", "multipart"]
    state: UploadState = Field(description="pending; uploaded (S3 holds the declared bytes); expired")
    sha256: str | None = Field(description="As declared (hex)")
    created_at: str
    expires_at: str
    uploaded_at: str | None

    @classmethod
    def of(cls, upload: Upload) -> UploadOut:
        return cls(
            upload_id=upload.upload_id,
            name=upload.name,
            size=upload.size,
            kind="multipart" if upload.multipart else "single",
            state=upload.state,
            sha256=upload.sha256,
            created_at=upload.created_at,
            expires_at=iso_of(upload.expires_at),
            uploaded_at=upload.uploaded_at,
        )

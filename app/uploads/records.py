"""An upload as stored in DynamoDB (`uploads`, keyed by `upload_id`, TTL `expires_at`): typed at
the store boundary. Field names are the stored attribute names; the record reads and writes
itself (`of(item)`, `to_item()`), so a new field is one line here."""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, Self

from app.uploads import layout


class UploadState(StrEnum):
    PENDING = "pending"  # declared; S3 holds nothing confirmed yet
    UPLOADED = "uploaded"  # S3 holds the declared bytes (size, and SHA-256 where S3 checked it)
    EXPIRED = "expired"  # past `expires_at`: never stored, the state a read sees from then on


@dataclass(frozen=True)
class Declaration:
    """One file as `POST /uploads` declares it."""

    name: str
    size: int
    sha256: str | None = None  # hex


@dataclass(frozen=True)
class Upload:
    upload_id: str
    owner: str
    name: str  # as checked: NFC, stripped
    size: int  # declared bytes
    key: str  # the S3 object
    created_at: str
    expires_at: int  # epoch seconds: unusable from then on (also DynamoDB's TTL attribute)
    state: UploadState = UploadState.PENDING
    sha256: str | None = None  # hex, as declared
    part_size: int | None = None  # multipart uploads only
    multipart_id: str | None = None  # S3's UploadId of a multipart upload
    uploaded_at: str | None = None
    etag: str | None = None  # of the object confirmed: a later read can insist on it (IfMatch)

    @classmethod
    def of(cls, item: dict[str, Any]) -> Self:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in item.items() if k in names and v is not None}
        return cls(**{**values, "state": UploadState(values.get("state", UploadState.PENDING))})

    def to_item(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @property
    def multipart(self) -> bool:
        return self.part_size is not None

    @property
    def part_sizes(self) -> list[int]:
        """Each part's bytes (a multipart upload's); [] for a single PUT."""
        return layout.part_sizes(self.size, self.part_size) if self.part_size else []

    def expired(self, now: float) -> bool:
        return now >= self.expires_at


@dataclass(frozen=True)
class CompletedUpload:
    """An upload a validation may read: what `UploadService.completed` answers."""

    upload_id: str
    name: str
    size: int
    key: str
    etag: str  # GetObject with IfMatch=etag reads exactly the bytes confirmed
    sha256: str | None  # hex, as declared
    sha256_checked: bool  # False: declared but not checked yet (multipart: S3 checks parts, not the file)

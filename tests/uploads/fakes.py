"""In-memory fakes of `UploadService`'s ports (app/uploads/ports.py): the `uploads` table and S3.

`FakeObjects` is S3 as the service sees it: objects by key, multipart uploads by id with their
parts. A test plays the client with `put` and `put_part` (S3's own checks, such as the signed
length or SHA-256, are not mimicked: a test stores what it wants S3 to hold). Presigned URLs are
opaque strings. Neither fake mimics DynamoDB's types or S3's part-size minimum.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from app.uploads.objects import MultipartGone, PartsRefused, PresignedPut, StoredObject
from app.uploads.records import Upload, UploadState


@dataclass
class FakeRecords:
    items: dict[str, Upload] = field(default_factory=dict)
    failure: BaseException | None = None  # the next put_all raises it

    async def put_all(self, uploads: Sequence[Upload]) -> None:
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure
        self.items.update({u.upload_id: u for u in uploads})

    async def delete_all(self, upload_ids: Sequence[str]) -> None:
        for upload_id in upload_ids:
            self.items.pop(upload_id, None)

    async def get(self, upload_id: str) -> Upload | None:
        return self.items.get(upload_id)

    async def get_many(self, upload_ids: Sequence[str]) -> dict[str, Upload]:
        return {i: self.items[i] for i in upload_ids if i in self.items}

    async def mark_uploaded(self, upload: Upload, etag: str, at: str) -> Upload:
        current = self.items[upload.upload_id]
        if current.state is UploadState.PENDING:  # the store's condition
            self.items[upload.upload_id] = replace(current, state=UploadState.UPLOADED, etag=etag, uploaded_at=at)
        return self.items[upload.upload_id]


@dataclass
class FakeObjects:
    objects: dict[str, StoredObject] = field(default_factory=dict)
    multiparts: dict[str, dict[int, bytes]] = field(default_factory=dict)  # id -> number -> bytes
    aborted: list[str] = field(default_factory=list)
    used: set[str] = field(default_factory=set)  # keys a validation took (tagged used)
    fail_start: int | None = None  # the nth start_multipart (1-based) raises
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _starts: int = 0

    async def presign_put(self, key: str, size: int, sha256: str | None, expires_in: int) -> PresignedPut:
        headers = {"x-amz-checksum-sha256": sha256} if sha256 else {}
        return PresignedPut(f"https://s3.test/{key}?size={size}&expires={expires_in}", headers)

    async def presign_part(self, key: str, multipart_id: str, number: int, size: int, expires_in: int) -> str:
        return f"https://s3.test/{key}?uploadId={multipart_id}&partNumber={number}&size={size}"

    async def start_multipart(self, key: str) -> str:
        self._starts += 1
        if self._starts == self.fail_start:
            raise RuntimeError("start refused")
        multipart_id = f"mp-{next(self._ids)}"
        self.multiparts[multipart_id] = {}
        return multipart_id

    async def abort_multipart(self, key: str, multipart_id: str) -> None:
        self.multiparts.pop(multipart_id, None)
        self.aborted.append(multipart_id)

    async def complete_multipart(self, key: str, multipart_id: str, parts: list[tuple[int, str]]) -> None:
        if multipart_id not in self.multiparts:
            raise MultipartGone(multipart_id)
        stored = self.multiparts[multipart_id]
        if any(number not in stored or etag != etag_of(stored[number]) for number, etag in parts):
            raise PartsRefused("InvalidPart")
        data = b"".join(stored[number] for number, _ in parts)
        self.objects[key] = StoredObject(size=len(data), etag=f"{etag_of(data)}-{len(parts)}", sha256=None)
        del self.multiparts[multipart_id]

    async def mark_used(self, key: str) -> None:
        self.used.add(key)

    async def head(self, key: str, *, checksum: bool = False) -> StoredObject | None:
        stored = self.objects.get(key)
        return stored if stored is None or checksum else replace(stored, sha256=None)

    # --- the client's side -------------------------------------------------------------
    def put(self, key: str, data: bytes, *, with_sha256: bool = True) -> None:
        sha256 = base64.b64encode(hashlib.sha256(data).digest()).decode() if with_sha256 else None
        self.objects[key] = StoredObject(size=len(data), etag=etag_of(data), sha256=sha256)

    def put_part(self, multipart_id: str, number: int, data: bytes) -> str:
        self.multiparts[multipart_id][number] = data
        return etag_of(data)


def etag_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()

"""Uploads: declare files, hand out presigned URLs, confirm what S3 holds, and answer which
completed uploads a validation may read.

- Every limit and name check runs before anything is written; a request refused leaves nothing.
- An upload is its caller's: another user's is answered 404, as an unknown id is.
- Past `expires_at` an upload cannot be completed or used (410); reads show it `expired`.
- "Confirmed" means S3 holds an object of the declared size (and, for a single PUT with a
  SHA-256, that S3 checked those bytes against it); a mismatch is 422 naming the upload, every
  time it is checked. A single PUT is confirmed by the first read that finds its object; a
  multipart upload by its complete call.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from app.errors import Conflict, Gone, NotFound, PayloadTooLarge, Unprocessable, UnsupportedMediaType
from app.identity.principal import Principal
from app.settings import Settings
from app.uploads import layout
from app.uploads.objects import MultipartGone, PartsRefused, PresignedPut
from app.uploads.ports import Objects, Records
from app.uploads.records import CompletedUpload, Declaration, Upload, UploadState

# The inline path's file-name rule, the same for uploaded files (a private helper of the intake,
# imported rather than copied: one rule).
from app.validations.intake import _check_name as check_file_name
from core.clock import iso_of
from core.text import BINARY_SUFFIXES

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True)
class PresignedPart:
    number: int  # 1-based
    size: int  # the bytes its URL accepts
    url: str


@dataclass(frozen=True)
class Issued:
    """A new upload and how to send its bytes: one presigned PUT, or one per part."""

    upload: Upload
    put: PresignedPut | None = None
    parts: tuple[PresignedPart, ...] = ()


class UploadService:
    def __init__(self, store: Records, objects: Objects, settings: Settings, clock: Clock = time.time) -> None:
        self._store = store
        self._objects = objects
        self._settings = settings
        self._clock = clock

    # --- declaring ---------------------------------------------------------------------
    async def create(self, principal: Principal, files: Sequence[Declaration]) -> list[Issued]:
        """New uploads for `files`, with their URLs (valid until the uploads expire)."""
        limit = self._settings.max_files
        if len(files) > limit:
            raise PayloadTooLarge(
                f"{len(files)} files; the limit is {limit} per request.",
                field="files",
                limit="max_files",
                limit_value=limit,
            )
        declared = [self._checked(index, file) for index, file in enumerate(files)]
        now = self._clock()
        lifetime = self._settings.upload_ttl_seconds
        uploads = [self._new(principal, file, iso_of(now), int(now) + lifetime) for file in declared]
        uploads = await self._start_multiparts(uploads)
        try:
            await self._store.put_all(uploads)
        except Exception:
            await self._undo(uploads, written=True)
            raise
        log.info("uploads declared by %s: %s", principal.user_id, ",".join(u.upload_id for u in uploads))
        issued = []
        for upload in uploads:
            issued.append(await self._presign(upload, lifetime))
            await asyncio.sleep(0)  # presigning is CPU (under a millisecond a URL): let other requests in
        return issued

    def _checked(self, index: int, file: Declaration) -> Declaration:
        field = f"files[{index}]"
        name = check_file_name(file.name, f"{field}.name")
        suffix = PurePosixPath(name).suffix.lower()
        if suffix in BINARY_SUFFIXES:
            raise UnsupportedMediaType(
                f"File {name!r} is not a text file ({suffix}).", file=name, field=f"{field}.name"
            )
        limit = self._settings.max_upload_bytes
        if file.size > limit:
            raise PayloadTooLarge(
                f"File {name!r} is {file.size} bytes; the limit is {limit} bytes per uploaded file.",
                file=name,
                field=f"{field}.size",
                limit="max_upload_bytes",
                limit_value=limit,
            )
        return Declaration(name, file.size, file.sha256.lower() if file.sha256 else None)

    def _new(self, principal: Principal, file: Declaration, created_at: str, expires_at: int) -> Upload:
        upload_id = uuid.uuid4().hex
        multipart = file.size > self._settings.upload_multipart_threshold_bytes
        return Upload(
            upload_id=upload_id,
            owner=principal.user_id,
            name=file.name,
            size=file.size,
            key=layout.object_key(principal.user_id, upload_id),
            created_at=created_at,
            expires_at=expires_at,
            sha256=file.sha256,
            part_size=layout.part_size_for(file.size, self._settings.upload_part_bytes) if multipart else None,
        )

    async def _start_multiparts(self, uploads: list[Upload]) -> list[Upload]:
        """The uploads with the S3 multipart uploads of the large ones started; none left on failure."""

        async def start(upload: Upload) -> Upload:
            if not upload.multipart:
                return upload
            return replace(upload, multipart_id=await self._objects.start_multipart(upload.key))

        outcomes = await asyncio.gather(*(start(u) for u in uploads), return_exceptions=True)
        started = [o for o in outcomes if isinstance(o, Upload)]
        failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if failure is not None:
            await self._undo(started, written=False)
            raise failure
        return started

    async def _undo(self, uploads: Sequence[Upload], *, written: bool) -> None:
        """Abort the multipart uploads started and delete the records (if some were `written`), as
        far as AWS lets: what is left expires (the records' TTL; the bucket aborts multipart
        uploads after a day)."""
        for upload in uploads:
            if upload.multipart_id is None:
                continue
            try:
                await self._objects.abort_multipart(upload.key, upload.multipart_id)
            except Exception:  # the refusal being answered matters more; the lifecycle aborts it
                log.warning("upload %s: its multipart upload could not be aborted", upload.upload_id, exc_info=True)
        if not written:
            return
        try:
            await self._store.delete_all([u.upload_id for u in uploads])
        except Exception:  # as above: the records expire
            log.warning("uploads %s: records could not be deleted", [u.upload_id for u in uploads], exc_info=True)

    async def _presign(self, upload: Upload, expires_in: int) -> Issued:
        if upload.multipart_id is None:
            sha256 = layout.sha256_base64(upload.sha256) if upload.sha256 else None
            return Issued(upload, put=await self._objects.presign_put(upload.key, upload.size, sha256, expires_in))
        parts = [
            PresignedPart(
                number,
                size,
                await self._objects.presign_part(upload.key, upload.multipart_id, number, size, expires_in),
            )
            for number, size in enumerate(upload.part_sizes, start=1)
        ]
        return Issued(upload, parts=tuple(parts))

    # --- reading and completing --------------------------------------------------------
    async def get(self, principal: Principal, upload_id: str) -> Upload:
        """The caller's upload in its state now: a pending one whose object S3 holds is confirmed."""
        upload = await self._own(principal, upload_id)
        if upload.expired(self._clock()):
            return replace(upload, state=UploadState.EXPIRED)
        return await self._confirm(upload) if upload.state is UploadState.PENDING else upload

    async def complete(self, principal: Principal, upload_id: str, parts: list[tuple[int, str]]) -> Upload:
        """Finish the caller's upload: join a multipart upload's `parts` ((number, ETag), in order),
        or check a single PUT's object. Completing a completed upload answers it again."""
        upload = await self._own(principal, upload_id)
        self._alive(upload, "upload_id")
        if upload.state is UploadState.UPLOADED:
            return upload
        if upload.multipart_id is None:
            if parts:
                raise Unprocessable(
                    f"Upload {upload_id} is one PUT, not a multipart upload: complete it without parts.",
                    field="parts",
                    upload_id=upload_id,
                )
            return await self._ready(upload)
        self._check_parts(upload, parts)
        try:
            await self._objects.complete_multipart(upload.key, upload.multipart_id, parts)
        except PartsRefused as exc:
            raise Unprocessable(
                f"S3 refused the parts of upload {upload_id} ({exc.code}): list each part with the ETag its PUT "
                "answered, every part sent in full.",
                field="parts",
                upload_id=upload_id,
                aws_error=exc.code,
            ) from exc
        except MultipartGone:  # completed by an earlier call whose answer was lost, or aborted
            log.info("upload %s: S3 no longer knows its multipart upload; checking the object", upload_id)
        confirmed = await self._confirm(upload)
        if confirmed.state is UploadState.PENDING:
            raise Conflict(
                f"Upload {upload_id}'s multipart upload was aborted and nothing was stored: create a new upload.",
                field="upload_id",
                upload_id=upload_id,
            )
        return confirmed

    async def completed(self, principal: Principal, upload_ids: Sequence[str]) -> list[CompletedUpload]:
        """The caller's uploads that a validation may read, in the order given; refused as a whole
        when one is not: unknown or another user's (404), expired (410), not uploaded or not
        completed yet (409), holding other bytes than declared (422), listed twice (422). Each
        problem names `uploads[<index>]` and the `upload_id`."""
        repeated = sorted({i for i in upload_ids if upload_ids.count(i) > 1})
        if repeated:
            raise Unprocessable(
                f"List each upload once; repeated: {', '.join(repeated)}.", field="uploads", upload_id=repeated[0]
            )
        found = await self._store.get_many(upload_ids)
        for index, upload_id in enumerate(upload_ids):
            upload = found.get(upload_id)
            if upload is None or upload.owner != principal.user_id:
                raise NotFound(f"No upload {upload_id!r}.", field=f"uploads[{index}]", upload_id=upload_id)
            self._alive(upload, f"uploads[{index}]")
        outcomes = await asyncio.gather(
            *(self._ready(found[upload_id], f"uploads[{index}]") for index, upload_id in enumerate(upload_ids)),
            return_exceptions=True,
        )
        ready = []
        for outcome in outcomes:  # the first problem in the list's order
            if isinstance(outcome, BaseException):
                raise outcome
            ready.append(outcome)
        return [
            CompletedUpload(
                upload_id=u.upload_id,
                name=u.name,
                size=u.size,
                key=u.key,
                etag=u.etag or "",
                sha256=u.sha256,
                sha256_checked=u.sha256 is not None and not u.multipart,
            )
            for u in ready
        ]

    async def take(self, principal: Principal, upload_ids: Sequence[str]) -> list[CompletedUpload]:
        """`completed`, then each object tagged used, so the lifecycle keeps it as long as the
        validation that reads it (a validation may take an upload another one took before)."""
        uploads = await self.completed(principal, upload_ids)
        await asyncio.gather(*(self._objects.mark_used(u.key) for u in uploads))
        return uploads

    # --- rules -------------------------------------------------------------------------
    async def _own(self, principal: Principal, upload_id: str) -> Upload:
        upload = await self._store.get(upload_id)
        if upload is None or upload.owner != principal.user_id:  # another's: as if unknown
            raise NotFound(f"No upload {upload_id!r}.", field="upload_id", upload_id=upload_id)
        return upload

    def _alive(self, upload: Upload, field: str) -> None:
        if upload.expired(self._clock()):
            raise Gone(
                f"Upload {upload.upload_id} expired at {iso_of(upload.expires_at)}: create a new upload.",
                field=field,
                upload_id=upload.upload_id,
                expired_at=iso_of(upload.expires_at),
            )

    @staticmethod
    def _check_parts(upload: Upload, parts: list[tuple[int, str]]) -> None:
        count = len(upload.part_sizes)
        if [number for number, _ in parts] != list(range(1, count + 1)):
            raise Unprocessable(
                f"Upload {upload.upload_id} has {count} parts: list each once, numbers 1 to {count} in order, "
                "with the ETag its PUT answered.",
                field="parts",
                upload_id=upload.upload_id,
            )

    async def _ready(self, upload: Upload, field: str | None = None) -> Upload:
        """`upload` confirmed, or 409 when S3 holds nothing for it yet."""
        if upload.state is UploadState.UPLOADED:
            return upload
        confirmed = await self._confirm(upload, field)
        if confirmed.state is UploadState.PENDING:
            todo = (
                f"complete it first (POST /uploads/{upload.upload_id}/complete)"
                if upload.multipart
                else "PUT the file to its URL first"
            )
            raise Conflict(
                f"Upload {upload.upload_id} holds nothing yet: {todo}.",
                field=field or "upload_id",
                upload_id=upload.upload_id,
            )
        return confirmed

    async def _confirm(self, upload: Upload, field: str | None = None) -> Upload:
        """`upload` marked uploaded if S3 holds its declared bytes; as it was if S3 holds nothing."""
        # S3 checks a single PUT's SHA-256 (signed into its URL); a multipart upload's only per part.
        checksum = upload.sha256 is not None and not upload.multipart
        stored = await self._objects.head(upload.key, checksum=checksum)
        if stored is None:
            return upload
        if stored.size != upload.size:
            raise Unprocessable(
                f"Upload {upload.upload_id} ({upload.name!r}) holds {stored.size} bytes; {upload.size} were declared.",
                field=field or "size",
                upload_id=upload.upload_id,
                file=upload.name,
                declared_size=upload.size,
                stored_size=stored.size,
            )
        if checksum and stored.sha256 != layout.sha256_base64(upload.sha256 or ""):
            raise Unprocessable(
                f"Upload {upload.upload_id} ({upload.name!r}) does not hold the bytes of its declared SHA-256.",
                field=field or "sha256",
                upload_id=upload.upload_id,
                file=upload.name,
            )
        return await self._store.mark_uploaded(upload, stored.etag, iso_of(self._clock()))

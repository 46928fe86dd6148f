"""The uploads' objects in S3: presigned PUT and part URLs, multipart uploads, what is stored.

S3 errors are translated here, once: a missing object is None, a refused complete call is
`PartsRefused`, an upload id S3 no longer knows is `MultipartGone`; anything else propagates
(the API answers 502/503 for it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from app.aws.errors import error_code

# Every new upload's object carries this tag until a validation takes it: the bucket's lifecycle
# deletes tagged objects under uploads/ a day after they were written (never-used uploads).
PENDING_TAG = "upload=pending"
# A validation took it: the whole bucket's expiration (the validations' retention) applies from then on.
USED_TAGS = {"TagSet": [{"Key": "upload", "Value": "used"}]}
_MISSING = ("404", "NoSuchKey", "NotFound")
_REFUSED_PARTS = ("InvalidPart", "InvalidPartOrder", "EntityTooSmall")


@dataclass(frozen=True)
class PresignedPut:
    """A PUT anyone holding it may send until it expires: the URL, and the headers it was signed with."""

    url: str
    headers: dict[str, str]


@dataclass(frozen=True)
class StoredObject:
    size: int
    etag: str  # without quotes
    sha256: str | None  # base64, when S3 keeps the object's SHA-256


class PartsRefused(Exception):
    """S3 refused the listed parts: an ETag that is not a part's, a part missing or too small."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class MultipartGone(Exception):
    """S3 no longer knows the multipart upload: completed before, or aborted."""


class UploadObjects:
    def __init__(self, s3: Any, presigner: Any, bucket: str) -> None:
        self._s3 = s3
        self._presigner = presigner
        self._bucket = bucket

    async def presign_put(self, key: str, size: int, sha256: str | None, expires_in: int) -> PresignedPut:
        """One PUT of exactly `size` bytes (and, given its base64 `sha256`, of those bytes only)."""
        params: dict[str, Any] = {"Bucket": self._bucket, "Key": key, "ContentLength": size, "Tagging": PENDING_TAG}
        headers = {"x-amz-tagging": PENDING_TAG}
        if sha256 is not None:
            params["ChecksumSHA256"] = sha256
            headers["x-amz-checksum-sha256"] = sha256
        url = await self._presigner.generate_presigned_url("put_object", Params=params, ExpiresIn=expires_in)
        return PresignedPut(str(url), headers)

    async def presign_part(self, key: str, multipart_id: str, number: int, size: int, expires_in: int) -> str:
        """The PUT of part `number` (exactly `size` bytes) of a multipart upload."""
        params = {
            "Bucket": self._bucket,
            "Key": key,
            "UploadId": multipart_id,
            "PartNumber": number,
            "ContentLength": size,
        }
        return str(await self._presigner.generate_presigned_url("upload_part", Params=params, ExpiresIn=expires_in))

    async def start_multipart(self, key: str) -> str:
        """A new multipart upload to `key`; its S3 UploadId."""
        answer = await self._s3.create_multipart_upload(Bucket=self._bucket, Key=key, Tagging=PENDING_TAG)
        return str(answer["UploadId"])

    async def abort_multipart(self, key: str, multipart_id: str) -> None:
        """Drop the parts uploaded so far (nothing to drop when S3 no longer knows the upload)."""
        try:
            await self._s3.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=multipart_id)
        except ClientError as exc:
            if error_code(exc) != "NoSuchUpload":
                raise

    async def complete_multipart(self, key: str, multipart_id: str, parts: list[tuple[int, str]]) -> None:
        """Join the parts, given as (number, ETag) in order, into the object."""
        listed = [{"PartNumber": number, "ETag": f'"{etag.strip(chr(34))}"'} for number, etag in parts]
        try:
            await self._s3.complete_multipart_upload(
                Bucket=self._bucket, Key=key, UploadId=multipart_id, MultipartUpload={"Parts": listed}
            )
        except ClientError as exc:
            code = error_code(exc)
            if code == "NoSuchUpload":
                raise MultipartGone(multipart_id) from exc
            if code in _REFUSED_PARTS:
                raise PartsRefused(code) from exc
            raise

    async def mark_used(self, key: str) -> None:
        """Tag the object used: the lifecycle's one-day rule for never-used uploads no longer applies."""
        await self._s3.put_object_tagging(Bucket=self._bucket, Key=key, Tagging=USED_TAGS)

    async def head(self, key: str, *, checksum: bool = False) -> StoredObject | None:
        """What S3 holds at `key` (with its SHA-256 if asked and kept); None when nothing."""
        kwargs: dict[str, Any] = {"ChecksumMode": "ENABLED"} if checksum else {}
        try:
            answer = await self._s3.head_object(Bucket=self._bucket, Key=key, **kwargs)
        except ClientError as exc:
            if error_code(exc) in _MISSING:
                return None
            raise
        return StoredObject(
            size=int(answer["ContentLength"]),
            etag=str(answer.get("ETag", "")).strip('"'),
            sha256=answer.get("ChecksumSHA256"),
        )

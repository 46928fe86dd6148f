"""Fixes for moto 5.2.5's S3 as uploads straight to S3 meet it (POST /uploads, docs/guide/uploads.md).

A presigned URL is used by a plain HTTP client (the CLI, a browser, curl), which sends only the
headers the URL was signed with: no SDK headers. The bucket's lifecycle expires never-used
uploads by prefix and tag, which Terraform's provider must be able to apply. Each fix is small,
names the defect it mends, and is guarded by tests/local_aws/test_upload_patches.py, which fails
without it.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

_applied = False
_lock = threading.Lock()

SHA256_HEADER = "x-amz-checksum-sha256"


def _check_sha256_of_what_is_put() -> None:
    """A PUT carrying `x-amz-checksum-sha256` stores other bytes without complaint, and no checksum.

    Defect: moto reads a checksum only beside the SDK's `x-amz-sdk-checksum-algorithm` header,
    and never compares it with the body. S3 checks the header against the bytes it received,
    refuses a mismatch (400 BadDigest) before storing anything, and keeps the checksum (HeadObject
    with ChecksumMode returns it). A presigned PUT that signs the header relies on exactly that
    to refuse other bytes. Here both PutObject and UploadPart are checked before the write, and
    the header is kept as the object's SHA-256 checksum.
    """
    from moto.s3.exceptions import S3ClientError
    from moto.s3.responses import S3Response
    from moto.s3.utils import compute_checksum

    class BadDigest(S3ClientError):
        code = "BadDigest"

        def __init__(self) -> None:
            super().__init__("The SHA256 you specified did not match the calculated checksum.")

    original_put = S3Response._key_response_put
    original_checksum = S3Response._get_checksum

    @functools.wraps(original_put)
    def key_response_put(self: Any, query: dict[str, Any], key_name: str) -> Any:
        declared = self.headers.get(SHA256_HEADER)
        copy = "x-amz-copy-source" in self.headers  # UploadPartCopy, CopyObject: no body of their own
        if declared and not copy and compute_checksum(self.body or b"", "SHA256").decode() != declared:
            raise BadDigest()
        return original_put(self, query, key_name)

    @functools.wraps(original_checksum)
    def get_checksum(self: Any, response_headers: dict[str, Any]) -> tuple[str, str | None]:
        declared = self.headers.get(SHA256_HEADER)
        if declared and not self.headers.get("x-amz-sdk-checksum-algorithm"):
            response_headers[SHA256_HEADER] = declared
            return "SHA256", declared
        algorithm, value = original_checksum(self, response_headers)
        return algorithm, value

    S3Response._key_response_put = key_response_put  # type: ignore[method-assign]
    S3Response._get_checksum = get_checksum  # type: ignore[method-assign]


def _answer_unknown_multipart_uploads_with_no_such_upload() -> None:
    """UploadPart or CompleteMultipartUpload for an upload id that is gone answers 500.

    Defect: moto looks the id up with `bucket.multiparts[id]`, so an upload that was completed
    or aborted (or never existed) raises KeyError, a 500 that clients retry. S3 answers 404
    NoSuchUpload, which tells a repeated complete call that the first one went through.
    """
    from moto.s3.exceptions import NoSuchUpload
    from moto.s3.models import S3Backend

    def known(method: Any) -> Any:
        @functools.wraps(method)
        def checked(self: Any, bucket_name: str, multipart_id: str, *args: Any, **kwargs: Any) -> Any:
            if multipart_id not in self.get_bucket(bucket_name).multiparts:
                raise NoSuchUpload(upload_id=multipart_id)
            return method(self, bucket_name, multipart_id, *args, **kwargs)

        return checked

    S3Backend.upload_part = known(S3Backend.upload_part)  # type: ignore[method-assign]
    S3Backend.complete_multipart_upload = known(S3Backend.complete_multipart_upload)  # type: ignore[method-assign]


def _keep_object_size_bounds_of_lifecycle_and_filters() -> None:
    """A lifecycle rule's `And` filter loses its ObjectSizeGreaterThan and ObjectSizeLessThan.

    Defect: moto keeps only the prefix and the tags of an `And` filter. Terraform's AWS provider
    sends `ObjectSizeGreaterThan` 0 in every `And` and waits until GetBucketLifecycleConfiguration
    returns what it put, so a rule on a prefix and a tag (the bucket's never-used uploads) never
    settles: apply fails after 3 minutes. S3 returns the bounds as they were put; so do we.
    """
    from moto.s3.models import FakeBucket
    from moto.s3.responses import S3Response

    bounds = ("ObjectSizeGreaterThan", "ObjectSizeLessThan")
    original_set = FakeBucket.set_lifecycle
    original_get = S3Response.get_bucket_lifecycle

    @functools.wraps(original_set)
    def set_lifecycle(self: Any, rules: list[dict[str, Any]]) -> None:
        original_set(self, rules)
        for given, rule in zip(rules, self.rules, strict=True):  # one rule kept per rule given, in order
            conjunction = (given.get("Filter") or {}).get("And") or {}
            if rule.filter is not None and rule.filter.and_filter is not None:
                rule.filter.and_filter.object_sizes = {b: int(conjunction[b]) for b in bounds if b in conjunction}

    @functools.wraps(original_get)
    def get_bucket_lifecycle(self: Any) -> Any:
        rules = self.backend.get_bucket_lifecycle(self.bucket_name) or []
        serialized = self.serialized

        def with_bounds(action: Any) -> Any:
            shown_rules = action.result.get("Rules", []) if isinstance(action.result, dict) else []
            for shown, rule in zip(shown_rules, rules, strict=False):
                sizes = getattr(getattr(rule.filter, "and_filter", None), "object_sizes", None)
                if sizes and "And" in shown.get("Filter", {}):
                    shown["Filter"]["And"].update(sizes)
            return serialized(action)

        self.serialized = with_bounds  # this response object only
        return original_get(self)

    FakeBucket.set_lifecycle = set_lifecycle  # type: ignore[method-assign]
    S3Response.get_bucket_lifecycle = get_bucket_lifecycle  # type: ignore[method-assign]


def apply() -> None:
    """Apply every fix once per process (moto's classes are global)."""
    global _applied
    with _lock:
        if _applied:
            return
        _check_sha256_of_what_is_put()
        _answer_unknown_multipart_uploads_with_no_such_upload()
        _keep_object_size_bounds_of_lifecycle_and_filters()
        _applied = True

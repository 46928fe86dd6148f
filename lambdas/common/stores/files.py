"""The uploads bucket, as the Lambdas use it: a part's text by its byte range (of exactly the
object planned, for an uploaded file); the manifest of a Distributed Map's items."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from core.lines import decode_part
from core.part_ranges import manifest_key
from lambdas.common.errors import FileChanged, aws_error_code
from lambdas.common.stores.base import Clients


@dataclass(frozen=True)
class Files:
    clients: Clients

    def _get(self, key: str, etag: str | None, **kwargs: str) -> dict[str, Any]:
        """GetObject; with `etag`, of exactly that object (If-Match): FileChanged when it was
        overwritten or deleted since."""
        if etag:
            kwargs["IfMatch"] = f'"{etag}"'
        try:
            answer: dict[str, Any] = self.clients.s3.get_object(
                Bucket=self.clients.config.uploads_bucket, Key=key, **kwargs
            )
        except ClientError as exc:
            code = aws_error_code(exc)
            if etag and code in ("PreconditionFailed", "NoSuchKey", "404"):
                raise FileChanged(gone=code != "PreconditionFailed") from None
            raise
        return answer

    def _text(self, key: str, start: int, end: int, etag: str | None = None) -> str:
        """Bytes start..end-1 of a stored file as text (core/lines.decode_part: a leading BOM is not
        text); with `etag`, of exactly the object planned, else FileChanged."""
        if end <= start:
            return ""
        return decode_part(self._get(key, etag, Range=f"bytes={start}-{end - 1}")["Body"].read(), start)

    def whole(self, key: str, etag: str | None = None) -> bytes:
        """A stored file's bytes; with `etag`, exactly the object confirmed then, else FileChanged."""
        body: bytes = self._get(key, etag)["Body"].read()
        return body

    def range(self, key: str, start: int, end: int, etag: str | None = None) -> tuple[bytes, int]:
        """Bytes start..end-1 of a stored file (fewer at its end) and the file's size; with `etag`,
        of exactly the object confirmed at upload, else FileChanged."""
        answer = self._get(key, etag, Range=f"bytes={start}-{end - 1}")
        body: bytes = answer["Body"].read()
        size = answer.get("ContentRange", "").rpartition("/")[2]  # "bytes 0-99/1234"
        return body, int(size) if size.isdigit() else start + len(body)

    def part_text(self, part: dict[str, Any], etag: str | None = None) -> str:
        """The part's text; `etag`: an uploaded file's, as planned (FileChanged if overwritten since)."""
        return self._text(part["key"], int(part["start_byte"]), int(part["end_byte"]), etag)

    def header_text(self, part: dict[str, Any], etag: str | None = None) -> str | None:
        """The CSV/TSV header row given to a later part as context (core/parts.py), or None."""
        header = part.get("header")
        return self._text(part["key"], int(header["start_byte"]), int(header["end_byte"]), etag) if header else None

    def put_map_items(self, validation_id: str, run: int, items: Sequence[dict[str, str]]) -> dict[str, str]:
        """The items of a run's Distributed Map as one JSON array (its ItemReader's input); where it is.
        Written again by a retried Plan: the same key, the same items."""
        bucket, key = self.clients.config.uploads_bucket, manifest_key(validation_id, run)
        body = json.dumps(list(items), separators=(",", ":")).encode()
        self.clients.s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
        return {"bucket": bucket, "key": key}

"""The uploads bucket, as the validators read it: a part's text by its byte range."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.lines import decode_part
from lambdas.common.stores.base import Clients


@dataclass(frozen=True)
class Files:
    clients: Clients

    def _text(self, key: str, start: int, end: int) -> str:
        """Bytes start..end-1 of a stored file as text (core/lines.decode_part: a leading BOM is not text)."""
        if end <= start:
            return ""
        body = self.clients.s3.get_object(
            Bucket=self.clients.config.uploads_bucket, Key=key, Range=f"bytes={start}-{end - 1}"
        )["Body"].read()
        return decode_part(body, start)

    def whole(self, key: str, etag: str | None = None) -> bytes:
        """A stored file's bytes; with `etag`, exactly the object confirmed then (S3 answers 412
        PreconditionFailed when it was overwritten since)."""
        kwargs = {"IfMatch": f'"{etag}"'} if etag else {}
        body: bytes = self.clients.s3.get_object(Bucket=self.clients.config.uploads_bucket, Key=key, **kwargs)[
            "Body"
        ].read()
        return body

    def part_text(self, part: dict[str, Any]) -> str:
        return self._text(part["key"], int(part["start_byte"]), int(part["end_byte"]))

    def header_text(self, part: dict[str, Any]) -> str | None:
        """The CSV/TSV header row given to a later part as context (core/parts.py), or None."""
        header = part.get("header")
        return self._text(part["key"], int(header["start_byte"]), int(header["end_byte"])) if header else None

"""OpenAI's Files API, as far as the Batch API needs it: upload, describe, download, delete.

An upload (`POST /v1/files`, multipart `file` and `purpose`) is taken only with purpose
"batch" (the simulator has no other use for a file) and, as OpenAI answers, only with a
`.jsonl` file name ("Invalid file format for Batch API. Must be .jsonl"). What the file holds
is checked when a batch reads it (batches.py), the way OpenAI checks it: in the batch's
`validating` step, not at upload. The batches write their output and error files here with
purpose "batch_output". Files live in memory until deleted; `expires_at` is stated (30 days
after creation, as OpenAI states it for batch files) but never enforced.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from local.simulator.errors import OpenAIError, invalid_value, missing, not_found

BATCH, BATCH_OUTPUT = "batch", "batch_output"
UPLOAD_PURPOSES = (BATCH,)
FILE_EXPIRY_SECONDS = 30 * 86_400
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# (table, key): one more of that count in the simulator's Stats (app.py).
Count = Callable[[str, str], None]


def new_file_id() -> str:
    """`file-` and 22 base-62 characters, the shape of OpenAI's file ids."""
    number, digits = uuid.uuid4().int, []
    for _ in range(22):
        number, digit = divmod(number, 62)
        digits.append(_BASE62[digit])
    return "file-" + "".join(digits)


@dataclass(frozen=True)
class StoredFile:
    """A file and its bytes."""

    id: str
    filename: str
    purpose: str
    created_at: int  # Unix seconds
    content: bytes

    def to_object(self) -> dict[str, Any]:
        """OpenAI's File object."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": self.created_at + FILE_EXPIRY_SECONDS,
            "status_details": None,
        }


class FileStore:
    """The simulator's files, by id; shared by the server's thread and the test's."""

    def __init__(self, count: Count) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, StoredFile] = {}
        self._count = count

    def upload(self, filename: str | None, purpose: str | None, content: bytes | None, created_at: int) -> StoredFile:
        """Store an uploaded batch input file; OpenAIError (400) for what OpenAI refuses at upload."""
        if content is None or filename is None:
            raise missing("file")
        if not purpose:
            raise missing("purpose")
        if purpose not in UPLOAD_PURPOSES:
            raise invalid_value("purpose", purpose, UPLOAD_PURPOSES)
        if not filename.endswith(".jsonl"):
            raise OpenAIError(400, "Invalid file format for Batch API. Must be .jsonl")
        stored = self._put(filename, purpose, content, created_at)
        self._count("files", "uploaded")
        return stored

    def write(self, filename: str, content: bytes, created_at: int) -> StoredFile:
        """Store a file a batch wrote (purpose "batch_output")."""
        stored = self._put(filename, BATCH_OUTPUT, content, created_at)
        self._count("files", "written")
        return stored

    def get(self, file_id: str) -> StoredFile:
        with self._lock:
            stored = self._files.get(file_id)
        if stored is None:
            raise not_found("File", file_id)
        return stored

    def delete(self, file_id: str) -> dict[str, Any]:
        """OpenAI's answer to a deletion; the file's bytes are gone (a batch that read it keeps its requests)."""
        with self._lock:
            stored = self._files.pop(file_id, None)
        if stored is None:
            raise not_found("File", file_id)
        self._count("files", "deleted")
        return {"id": file_id, "object": "file", "deleted": True}

    def _put(self, filename: str, purpose: str, content: bytes, created_at: int) -> StoredFile:
        stored = StoredFile(new_file_id(), filename, purpose, created_at, content)
        with self._lock:
            self._files[stored.id] = stored
        return stored

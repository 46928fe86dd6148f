"""Files sent straight to S3 (docs/guide/uploads.md): which files go there, and their transfer.

A file above the upload threshold is declared with `POST /uploads` (with its SHA-256), PUT to its
presigned URL streamed from disk (a multipart upload: each part to its own URL, a few PUTs at
once), then completed; `POST /validations` names it in `uploads`, after the inline files. The
service's inline limits (`MAX_FILE_BYTES`, `MAX_REQUEST_BYTES`) are learned from the 413 that
names them: the files they leave out are uploaded too, and the submission is sent again.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from cli.api import Api, ApiError, StorageError
from cli.inputs import READ_CHUNK, LocalFile
from cli.outcome import CliError

MIB = 1024 * 1024
# Under the service's default MAX_FILE_BYTES (5 MiB), so the default never meets its 413.
DEFAULT_THRESHOLD = 4 * MIB
PIECES_AT_ONCE = 4  # PUTs in flight: a multipart upload's parts, or several files' single PUTs
PUT_ATTEMPTS = 3  # a PUT that got no answer, or S3's 5xx (503 SlowDown), is sent again
RETRY_SECONDS = 1.0  # before the second attempt; doubled before each next one

_SIZE = re.compile(r"^\s*(\d+)\s*(?:([kmg])(?:i?b)?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}

T = TypeVar("T")


def parse_size(text: str | int) -> int:
    """Bytes from `4194304`, `512K`, `4M`, `4MiB` or `1G`: units are binary (K is 1024 bytes)."""
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a size: give bytes, or a number with K, M or G (e.g. 4M)")
    return int(match[1]) * _UNITS[(match[2] or "").lower()]


# --- which files go straight to S3 ------------------------------------------------------------------
@dataclass(frozen=True)
class InlineLimits:
    """What the service takes inline, as far as its refusals have told: bytes per file and per request."""

    file_bytes: int | None = None
    request_bytes: int | None = None

    def learned_from(self, problem: dict[str, Any]) -> InlineLimits | None:
        """These limits and the one a 413 problem names (`limit`, `limit_value`); None for another problem."""
        limit, value = problem.get("limit"), problem.get("limit_value")
        if not isinstance(value, int):
            return None
        if limit == "max_file_bytes":
            return replace(self, file_bytes=value)
        if limit == "max_request_bytes":
            return replace(self, request_bytes=value)
        return None


@dataclass(frozen=True)
class Plan:
    """The files sent inline (in the body of `POST /validations`) and those uploaded straight to S3,
    each in the order given."""

    inline: list[LocalFile]
    uploaded: list[LocalFile]


def plan(files: list[LocalFile], threshold: int, limits: InlineLimits | None = None) -> Plan:
    """A file goes to S3 when it is above `threshold` or the service's per-file limit; then, while the
    inline files add up to more than the service's per-request limit, the largest of them does."""
    limits = limits or InlineLimits()
    per_file = threshold if limits.file_bytes is None else min(threshold, limits.file_bytes)
    inline = {f.name: f.size for f in files if f.content is not None and f.size <= per_file}  # names are unique
    if limits.request_bytes is not None:
        for name in sorted(inline, key=lambda n: inline[n], reverse=True):
            if sum(inline.values()) <= limits.request_bytes:
                break
            del inline[name]
    return Plan([f for f in files if f.name in inline], [f for f in files if f.name not in inline])


def within_inline_limits(
    files: list[LocalFile], threshold: int, send: Callable[[Plan], T], moved: Callable[[str, list[str]], None]
) -> T:
    """`send(plan)`; when the service refuses the inline files with a 413 naming one of its inline limits,
    `send` again with the files that limit leaves out uploaded (each limit moves files once at most).
    `moved(refusal, names)` hears of each such move."""
    limits = InlineLimits()
    current = plan(files, threshold, limits)
    while True:
        try:
            return send(current)
        except ApiError as exc:
            learned = limits.learned_from(exc.problem) if exc.status == 413 else None
            if learned is None:
                raise
            again = plan(files, threshold, learned)
            kept = {f.name for f in again.inline}
            names = [f.name for f in current.inline if f.name not in kept]
            if not names:
                raise
            moved(exc.message, names)
            limits, current = learned, again


# --- the transfer -----------------------------------------------------------------------------------
class Progress(Protocol):
    """What the transfer reports (cli/display.py's UploadView shows it); `advance` is called from the
    threads that PUT, with a negative count when a PUT is sent again."""

    def advance(self, index: int, sent: int) -> None: ...

    def done(self, index: int, ticket: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class Piece:
    """One PUT: a whole file's (a single PUT) or one part's of a multipart upload."""

    index: int  # the file's, among those declared
    number: int | None  # the part's number; None for a single PUT
    offset: int
    size: int
    url: str
    headers: dict[str, str]  # sent exactly as given: the URL is signed with them


def pieces_of(index: int, ticket: dict[str, Any]) -> list[Piece]:
    """The PUTs an upload's ticket (an item of `POST /uploads`'s answer) asks for, parts in order."""
    if ticket["kind"] == "single":
        return [Piece(index, None, 0, int(ticket["size"]), str(ticket["url"]), dict(ticket["headers"]))]
    pieces, offset = [], 0
    for part in ticket["parts"]:
        pieces.append(Piece(index, int(part["number"]), offset, int(part["size"]), str(part["url"]), {}))
        offset += int(part["size"])
    return pieces


class _Stopped(Exception):
    """Another PUT failed: this one stops at its next chunk."""


def _chunks(path: Path, piece: Piece, advance: Callable[[int], None], stop: threading.Event) -> Iterator[bytes]:
    """The piece's bytes, read from disk a chunk at a time (never the whole file in memory)."""
    with path.open("rb") as handle:
        handle.seek(piece.offset)
        left = piece.size
        while left:
            if stop.is_set():
                raise _Stopped
            chunk = handle.read(min(READ_CHUNK, left))
            if not chunk:
                raise CliError(f"{path} changed while it was uploaded: it is shorter than it was when read.")
            left -= len(chunk)
            advance(len(chunk))
            yield chunk


def put_piece(
    api: Api,
    file: LocalFile,
    piece: Piece,
    progress: Progress,
    stop: threading.Event,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """PUT one piece (again after no answer or a 5xx, up to PUT_ATTEMPTS times); its ETag."""
    what = file.name if piece.number is None else f"{file.name} (part {piece.number})"
    for attempt in range(1, PUT_ATTEMPTS + 1):
        sent = 0

        def advance(count: int) -> None:
            nonlocal sent
            sent += count
            progress.advance(piece.index, count)

        try:
            etag = api.put(piece.url, piece.headers, piece.size, _chunks(file.path, piece, advance, stop))
        except StorageError as exc:
            progress.advance(piece.index, -sent)
            if not exc.retryable or attempt == PUT_ATTEMPTS or stop.is_set():
                raise StorageError(f"Cannot upload {what} to S3: {exc.message}", exc.status) from exc
            sleep(RETRY_SECONDS * 2 ** (attempt - 1))
            continue
        if piece.number is not None and not etag:
            raise CliError(f"S3 answered the PUT of {what} without an ETag: the upload cannot be completed.")
        return etag
    raise AssertionError("unreachable: the last attempt returns or raises")


def _put_all(api: Api, files: list[LocalFile], pieces: list[Piece], progress: Progress) -> list[str]:
    """Every piece PUT, PIECES_AT_ONCE at a time; their ETags, in order. The first failure stops the rest."""
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=PIECES_AT_ONCE, thread_name_prefix="upload") as pool:
        futures = [pool.submit(put_piece, api, files[p.index], p, progress, stop) for p in pieces]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
            for future in futures:
                if future.done() and future.exception() is not None:
                    future.result()  # raises the first failure
        except BaseException:  # a failed PUT, or Ctrl-C: the others stop at their next chunk
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return [future.result() for future in futures]


def upload(api: Api, files: list[LocalFile], progress: Progress) -> list[str]:
    """Upload the files straight to S3 (declared, PUT, completed); their upload ids, in order."""
    tickets = api.declare_uploads(files)
    pieces = [piece for index, ticket in enumerate(tickets) for piece in pieces_of(index, ticket)]
    etags = _put_all(api, files, pieces, progress)
    upload_ids = []
    for index, ticket in enumerate(tickets):
        parts = None
        if ticket["kind"] == "multipart":
            parts = [{"number": p.number, "etag": e} for p, e in zip(pieces, etags, strict=True) if p.index == index]
        api.complete_upload(str(ticket["upload_id"]), parts)  # a single PUT: checked at once (its size)
        progress.done(index, ticket)
        upload_ids.append(str(ticket["upload_id"]))
    return upload_ids

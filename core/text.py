"""What counts as a text file: the checks every file passes before it is split, inline at
submission (app/validations/intake.py) or uploaded, in the state machine's plan step
(lambdas/plan_files). One code path, so both ways of submitting accept the same files.

A file is refused when its name's suffix or its declared content type says binary, when
its bytes are not UTF-8, or when its first 64 KiB hold NUL or more control characters
than text has (more than 1%, at least 8). It is empty when it holds nothing but
whitespace (a BOM alone included). The bytes are decoded in slices (`TextScan`), so checking
a large file holds one slice of text at a time, not a copy of the file, and an uploaded file
is checked range by range with the same code.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import PurePosixPath

TEXT_SUFFIXES = frozenset(
    [
        ".txt",
        ".text",
        ".md",
        ".markdown",
        ".rst",
        ".csv",
        ".tsv",
        ".json",
        ".jsonl",
        ".ndjson",
        ".xml",
        ".yaml",
        ".yml",
        ".html",
        ".htm",
        ".log",
        ".ini",
        ".cfg",
        ".conf",
        ".toml",
        ".sql",
        ".py",
        ".js",
        ".ts",
        ".java",
        ".go",
        ".rs",
        ".c",
        ".h",
        ".cpp",
        ".sh",
        ".properties",
        ".env",
        ".tex",
        ".srt",
        ".vtt",
    ]
)
BINARY_SUFFIXES = frozenset(
    [
        ".png",
        ".jpg",
        ".jpeg",
        ".gif",
        ".bmp",
        ".webp",
        ".ico",
        ".pdf",
        ".zip",
        ".gz",
        ".tgz",
        ".bz2",
        ".xz",
        ".7z",
        ".rar",
        ".tar",
        ".exe",
        ".dll",
        ".so",
        ".dylib",
        ".bin",
        ".doc",
        ".docx",
        ".xls",
        ".xlsx",
        ".ppt",
        ".pptx",
        ".odt",
        ".mp3",
        ".mp4",
        ".wav",
        ".avi",
        ".mov",
        ".class",
        ".jar",
        ".pyc",
        ".parquet",
        ".avro",
        ".sqlite",
    ]
)
# Control characters other than tab, newline, carriage return, form feed: a sign of binary.
_CONTROL = bytes(sorted(frozenset(range(0, 32)) - {9, 10, 12, 13}))
_SAMPLE = 65536
_SLICE = 4 * 1024 * 1024  # bytes decoded at once
_BOM = "\ufeff"


class NotText(ValueError):
    """The file is not text; the message says why, naming the file."""


@dataclass
class TextScan:
    """The checks of `check` and `blank` over a file's bytes fed in order, piece by piece: the
    plan step of an uploaded file reads it in ranges (lambdas/plan_files). Its fields are the
    whole state (plain numbers), so a scan can stop and resume in another invocation.

    `feed` decodes as much as it can: a UTF-8 sequence cut by the end of a piece is left for
    the next piece, which starts at `offset` (always a character boundary).
    """

    name: str
    offset: int = 0  # bytes checked so far
    controls: int = 0  # control characters among the first _SAMPLE bytes
    nul: bool = False  # a NUL among them
    text_seen: bool = False  # a character that is not whitespace (nor the leading BOM)

    def feed(self, data: bytes | memoryview, final: bool) -> str:
        """Check `data`, the bytes from `offset` on (`final`: the file ends with them); their text."""
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            piece: str = decoder.decode(data, final=final)
        except UnicodeDecodeError as exc:
            raise NotText(
                f"File {self.name!r} is not UTF-8 text (invalid byte at offset {self.offset + exc.start})."
            ) from None
        used = len(data) - len(decoder.getstate()[0])
        if self.offset < _SAMPLE:
            sample = bytes(memoryview(data)[: min(used, _SAMPLE - self.offset)])
            self.controls += len(sample) - len(sample.translate(None, _CONTROL))  # counted in C
            self.nul = self.nul or b"\x00" in sample
        shown = piece.removeprefix(_BOM) if self.offset == 0 else piece
        self.text_seen = self.text_seen or (bool(shown) and not shown.isspace())
        self.offset += used
        return piece

    def finish(self) -> None:
        """After the last byte: raise NotText when the file's start looks binary."""
        if self.nul or self.controls > max(8, min(self.offset, _SAMPLE) // 100):
            raise NotText(f"File {self.name!r} looks binary (control characters), not text.")


def check_name(name: str, content_type: str | None = None) -> None:
    """Raise NotText when the name's suffix or the content type says binary."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in BINARY_SUFFIXES or (content_type or "").split("/")[0] in {"image", "audio", "video"}:
        raise NotText(f"File {name!r} is not a text file ({suffix or content_type}).")


def _scanned(name: str, content: bytes | memoryview) -> TextScan:
    view = memoryview(content)
    scan = TextScan(name)
    while True:
        end = scan.offset + _SLICE  # a non-final slice leaves at most 3 bytes of a cut character
        scan.feed(view[scan.offset : end], final=end >= len(view))
        if end >= len(view):
            return scan


def check(name: str, content: bytes | memoryview, content_type: str | None = None) -> None:
    """Raise NotText unless `content` is UTF-8 text under a name that does not say binary."""
    check_name(name, content_type)
    _scanned(name, content).finish()


def blank(content: bytes | memoryview) -> bool:
    """Nothing but whitespace (after a leading BOM): nothing to validate. `content` is UTF-8 (checked)."""
    return not _scanned("", content).text_seen

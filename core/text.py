"""What counts as a text file: the checks every file passes before it is split, inline at
submission (app/validations/intake.py) or uploaded, in the state machine's plan step
(lambdas/plan_files). One code path, so both ways of submitting accept the same files.

A file is refused when its name's suffix or its declared content type says binary, when
its bytes are not UTF-8, or when its first 64 KiB hold NUL or more control characters
than text has (more than 1%, at least 8). It is empty when it holds nothing but
whitespace (a BOM alone included). The bytes are decoded in slices, so checking a large
file holds one slice of text at a time, not a copy of the file.
"""

from __future__ import annotations

import codecs
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


def check(name: str, content: bytes | memoryview, content_type: str | None = None) -> None:
    """Raise NotText unless `content` is UTF-8 text under a name that does not say binary."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in BINARY_SUFFIXES or (content_type or "").split("/")[0] in {"image", "audio", "video"}:
        raise NotText(f"File {name!r} is not a text file ({suffix or content_type}).")
    view = memoryview(content)
    decoder = codecs.getincrementaldecoder("utf-8")()
    for start in range(0, len(view), _SLICE):
        try:
            decoder.decode(view[start : start + _SLICE], final=start + _SLICE >= len(view))
        except UnicodeDecodeError as exc:
            raise NotText(f"File {name!r} is not UTF-8 text (invalid byte at offset {start + exc.start}).") from None
    sample = bytes(view[:_SAMPLE])
    controls = len(sample) - len(sample.translate(None, _CONTROL))  # counted in C, not byte by byte
    if b"\x00" in sample or controls > max(8, len(sample) // 100):
        raise NotText(f"File {name!r} looks binary (control characters), not text.")


def blank(content: bytes | memoryview) -> bool:
    """Nothing but whitespace (after a leading BOM): nothing to validate. `content` is UTF-8 (checked)."""
    view = memoryview(content)
    decoder = codecs.getincrementaldecoder("utf-8")()
    first = True
    for start in range(0, len(view), _SLICE):
        piece = decoder.decode(view[start : start + _SLICE], final=start + _SLICE >= len(view))
        if first:
            piece, first = piece.removeprefix(_BOM), False
        if piece and not piece.isspace():
            return False
    return True

"""Lines of a stored file, and the numbered display the model cites them from.

Pure and stdlib-only: the Lambdas import this module, and tiktoken cannot load there.

Why these rules:
- Line terminators are CRLF, CR and LF only (`LINE_BREAK`), in any mix. `str.splitlines()`
  also breaks on \\f, \\v, \\x1c-\\x1e, \\x85, \\u2028 and \\u2029, which editors do not
  show as line breaks: a finding would then cite a line number the user cannot find.
- A UTF-8 byte order mark is part of the stored bytes (parts are byte ranges of those
  bytes, and the first part starts at byte 0), but it is not text of line 1:
  `decode_part` drops it from the part that starts at byte 0.
- A part may start or end in the middle of a line (a piece of a long line, a JSON element
  on a minified line). Its first displayed line still carries that line's number, so
  pieces of one line in consecutive parts show the same number.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# The only line terminators of the product; "\r\n" first so a CRLF is one terminator.
LINE_BREAK = re.compile(r"\r\n|\r|\n")
BOM = "\ufeff"

# One displayed line: "<number>| <content>". The space is optional so a hand-written
# "12|x" still parses; content may itself hold "| ".
_NUMBERED_LINE = re.compile(r"([0-9]+)\| ?(.*)", re.DOTALL)


def iter_lines(text: str) -> Iterator[str]:
    """The lines of `text` with their terminators, lazily (to sniff the start of a big file)."""
    start = 0
    for match in LINE_BREAK.finditer(text):
        yield text[start : match.end()]
        start = match.end()
    if start < len(text):
        yield text[start:]


def split_lines(text: str) -> list[str]:
    """The lines of `text` with their terminators; joined, they give `text` back."""
    return list(iter_lines(text))


def line_contents(text: str) -> list[str]:
    """The lines of `text` without their terminators; `[]` for empty text."""
    contents = LINE_BREAK.split(text)
    if contents[-1] == "":  # text is empty or ends with a terminator: no line after it
        contents.pop()
    return contents


def decode_part(data: bytes, start_byte: int) -> str:
    """The text of a part: its bytes as strict UTF-8, without the file's BOM (only at byte 0)."""
    text = data.decode("utf-8")
    if start_byte == 0 and text.startswith(BOM):
        return text[1:]
    return text


def numbered(text: str, first_line: int) -> str:
    """A part as the model sees it: every line prefixed with its number in the file."""
    contents = line_contents(text) or [""]
    return "\n".join(f"{first_line + i}| {content}" for i, content in enumerate(contents))


def parse_numbered(display: str) -> list[tuple[int, str]]:
    """(number, content) of every displayed line; the inverse of `numbered`.

    The display joins lines with "\\n" only and contents never hold "\\r" or "\\n", so
    splitting on "\\n" (not `splitlines()`) keeps contents holding \\u2028 or \\x0c whole.
    Lines that do not look like "<number>| ..." are skipped.
    """
    pairs: list[tuple[int, str]] = []
    for line in display.split("\n"):
        match = _NUMBERED_LINE.fullmatch(line)
        if match:
            pairs.append((int(match[1]), match[2]))
    return pairs

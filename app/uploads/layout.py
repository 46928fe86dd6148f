"""Where an upload's bytes go and how a large one is cut into parts: pure arithmetic, no I/O."""

from __future__ import annotations

import base64
import hashlib

MIB = 1024 * 1024
# S3 allows 10,000 parts; 500 keep the complete call's body (a number and an ETag per part)
# well inside MAX_BODY_BYTES' 64 KiB, and the answer of POST /uploads short.
MAX_PARTS = 500
PREFIX = "uploads/"  # the bucket's lifecycle expires never-used uploads under it


def object_key(owner: str, upload_id: str) -> str:
    """`uploads/<owner hash>/<upload id>`: one prefix per owner, no user id or file name in a URL."""
    return f"{PREFIX}{hashlib.sha256(owner.encode()).hexdigest()[:16]}/{upload_id}"


def part_size_for(size: int, preferred: int) -> int:
    """`preferred`, or the whole MiB that keeps a file of `size` bytes within MAX_PARTS parts."""
    needed = -(-size // MAX_PARTS)  # ceil
    return max(preferred, -(-needed // MIB) * MIB)


def part_sizes(size: int, part_size: int) -> list[int]:
    """The bytes of each part, in order: all `part_size` but the last (S3 signs each length)."""
    full, rest = divmod(size, part_size)
    return [part_size] * full + ([rest] if rest else [])


def sha256_base64(hex_digest: str) -> str:
    """A SHA-256 as S3 writes it (`x-amz-checksum-sha256`): base64 of the 32 bytes."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()

"""Where an upload's bytes go and how a large file is cut into parts (app/uploads/layout.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.uploads.layout import MAX_PARTS, MIB, object_key, part_size_for, part_sizes, sha256_base64

GIB = 1024 * MIB


def test_a_5_gib_file_is_80_parts_of_64_mib() -> None:
    size = part_size_for(5 * GIB, 64 * MIB)
    assert (size, len(part_sizes(5 * GIB, size))) == (64 * MIB, 80)


@given(size=st.integers(1, MAX_PARTS * 5 * GIB), preferred=st.integers(5 * MIB, 5 * GIB))
def test_parts_cover_the_file_within_the_part_limit(size: int, preferred: int) -> None:
    part_size = part_size_for(size, preferred)
    sizes = part_sizes(size, part_size)

    assert sum(sizes) == size
    assert 1 <= len(sizes) <= MAX_PARTS
    assert all(s == part_size for s in sizes[:-1]) and 0 < sizes[-1] <= part_size
    assert part_size == preferred or (part_size % MIB == 0 and part_size - MIB < -(-size // MAX_PARTS))
    assert part_size <= 5 * GIB or part_size == preferred  # S3's largest part


def test_an_owners_uploads_share_a_prefix_that_names_neither_user_nor_file() -> None:
    key = object_key("alice@example.com", "0f3c")
    assert key.startswith("uploads/") and key.endswith("/0f3c")
    assert "alice" not in key
    assert object_key("alice@example.com", "other").rsplit("/", 1)[0] == key.rsplit("/", 1)[0]
    assert object_key("bob", "0f3c").rsplit("/", 1)[0] != key.rsplit("/", 1)[0]


def test_sha256_goes_to_s3_as_base64() -> None:
    empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert sha256_base64(empty) == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="

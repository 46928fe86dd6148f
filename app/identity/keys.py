"""API keys: random (`vk_` + 256 bits), stored only as their SHA-256.

A slow hash adds nothing for keys of 256 random bits; SHA-256 lets a key be looked up."""

from __future__ import annotations

import hashlib
import secrets


def new_api_key() -> str:
    return "vk_" + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()

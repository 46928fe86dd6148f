"""Benchmarks that print ratios against a baseline from the same run (`make bench`)."""

from __future__ import annotations

from typing import Any

from app.settings import Settings


def local_settings(**values: Any) -> Settings:
    """Settings from these values (then the environment, then the defaults), never from a .env file."""
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]  # pydantic-settings' __init__ takes _env_file; mypy sees only the fields

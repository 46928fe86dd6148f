"""Exit codes, so the CLI can gate a CI job, and the one error type commands raise."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

PASSED = 0  # every rule passed in every file
RULE_FAILED = 1  # some rule failed in some file
VALIDATION_FAILED = 2  # the validation failed or was cancelled
USAGE = 3  # usage, authentication or connection errors

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})


class CliError(Exception):
    """A one-line message for the user and the exit code it ends with (USAGE unless said)."""

    def __init__(self, message: str, code: int = USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def verdict_code(status: str, results: Iterable[dict[str, Any]]) -> int:
    """The exit code of a validation: by its status, and once SUCCEEDED by its files' verdicts.

    A validation still running has no verdict yet: 0 (commands that wait never ask before the end).
    """
    if status in ("FAILED", "CANCELLED"):
        return VALIDATION_FAILED
    if status != "SUCCEEDED":
        return PASSED
    failed = any(rule.get("passed") is False for result in results for rule in result.get("rules") or [])
    return RULE_FAILED if failed else PASSED

"""Exit codes, so the CLI can gate a CI job, and the one error type commands raise.

0  every rule passed in every file (`rules test`: every rule met the thresholds)
1  some rule failed in some file (a definite failure wins over undecided rules); `rules test`: some rule's
   precision or recall is below its threshold
2  the validation failed or was cancelled (`rules test`: the test's validation)
3  usage, authentication or connection errors
4  the validation succeeded and no rule failed, but some rule of some file is undecided: the model
   never backed its failure with a quote found in the text. Neither a pass nor a failure, so a CI
   job can tell it apart from both (and treat it as it likes).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

PASSED = 0  # every rule passed in every file
RULE_FAILED = 1  # some rule failed in some file
VALIDATION_FAILED = 2  # the validation failed or was cancelled
USAGE = 3  # usage, authentication or connection errors
UNDECIDED = 4  # no rule failed, but some rule is undecided (its failure not found in the text)

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
    Once SUCCEEDED every file has ended, so a rule without a verdict (`passed: null`, with its
    `undecided` reason or, in results stored before reasons, without) is undecided, never a pass.
    """
    if status in ("FAILED", "CANCELLED"):
        return VALIDATION_FAILED
    if status != "SUCCEEDED":
        return PASSED
    verdicts = [rule.get("passed") for result in results for rule in result.get("rules") or []]
    if any(passed is False for passed in verdicts):
        return RULE_FAILED
    return UNDECIDED if any(passed is None for passed in verdicts) else PASSED


def below_thresholds(report: dict[str, Any], min_precision: float | None, min_recall: float | None) -> list[str]:
    """The rules of a test report below a threshold, each as `id: precision 0.50 < 0.80`. An undefined
    ratio (null: no example flagged, or none violating) is below no threshold: there is nothing to miss."""
    below = []
    for rule in report.get("rules") or []:
        for name, threshold in (("precision", min_precision), ("recall", min_recall)):
            value = rule.get(name)
            if threshold is not None and value is not None and value < threshold:
                below.append(f"{rule['id']}: {name} {value:.2f} < {threshold:g}")
    return below

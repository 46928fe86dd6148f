"""What the validator asks the model, and how its answer is read.

The same builder serves the Lambda (to call the model) and the API (to estimate a
validation's prompt tokens before it starts), so the estimate is of the real prompt.
"""

from __future__ import annotations

import json
from typing import Any


def numbered(text: str, first_line: int) -> str:
    """The chunk as the model sees it: every line prefixed with its number in the file."""
    lines = text.splitlines() or [""]
    return "\n".join(f"{first_line + i}| {line}" for i, line in enumerate(lines))


SYSTEM = (
    "You check one part of a file against rules. For every rule, decide whether this part "
    "passes it. A finding names the location (\"line N\" or \"lines N-M\") and says what is wrong. "
    "Answer with JSON only, following the schema."
)
RULES_MARKER = "Rules (JSON): "
TEXT_OPEN, TEXT_CLOSE = "<<<", ">>>"

RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "chunk_verdicts",
        "strict": True,
        "schema": {
            "type": "object",
            "additionalProperties": False,
            "required": ["results"],
            "properties": {
                "results": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["rule_id", "passed", "findings"],
                        "properties": {
                            "rule_id": {"type": "string"},
                            "passed": {"type": "boolean"},
                            "findings": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["location", "message"],
                                    "properties": {"location": {"type": "string"}, "message": {"type": "string"}},
                                },
                            },
                        },
                    },
                }
            },
        },
    },
}


def messages(file_name: str, first_line: int, last_line: int, text: str, rules: list[dict[str, str]]) -> list[dict[str, str]]:
    user = (
        f"{RULES_MARKER}{json.dumps(rules, ensure_ascii=False)}\n"
        f"File: {file_name} (lines {first_line}-{last_line})\n"
        f"{TEXT_OPEN}\n{numbered(text, first_line)}\n{TEXT_CLOSE}"
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def overhead_tokens(file_name: str, rules: list[dict[str, str]]) -> int:
    """Prompt tokens of everything but the chunk's text, for estimates."""
    from core.tokens import count_message_tokens  # here: the Lambdas import this module without a tokenizer

    return count_message_tokens(messages(file_name, 1, 1, "", rules))


class InvalidAnswer(ValueError):
    """The model's answer does not follow the schema or misses a rule."""


def parse_answer(content: str, rules: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Per rule, in the rules' order: {id, passed, findings}. Raises InvalidAnswer."""
    try:
        results = json.loads(content)["results"]
        by_id = {r["rule_id"]: r for r in results}
        return [
            {
                "id": rule["id"],
                "passed": bool(by_id[rule["id"]]["passed"]),
                "findings": [
                    {"location": str(f["location"]), "message": str(f["message"])} for f in by_id[rule["id"]]["findings"]
                ],
            }
            for rule in rules
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidAnswer(f"model answer does not match the schema: {exc!r}"[:500]) from exc

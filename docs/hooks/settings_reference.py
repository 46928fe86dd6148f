"""MkDocs hook: the settings reference, generated from `app.settings.Settings` so it cannot drift.

A page holding the marker line `<!-- settings-reference -->` gets, in its place, a table of every
field: the environment variable, its type and constraints, its default and its description. A
field without a description fails the build.
"""

from __future__ import annotations

import enum
import types
import typing
from typing import Any

from mkdocs.exceptions import PluginError
from pydantic import SecretStr
from pydantic.fields import FieldInfo

MARKER = "<!-- settings-reference -->"
BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}


def type_of(annotation: Any) -> str:
    """A field's type as a reader writes it: `int`, `str | None`, `"queue" | "reject"`, `local | aws`."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f'"{value}"' for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(type_of(arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return "unset"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(f'"{member.value}"' for member in annotation)
    if annotation is SecretStr:
        return "secret"
    return getattr(annotation, "__name__", str(annotation))


def constraints_of(field: FieldInfo) -> str:
    bounds = [
        f"{BOUNDS[name]} {getattr(item, name)}"
        for item in field.metadata
        for name in BOUNDS
        if getattr(item, name, None) is not None
    ]
    return f" ({', '.join(bounds)})" if bounds else ""


def default_of(field: FieldInfo) -> str:
    value = field.default
    if value is None:
        return "unset"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def table() -> str:
    from app.settings import Settings  # mkdocs runs from the project's .venv, at its root

    rows = ["| variable | type | default | description |", "|---|---|---|---|"]
    missing = []
    for name, field in Settings.model_fields.items():
        if not field.description:
            missing.append(name)
            continue
        description = " ".join(field.description.split()).replace("|", "\\|")
        kind = type_of(field.annotation) + constraints_of(field)
        rows.append(f"| `{name.upper()}` | {kind} | {default_of(field)} | {description} |")
    if missing:
        raise PluginError(f"app/settings.py: give these settings a Field(description=...): {', '.join(missing)}")
    return "\n".join(rows)


def on_page_markdown(markdown: str, **_: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, table())

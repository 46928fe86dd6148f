"""The models a deployment serves: the admin's list (SSM `<prefix>/models`), and how each is asked.

The list. Each entry names a model, its limits (`target_tpm`, `target_rpm`: one governor budget
per model, core/governor.py), the tiers it may be asked at, and whether it is the default (the
model of a validation that names none); exactly one is. The deployment-wide `target-tpm` and
`target-rpm` parameters are the default model's targets, so the stored JSON leaves them out of
the default entry and every reader takes them from those parameters: `PATCH /admin/parallelism`
and `PATCH /admin/models` change the same numbers. Without the parameter (or with `[]`) the list
is the deployment's configured model (`OPENAI_MODEL`) alone, at every tier.

Families. OpenAI's reasoning models (the o-series, gpt-5) refuse `max_tokens` and `temperature`
and take `max_completion_tokens` instead; the call is adapted per family (`family`,
lambdas/common/model.call_model). Models that cannot answer the call at all (no structured
outputs, no chat completions, served only by the Responses API) are refused by the list
(`refusal`); a name it does not know is taken as a chat model, as an OpenAI-compatible server's
models are.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from core.pricing import TIERS, Tier

Family = Literal["chat", "reasoning"]
MAX_MODELS = 20
TPM_RANGE = (1_000, 100_000_000)  # as PATCH /admin/parallelism checks target_tpm
RPM_RANGE = (1, 10_000_000)
BATCH_QUEUE_RANGE = (1_000, 100_000_000_000)  # enqueued tokens: OpenAI's tiers go from ~10^5 to ~10^10
# OpenAI's names (`gpt-4o-mini`, `o4-mini-2025-04-16`, `ft:gpt-4o-mini:org::id`) and those of
# OpenAI-compatible servers (`meta-llama/Llama-3.1-8B`); never `#`, which separates governor keys.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")

_REASONING = re.compile(r"^(o\d|gpt-5)")
_NO_STRUCTURED_OUTPUTS = "has no structured outputs (response_format json_schema), which every call needs"
_NOT_CHAT = "is not a chat completions model"
_RESPONSES_ONLY = "is served only by the Responses API, not chat completions"
# Prefixes of the base name (`ft:` stripped) → why the call cannot be served.
_REFUSED: tuple[tuple[str, str], ...] = (
    ("o1-mini", "takes neither system messages nor structured outputs"),
    ("o1-preview", "takes neither system messages nor structured outputs"),
    ("o1-pro", _RESPONSES_ONLY),
    ("o3-pro", _RESPONSES_ONLY),
    ("o3-deep-research", _RESPONSES_ONLY),
    ("o4-mini-deep-research", _RESPONSES_ONLY),
    ("gpt-5-pro", _RESPONSES_ONLY),
    ("gpt-5-codex", _RESPONSES_ONLY),
    ("codex-", _RESPONSES_ONLY),
    ("computer-use", _RESPONSES_ONLY),
    ("gpt-3.5", _NO_STRUCTURED_OUTPUTS),
    ("gpt-4-", _NO_STRUCTURED_OUTPUTS),  # gpt-4-turbo, gpt-4-0613 (not gpt-4o, gpt-4.1)
    ("gpt-4o-2024-05-13", _NO_STRUCTURED_OUTPUTS),
    ("text-embedding", _NOT_CHAT),
    ("text-moderation", _NOT_CHAT),
    ("omni-moderation", _NOT_CHAT),
    ("whisper", _NOT_CHAT),
    ("tts-", _NOT_CHAT),
    ("dall-e", _NOT_CHAT),
    ("gpt-image", _NOT_CHAT),
    ("sora", _NOT_CHAT),
    ("davinci", _NOT_CHAT),
    ("babbage", _NOT_CHAT),
)
_REFUSED_EXACT = {"gpt-4": _NO_STRUCTURED_OUTPUTS}
_REFUSED_PARTS = (("-realtime", _NOT_CHAT), ("-transcribe", _NOT_CHAT), ("-tts", _NOT_CHAT))


def _base(name: str) -> str:
    """The model a fine-tune is made from (`ft:<base>:<org>:...`), else the name."""
    return name.split(":")[1] if name.startswith("ft:") and name.count(":") >= 1 else name


def family(name: str) -> Family:
    """How the model is asked: `reasoning` (o-series, gpt-5: `max_completion_tokens`, no
    `temperature`) or `chat` (`max_tokens`, `temperature: 0`)."""
    return "reasoning" if _REASONING.match(_base(name)) else "chat"


def refusal(name: str) -> str | None:
    """Why the service cannot serve `name` (None: it can)."""
    if not NAME.match(name):
        return "is not a model name (letters, digits and . _ : / @ + -, at most 128)"
    base = _base(name)
    if base in _REFUSED_EXACT:
        return _REFUSED_EXACT[base]
    for prefix, why in _REFUSED:
        if base.startswith(prefix):
            return why
    for part, why in _REFUSED_PARTS:
        if part in base:
            return why
    return None


class UnknownModel(LookupError):
    """A model that is not in the deployment's list."""


class ModelListError(ValueError):
    """A list of models that cannot be served; `field` names the entry and attribute (`models[2].name`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ModelEntry:
    """One model of the list: its limits (its governor budget's targets) and the tiers it may be asked at."""

    name: str
    target_tpm: int
    target_rpm: int | None  # None: its requests are not governed (a deployment without `target-rpm`)
    tiers: tuple[Tier, ...] = TIERS
    default: bool = False
    batch_queue_tokens: int | None = None  # its Batch API queue limit (None: BATCH_QUEUE_LIMIT_TOKENS)

    @property
    def family(self) -> Family:
        return family(self.name)

    def allows(self, tier: str) -> bool:
        return tier in self.tiers

    def as_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "name": self.name,
            "target_tpm": self.target_tpm,
            "target_rpm": self.target_rpm,
            "tiers": list(self.tiers),
            "default": self.default,
        }
        if self.batch_queue_tokens is not None:  # else the deployment's BATCH_QUEUE_LIMIT_TOKENS
            values["batch_queue_tokens"] = self.batch_queue_tokens
        return values

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> ModelEntry:
        """From a plain mapping (a request body's entry, or a stored one with its targets)."""
        rpm, queue = values.get("target_rpm"), values.get("batch_queue_tokens")
        return cls(
            str(values["name"]),
            int(values["target_tpm"]),
            int(rpm) if rpm is not None else None,
            cast("tuple[Tier, ...]", tuple(values.get("tiers") or TIERS)),
            bool(values.get("default", False)),
            int(queue) if queue is not None else None,
        )


def _in(value: int | None, bounds: tuple[int, int]) -> bool:
    return value is not None and bounds[0] <= value <= bounds[1]


def check(entries: Sequence[ModelEntry]) -> None:
    """Raise ModelListError naming the first field at fault: a name the service cannot serve
    (or twice), targets out of range, tiers empty or unknown, not exactly one default."""
    if not 1 <= len(entries) <= MAX_MODELS:
        raise ModelListError("models", f"between 1 and {MAX_MODELS} models")
    seen: set[str] = set()
    default: int | None = None
    for i, entry in enumerate(entries):
        at = f"models[{i}]"
        why = refusal(entry.name)
        if why:
            raise ModelListError(f"{at}.name", f"{entry.name!r} {why}")
        if entry.name in seen:
            raise ModelListError(f"{at}.name", f"{entry.name!r} is listed twice")
        seen.add(entry.name)
        if not _in(entry.target_tpm, TPM_RANGE):
            raise ModelListError(f"{at}.target_tpm", f"target_tpm is {TPM_RANGE[0]:,}-{TPM_RANGE[1]:,}")
        if entry.target_rpm is not None and not _in(entry.target_rpm, RPM_RANGE):
            raise ModelListError(f"{at}.target_rpm", f"target_rpm is {RPM_RANGE[0]:,}-{RPM_RANGE[1]:,}")
        if entry.batch_queue_tokens is not None and not _in(entry.batch_queue_tokens, BATCH_QUEUE_RANGE):
            raise ModelListError(
                f"{at}.batch_queue_tokens",
                f"batch_queue_tokens is {BATCH_QUEUE_RANGE[0]:,}-{BATCH_QUEUE_RANGE[1]:,}",
            )
        if not entry.tiers or len(set(entry.tiers)) != len(entry.tiers) or not set(entry.tiers) <= set(TIERS):
            raise ModelListError(f"{at}.tiers", f"tiers: one or more of {', '.join(TIERS)}, each once")
        if entry.default:
            if default is not None:
                raise ModelListError(f"{at}.default", f"exactly one default: models[{default}] is one already")
            default = i
    if default is None:
        raise ModelListError("models", "exactly one model is the default")


@dataclass(frozen=True)
class Catalog:
    """The list in effect: its entries, the default's targets being the deployment-wide ones."""

    entries: tuple[ModelEntry, ...]

    @property
    def default(self) -> ModelEntry:
        return next(e for e in self.entries if e.default)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.entries)

    def get(self, name: str) -> ModelEntry | None:
        return next((e for e in self.entries if e.name == name), None)

    def resolve(self, name: str | None) -> ModelEntry:
        """The entry of `name` (None: the default); UnknownModel when it is not listed."""
        if name is None:
            return self.default
        found = self.get(name)
        if found is None:
            raise UnknownModel(name)
        return found

    @classmethod
    def configured(cls, model: str, target_tpm: int, target_rpm: int | None) -> Catalog:
        """The list without the parameter: the deployment's configured model, at every tier."""
        return cls((ModelEntry(model, target_tpm, target_rpm, TIERS, True),))

    @classmethod
    def parse(cls, text: str | None, configured: str, target_tpm: int, target_rpm: int | None) -> Catalog:
        """From the stored JSON (None or `[]`: the configured model alone); the default entry
        takes the deployment-wide targets. ValueError (a ModelListError) when it is not a list
        the service can serve."""
        raw = json.loads(text) if text and text.strip() else []
        if not isinstance(raw, list):
            raise ModelListError("models", "the stored list of models is not a JSON list")
        if not raw:
            return cls.configured(configured, target_tpm, target_rpm)
        entries = []
        for i, value in enumerate(raw):
            if not isinstance(value, dict) or not isinstance(value.get("name"), str):
                raise ModelListError(f"models[{i}]", "an entry is an object with a name")
            if value.get("default"):
                value = {**value, "target_tpm": target_tpm, "target_rpm": target_rpm}
            try:
                entries.append(ModelEntry.of(value))
            except (KeyError, TypeError, ValueError) as exc:
                raise ModelListError(f"models[{i}]", f"an entry without its targets: {exc}") from None
        check(entries)
        return cls(tuple(entries))

    def stored(self) -> str:
        """The JSON to store: the default entry without its targets (they are `target-tpm` and `target-rpm`)."""
        return stored(self.entries)


def stored(entries: Iterable[ModelEntry]) -> str:
    values = []
    for entry in entries:
        value = entry.as_dict()
        if entry.default:
            del value["target_tpm"], value["target_rpm"]
        values.append(value)
    return json.dumps(values, separators=(",", ":"))

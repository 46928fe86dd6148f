"""What `validate submit` sends: files from paths, globs and directories; rules from YAML or JSON;
an Idempotency-Key from the content, so submitting the same files and rules twice is one validation."""

from __future__ import annotations

import glob
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cli.outcome import CliError

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Upload:
    name: str  # what the service calls the file: its base name (the API refuses path separators)
    path: Path
    content: bytes


def _visible_files(directory: Path) -> list[Path]:
    """Regular files under `directory`, recursively, sorted; hidden files and directories (.git) left out."""
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )


def expand(paths: list[str]) -> list[Path]:
    """Files named by `paths` (files, directories, globs), in order, each once."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            matches = _visible_files(path)
            if not matches:
                raise CliError(f"Directory {given} holds no files.")
        elif path.is_file():
            matches = [path]
        elif _GLOB_CHARS & set(given):
            matches = sorted(Path(p) for p in glob.glob(given, recursive=True) if Path(p).is_file())
            if not matches:
                raise CliError(f"No file matches {given}.")
        else:
            raise CliError(f"No such file or directory: {given}.")
        found.extend(matches)
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    if not unique:
        raise CliError("No files to validate.")
    return list(unique.values())


def read_uploads(paths: list[Path]) -> list[Upload]:
    by_name: dict[str, list[Path]] = {}
    for path in paths:
        by_name.setdefault(path.name, []).append(path)
    clashes = {name: where for name, where in by_name.items() if len(where) > 1}
    if clashes:
        name, where = next(iter(clashes.items()))
        raise CliError(
            f"Two files are named {name} ({', '.join(str(p) for p in where)}): the service names files by their "
            "base name; submit them separately or rename one."
        )
    uploads = []
    for path in paths:
        try:
            uploads.append(Upload(path.name, path, path.read_bytes()))
        except OSError as exc:
            raise CliError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    return uploads


def _rule(item: Any, where: str) -> str | dict[str, str]:
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and isinstance(item.get("text"), str) and set(item) <= {"id", "text"}:
        return {k: str(v) for k, v in item.items()}
    raise CliError(f"{where}: a rule is a string or {{id, text}}, not {json.dumps(item, default=str)[:80]}.")


def parse_rules(text: str, source: str) -> list[str | dict[str, str]]:
    """Rules from YAML or JSON (JSON is YAML): a list of strings or {id, text}; a mapping with a `rules`
    list; or a mapping of rule id to text."""
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CliError(f"{source} is neither YAML nor JSON: {str(exc).splitlines()[0]}.") from exc
    if isinstance(loaded, dict) and "rules" in loaded:
        loaded = loaded["rules"]
    elif isinstance(loaded, dict) and loaded and all(isinstance(v, str) for v in loaded.values()):
        loaded = [{"id": str(k), "text": v} for k, v in loaded.items()]
    if not isinstance(loaded, list) or not loaded:
        raise CliError(f"{source} holds no rules: give a list of rules (strings or {{id, text}}).")
    return [_rule(item, f"{source}, rule {i + 1}") for i, item in enumerate(loaded)]


def load_rules(path: str) -> list[str | dict[str, str]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"Cannot read the rules file {path}: {exc}.") from exc
    return parse_rules(text, path)


def idempotency_key(uploads: list[Upload], rules: list[str | dict[str, str]]) -> str:
    """The same files (names and bytes, in order) and rules → the same key, so a rerun replays the first answer."""
    canonical = {
        "files": [[u.name, hashlib.sha256(u.content).hexdigest()] for u in uploads],
        "rules": rules,
    }
    digest = hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return f"validate-cli-{digest}"

"""What `validate submit` (and `validate estimate`) and `validate rules push` send: files from paths, globs
and directories; rules from YAML or JSON (with their examples, for a rule set); an Idempotency-Key from the
content, so submitting the same files and rules twice is one validation."""

from __future__ import annotations

import glob
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cli.outcome import CliError

_GLOB_CHARS = frozenset("*?[")
READ_CHUNK = 1024 * 1024  # a file too large to read whole is hashed (and uploaded) this much at a time


@dataclass(frozen=True)
class LocalFile:
    """A file to validate: read whole when it is small enough to go inline, else only hashed (an upload
    straight to S3 reads it again, part by part)."""

    name: str  # what the service calls the file: its base name (the API refuses path separators)
    path: Path
    size: int
    sha256: str  # hex, of the bytes read
    content: bytes | None  # the bytes, for a file read whole; None for one too large to hold in memory


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


def read_files(paths: list[Path], read_up_to: int | None = None) -> list[LocalFile]:
    """The files, each named by its base name (unique in a submission). Files of up to `read_up_to` bytes
    (every file, when None) are read whole; a larger one is hashed a chunk at a time, never held in memory."""
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
    files = []
    for path in paths:
        try:
            files.append(_read(path, read_up_to))
        except OSError as exc:
            raise CliError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    return files


read_uploads = read_files  # its former name, which tests/cli/test_inputs.py imports


def _read(path: Path, read_up_to: int | None) -> LocalFile:
    if read_up_to is None or path.stat().st_size <= read_up_to:
        content = path.read_bytes()
        return LocalFile(path.name, path, len(content), hashlib.sha256(content).hexdigest(), content)
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return LocalFile(path.name, path, size, digest.hexdigest(), None)


_RULE_KEYS = frozenset({"id", "text", "examples"})
_EXAMPLE_KEYS = frozenset({"text", "violates", "lines"})


def _rule(item: Any, where: str) -> str | dict[str, str]:
    """A rule as a submission sends it: its text, or {id, text} (examples never leave the file with it)."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and isinstance(item.get("text"), str) and set(item) <= _RULE_KEYS:
        return {k: str(v) for k, v in item.items() if k != "examples"}
    raise CliError(f"{where}: a rule is a string or {{id, text, examples}}, not {json.dumps(item, default=str)[:80]}.")


def _loaded(text: str, source: str) -> tuple[list[Any], dict[str, Any]]:
    """(the rules as written, the file's other top-level keys): a list of rules; a mapping with a
    `rules` list (and maybe a `description`); or a mapping of rule id to text."""
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CliError(f"{source} is neither YAML nor JSON: {str(exc).splitlines()[0]}.") from exc
    extra: dict[str, Any] = {}
    if isinstance(loaded, dict) and "rules" in loaded:
        extra = {k: v for k, v in loaded.items() if k != "rules"}
        loaded = loaded["rules"]
    elif isinstance(loaded, dict) and loaded and all(isinstance(v, str) for v in loaded.values()):
        loaded = [{"id": str(k), "text": v} for k, v in loaded.items()]
    if not isinstance(loaded, list) or not loaded:
        raise CliError(f"{source} holds no rules: give a list of rules (strings or {{id, text, examples}}).")
    return loaded, extra


def parse_rules(text: str, source: str) -> list[str | dict[str, str]]:
    """Rules from YAML or JSON (JSON is YAML): a list of strings or {id, text, examples}; a mapping with a
    `rules` list; or a mapping of rule id to text. Examples stay behind: they are a rule set's test fixtures."""
    loaded, _ = _loaded(text, source)
    return [_rule(item, f"{source}, rule {i + 1}") for i, item in enumerate(loaded)]


def _example(item: Any, where: str) -> dict[str, Any]:
    if not (
        isinstance(item, dict)
        and set(item) <= _EXAMPLE_KEYS
        and isinstance(item.get("text"), str)
        and isinstance(item.get("violates"), bool)
    ):
        raise CliError(
            f"{where}: an example is {{text, violates: true|false, lines: [numbers]}}, "
            f"not {json.dumps(item, default=str)[:80]}."
        )
    lines = item.get("lines")
    if lines is not None and not (
        isinstance(lines, list) and all(isinstance(n, int) and not isinstance(n, bool) for n in lines)
    ):
        raise CliError(f"{where}: `lines` is a list of line numbers.")
    return {"text": item["text"], "violates": item["violates"], **({"lines": lines} if lines else {})}


def _stored_rule(item: Any, where: str) -> dict[str, Any]:
    if not (isinstance(item, dict) and isinstance(item.get("id"), str | int) and isinstance(item.get("text"), str)):
        raise CliError(f"{where}: a rule set's rule is {{id, text, examples}} (its id is how tests name it).")
    if not set(item) <= _RULE_KEYS:
        raise CliError(f"{where}: unknown keys {', '.join(sorted(set(item) - _RULE_KEYS))}.")
    examples = item.get("examples") or []
    if not isinstance(examples, list):
        raise CliError(f"{where}: `examples` is a list.")
    return {
        "id": str(item["id"]),
        "text": item["text"],
        "examples": [_example(e, f"{where}, example {j + 1}") for j, e in enumerate(examples)],
    }


@dataclass(frozen=True)
class RulesetContent:
    """What `validate rules push` sends: a rule set version's description and rules with their examples."""

    description: str
    rules: list[dict[str, Any]]


def parse_ruleset(text: str, source: str) -> RulesetContent:
    """A rule set from a rules file: every rule needs an id; a mapping may also give a `description`."""
    loaded, extra = _loaded(text, source)
    description = extra.get("description", "")
    if not isinstance(description, str):
        raise CliError(f"{source}: `description` is text.")
    return RulesetContent(description, [_stored_rule(item, f"{source}, rule {i + 1}") for i, item in enumerate(loaded)])


def read_text(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"Cannot read the {what} {path}: {exc}.") from exc


def load_ruleset(path: str) -> RulesetContent:
    return parse_ruleset(read_text(path, "rules file"), path)


def load_rules(path: str) -> list[str | dict[str, str]]:
    return parse_rules(read_text(path, "rules file"), path)


@dataclass(frozen=True)
class Submission:
    """What `validate submit` sends, and `validate estimate` asks the price of: the same body."""

    files: list[LocalFile]
    rules: list[str | dict[str, str]]
    ruleset: str | None  # NAME or NAME@VERSION of a stored rule set
    lane: dict[str, str | int] = field(default_factory=dict)  # model, tier, flex_deadline_seconds, flex_fallback

    def idempotency_key(self, upload_ids: list[str] | None = None) -> str:
        return idempotency_key(self.files, self.rules, self.ruleset, upload_ids, self.lane)


def read_submission(
    paths: list[str],
    rules_path: str | None,
    ruleset: str | None,
    read_up_to: int | None = None,
    lane: dict[str, str | int] | None = None,
) -> Submission:
    """Files from paths, globs and directories (those above `read_up_to` bytes hashed, not held), the rules
    (a file, a stored rule set, or both), and the lane (model and tier; empty: the service's defaults)."""
    if rules_path is None and ruleset is None:
        raise CliError("Give the rules: --rules FILE, --ruleset NAME[@VERSION], or both.")
    files = read_files(expand(paths), read_up_to)
    return Submission(files, load_rules(rules_path) if rules_path is not None else [], ruleset, dict(lane or {}))


def idempotency_key(
    files: list[LocalFile],
    rules: list[str | dict[str, str]],
    ruleset: str | None = None,
    upload_ids: list[str] | None = None,
    lane: dict[str, str | int] | None = None,
) -> str:
    """The same files (names and bytes, in order), rules and rule set → the same key, so a rerun replays the
    first answer. Files uploaded straight to S3 add their upload ids: the API tells a submission's uploads
    apart by id, and each run uploads anew, so such a key is one run's."""
    canonical: dict[str, Any] = {"files": [[f.name, f.sha256] for f in files], "rules": rules}
    if ruleset is not None:  # keys of submissions without one stay as they were
        canonical["ruleset"] = ruleset
    if upload_ids:
        canonical["uploads"] = upload_ids
    if lane:  # another model or tier is another validation
        canonical["lane"] = lane
    digest = hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return f"validate-cli-{digest}"


def rule_test_key(owner: str, reference: str) -> str:
    """`rules test`'s Idempotency-Key: one test of a version (versions never change) within 24 h."""
    return "validate-cli-test-" + hashlib.sha256(f"{owner}/{reference}".encode()).hexdigest()

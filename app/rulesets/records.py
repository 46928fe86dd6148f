"""Rule sets as stored in DynamoDB (`rulesets`): typed at the store boundary.

Per owner, one `set#<name>` item (`Ruleset`: the latest version's number, sharing, retirement,
a summary of the last test) and one `v#<name>#<version>` item per version (`Version`: its rules
with their examples, immutable once written; the latest test of it and its report beside them).
Field names are the stored attribute names.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from app.rulesets.scoring import Report
from app.validations.intake import Rule, RulesetVersion

SHARED_PARTITION = "~shared"  # the pointers to shared sets: no user id holds "~" (app/users/schemas.py)
VERSION_DIGITS = 6  # `v#<name>#000042`: versions sort as text


def set_key(owner: str, name: str) -> dict[str, str]:
    return {"owner": owner, "sk": f"set#{name}"}


def version_key(owner: str, name: str, version: int) -> dict[str, str]:
    return {"owner": owner, "sk": f"{versions_prefix(name)}{version:0{VERSION_DIGITS}d}"}


def versions_prefix(name: str) -> str:
    """Every version of `name` and nothing else: a name holds no `#`."""
    return f"v#{name}#"


def shared_key(name: str) -> dict[str, str]:
    return {"owner": SHARED_PARTITION, "sk": f"set#{name}"}


@dataclass(frozen=True)
class Example:
    """A test fixture of a rule: never part of a prompt."""

    text: str
    violates: bool
    lines: tuple[int, ...] = ()  # when it violates: the lines a finding must cite (sorted, unique)

    @classmethod
    def of(cls, item: dict[str, Any]) -> Example:
        return cls(str(item["text"]), bool(item["violates"]), tuple(int(n) for n in item.get("lines") or ()))

    def to_item(self) -> dict[str, Any]:
        return {"text": self.text, "violates": self.violates, **({"lines": list(self.lines)} if self.lines else {})}


@dataclass(frozen=True)
class StoredRule:
    """A rule of a rule set: what the model is asked (id, text) and its examples."""

    id: str
    text: str
    examples: tuple[Example, ...] = ()

    @classmethod
    def of(cls, item: dict[str, Any]) -> StoredRule:
        return cls(str(item["id"]), str(item["text"]), tuple(Example.of(e) for e in item.get("examples") or ()))

    def to_item(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "examples": [e.to_item() for e in self.examples]}


def content_digest(description: str, rules: tuple[StoredRule, ...]) -> str:
    """Same description, rules and examples → same digest: a push of equal content adds no version."""
    canonical = {"description": description, "rules": [r.to_item() for r in rules]}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class RuleTest:
    """The latest test of a version: a validation of kind `test`."""

    validation_id: str
    started_at: str
    started_by: str

    @classmethod
    def of(cls, item: dict[str, Any]) -> RuleTest:
        return cls(str(item["validation_id"]), str(item["started_at"]), str(item["started_by"]))

    def to_item(self) -> dict[str, Any]:
        return {"validation_id": self.validation_id, "started_at": self.started_at, "started_by": self.started_by}


@dataclass(frozen=True)
class LastTest:
    """On the set: its last test started, of whichever version, and its overall numbers once reported."""

    version: int
    validation_id: str
    started_at: str
    reported: bool = False
    precision: float | None = None
    recall: float | None = None

    @classmethod
    def of(cls, item: dict[str, Any]) -> LastTest:
        return cls(
            version=int(item["version"]),
            validation_id=str(item["validation_id"]),
            started_at=str(item["started_at"]),
            reported=bool(item.get("reported", False)),
            precision=_ratio(item.get("precision")),
            recall=_ratio(item.get("recall")),
        )

    def to_item(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "validation_id": self.validation_id,
            "started_at": self.started_at,
            "reported": self.reported,
            "precision": self.precision,
            "recall": self.recall,
        }


def _ratio(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class Ruleset:
    """The `set#<name>` item."""

    owner: str
    name: str
    latest: int  # the newest version's number
    description: str
    shared: bool
    created_at: str
    updated_at: str
    retired_at: str | None = None  # DELETE retires: new validations refuse it, its versions stay readable
    last_test: LastTest | None = None

    @classmethod
    def of(cls, item: dict[str, Any]) -> Ruleset:
        return cls(
            owner=str(item["owner"]),
            name=str(item["name"]),
            latest=int(item["latest"]),
            description=str(item.get("description", "")),
            shared=bool(item.get("shared", False)),
            created_at=str(item["created_at"]),
            updated_at=str(item.get("updated_at", item["created_at"])),
            retired_at=item.get("retired_at"),
            last_test=LastTest.of(item["last_test"]) if item.get("last_test") else None,
        )

    def to_item(self) -> dict[str, Any]:
        return {
            **set_key(self.owner, self.name),
            "name": self.name,
            "latest": self.latest,
            "description": self.description,
            "shared": self.shared,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "retired_at": self.retired_at,
            "last_test": self.last_test.to_item() if self.last_test else None,
        }

    def public(self) -> dict[str, Any]:
        """What the audit trail shows of it."""
        return {
            "owner": self.owner,
            "name": self.name,
            "latest": self.latest,
            "shared": self.shared,
            "retired_at": self.retired_at,
        }


@dataclass(frozen=True)
class Version:
    """A `v#<name>#<version>` item: its content never changes; `test` and `report` are its latest test."""

    owner: str
    name: str
    version: int
    description: str
    rules: tuple[StoredRule, ...]
    digest: str  # content_digest(description, rules)
    created_at: str
    created_by: str
    test: RuleTest | None = None
    report: Report | None = None  # of `test`, computed once after its validation ended

    @classmethod
    def of(cls, item: dict[str, Any]) -> Version:
        return cls(
            owner=str(item["owner"]),
            name=str(item["name"]),
            version=int(item["version"]),
            description=str(item.get("description", "")),
            rules=tuple(StoredRule.of(r) for r in item["rules"]),
            digest=str(item["digest"]),
            created_at=str(item["created_at"]),
            created_by=str(item["created_by"]),
            test=RuleTest.of(item["test"]) if item.get("test") else None,
            report=Report.of(item["report"]) if item.get("report") else None,
        )

    def to_item(self) -> dict[str, Any]:
        return {
            **version_key(self.owner, self.name, self.version),
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "rules": [r.to_item() for r in self.rules],
            "digest": self.digest,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "test": self.test.to_item() if self.test else None,
            "report": self.report.to_item() if self.report else None,
        }

    @property
    def reference(self) -> str:
        return f"{self.name}@{self.version}"

    def public(self) -> dict[str, Any]:
        """What the audit trail shows of it (not the rules' text or examples)."""
        return {
            "owner": self.owner,
            "reference": self.reference,
            "digest": self.digest,
            "rules": [r.id for r in self.rules],
        }

    def as_used(self) -> RulesetVersion:
        """The version as a validation uses it: its rules' ids and texts (examples never enter a prompt)."""
        return RulesetVersion(self.owner, self.name, self.version, tuple(Rule(r.id, r.text) for r in self.rules))

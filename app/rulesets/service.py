"""Rule sets: create, version, read, retire, share; resolve a submission's `ruleset`; run and report rule tests.

Scope: a set belongs to its owner and is read and written by its owner. An admin's set may be
shared: every user reads it (and may validate with it), only its owner writes it. A name resolves
to the caller's own set first, then to the set shared under that name. Admins address another
user's set with `owner`.

Every change is audited through the users service (the admin audit trail).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any, Protocol

from app.errors import AppError, Conflict, Forbidden, NotFound, Unprocessable
from app.identity.principal import Principal
from app.pagination import decode_cursor, encode_cursor
from app.rulesets.records import SHARED_PARTITION, Example, Ruleset, RuleTest, StoredRule, Version, content_digest
from app.rulesets.schemas import RuleIn, RulesetIn, VersionIn
from app.rulesets.scoring import Report, example_file, score
from app.rulesets.store import Refused, RulesetStore
from app.settings import Settings
from app.validations.intake import Document, RulesetVersion, Submission
from app.validations.records import Validation
from core.bounds import line_count
from core.clock import now_iso
from core.records import TERMINAL

log = logging.getLogger(__name__)

REFERENCE = re.compile(r"^([a-z0-9_-]{1,64})(?:@([0-9]{1,9}))?$")
# Characters that make a text look binary to the intake (app/validations/intake.py): refused in examples too.
_CONTROL = frozenset(chr(c) for c in range(32)) - {"\t", "\n", "\r", "\f"}


class Audit(Protocol):
    """The admin audit trail (app.users.service.UserService)."""

    async def audit(self, actor: str, action: str, target: str, old: Any, new: Any) -> None: ...


class Validations(Protocol):
    """What a rule test needs of the validations (app.validations.service.ValidationService)."""

    async def create(
        self, principal: Principal, submission: Submission, idempotency_key: str | None
    ) -> tuple[Validation, bool]: ...

    async def get(self, principal: Principal, validation_id: str) -> Validation: ...

    def result_pages(
        self, principal: Principal, validation_id: str, page_size: int = 100
    ) -> AsyncIterator[list[dict[str, Any]]]: ...


def parse_reference(reference: str) -> tuple[str, int | None]:
    """(name, version or None for the latest) of `name` or `name@3`; 422 naming `ruleset` otherwise."""
    m = REFERENCE.fullmatch(reference)
    if m is None or (m.group(2) is not None and int(m.group(2)) < 1):
        raise Unprocessable(
            f"`ruleset` is `name` or `name@version` (name: 1-64 of a-z, 0-9, - and _; version from 1); "
            f"got {reference[:80]!r}.",
            field="ruleset",
        )
    return m.group(1), int(m.group(2)) if m.group(2) else None


class RulesetService:
    def __init__(self, store: RulesetStore, audit: Audit, settings: Settings) -> None:
        self.store = store
        self.audit = audit
        self.settings = settings

    # --- who addresses which set --------------------------------------------------------------
    @staticmethod
    def _owner(principal: Principal, owner: str | None) -> str:
        """The owner a request addresses: the caller's own, or (admins) the one named."""
        if owner is not None and owner != principal.user_id and not principal.is_admin:
            raise Forbidden("Only admins may address another user's rule sets.", field="owner")
        return owner or principal.user_id

    async def _readable(self, principal: Principal, name: str, owner: str | None) -> Ruleset:
        """The set `name` means to the caller: with `owner`, that owner's; else the caller's own, else the
        one shared under that name. 404 naming `name` when there is none the caller may read."""
        if owner is not None:
            found = await self.store.get_set(self._owner(principal, owner), name)
        else:
            found = await self.store.get_set(principal.user_id, name)
            if found is None:
                holder = await self.store.shared_holder(name)
                found = await self.store.get_set(holder, name) if holder else None
                found = found if found is not None and found.shared else None
        if found is None:
            raise NotFound(f"No rule set {name!r}.", field="name")
        return found

    async def _writable(self, principal: Principal, name: str, owner: str | None) -> Ruleset:
        """The caller's own set `name` (or, admins, `owner`'s): shared sets are written by their owner only."""
        found = await self.store.get_set(self._owner(principal, owner), name)
        if found is None:
            raise NotFound(f"No rule set {name!r} of yours.", field="name")
        return found

    async def _version(self, ruleset: Ruleset, version: int, field: str = "version") -> Version:
        found = await self.store.get_version(ruleset.owner, ruleset.name, version)
        if found is None:
            raise NotFound(
                f"Rule set {ruleset.name!r} has no version {version} (its latest is {ruleset.latest}).", field=field
            )
        return found

    def _may_share(self, principal: Principal, owner: str) -> None:
        if not (principal.is_admin and owner == principal.user_id):
            raise Forbidden("Only an admin may share a rule set, and only one of their own.", field="shared")

    # --- content ------------------------------------------------------------------------------
    def _content(self, body: VersionIn) -> tuple[StoredRule, ...]:
        """The rules as stored, every limit checked (422 naming the field and the limit)."""
        s = self.settings
        if _not_unicode(body.description):
            raise Unprocessable("The description is not valid Unicode text (a lone surrogate).", field="description")
        if not body.rules:
            raise Unprocessable("A rule set needs at least one rule.", field="rules")
        if len(body.rules) > s.ruleset_max_rules:
            raise Unprocessable(
                f"{len(body.rules)} rules; a rule set holds at most {s.ruleset_max_rules}.",
                field="rules",
                limit="ruleset_max_rules",
                limit_value=s.ruleset_max_rules,
            )
        ids = [r.id for r in body.rules]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise Unprocessable(f"Rule ids must be unique; repeated: {', '.join(repeated)}.", field="rules")
        rules = tuple(self._rule(i, rule) for i, rule in enumerate(body.rules))
        examples = sum(len(r.examples) for r in rules)
        if examples > s.max_files:
            # A test judges each example as one file of one validation.
            raise Unprocessable(
                f"{examples} examples in all; a rule set's test judges at most {s.max_files} (one file each).",
                field="rules",
                limit="max_files",
                limit_value=s.max_files,
            )
        return rules

    def _rule(self, i: int, rule: RuleIn) -> StoredRule:
        s = self.settings
        text = rule.text.strip()
        where = f"rules[{i}]"
        if not text:
            raise Unprocessable(f"Rule {rule.id!r} has no text.", field=f"{where}.text")
        if _not_unicode(text):
            raise Unprocessable(
                f"Rule {rule.id!r} is not valid Unicode text (a lone surrogate).", field=f"{where}.text"
            )
        if len(text) > s.max_rule_chars:
            raise Unprocessable(
                f"Rule {rule.id!r} has {len(text)} characters; the limit is {s.max_rule_chars}.",
                field=f"{where}.text",
                limit="max_rule_chars",
                limit_value=s.max_rule_chars,
            )
        if len(rule.examples) > s.ruleset_max_examples:
            raise Unprocessable(
                f"Rule {rule.id!r} has {len(rule.examples)} examples; the limit is {s.ruleset_max_examples}.",
                field=f"{where}.examples",
                limit="ruleset_max_examples",
                limit_value=s.ruleset_max_examples,
            )
        examples = []
        for j, example in enumerate(rule.examples):
            at = f"{where}.examples[{j}]"
            if _not_unicode(example.text):
                raise Unprocessable(
                    f"Example {j + 1} of rule {rule.id!r} is not valid Unicode text (a lone surrogate).",
                    field=f"{at}.text",
                )
            content = example.text.encode("utf-8")
            if len(content) > s.ruleset_max_example_bytes:
                raise Unprocessable(
                    f"Example {j + 1} of rule {rule.id!r} is {len(content)} bytes; the limit is "
                    f"{s.ruleset_max_example_bytes}.",
                    field=f"{at}.text",
                    limit="ruleset_max_example_bytes",
                    limit_value=s.ruleset_max_example_bytes,
                )
            if not example.text.strip():
                raise Unprocessable(f"Example {j + 1} of rule {rule.id!r} is empty.", field=f"{at}.text")
            if _CONTROL.intersection(example.text):
                raise Unprocessable(
                    f"Example {j + 1} of rule {rule.id!r} holds control characters: an example is text.",
                    field=f"{at}.text",
                )
            examples.append(
                Example(
                    example.text,
                    example.violates,
                    self._lines(rule.id, j, example.lines, content, example.violates, at),
                )
            )
        return StoredRule(rule.id, text, tuple(examples))

    @staticmethod
    def _lines(
        rule_id: str, j: int, lines: list[int] | None, content: bytes, violates: bool, at: str
    ) -> tuple[int, ...]:
        if not lines:
            return ()
        if not violates:
            raise Unprocessable(
                f"Example {j + 1} of rule {rule_id!r} gives `lines` but does not violate the rule: only a "
                "violating example has lines to cite.",
                field=f"{at}.lines",
            )
        last = line_count(content)
        outside = sorted(n for n in set(lines) if not 1 <= n <= last)
        if outside:
            raise Unprocessable(
                f"Example {j + 1} of rule {rule_id!r} has lines 1-{last}; `lines` names {outside[0]}.",
                field=f"{at}.lines",
            )
        return tuple(sorted(set(lines)))

    # --- create, version, share, retire -------------------------------------------------------
    async def create(self, principal: Principal, body: RulesetIn, owner: str | None) -> Version:
        """Version 1 of a new set (409 naming `name` when the owner has a set of that name)."""
        owner = self._owner(principal, owner)
        if body.shared:
            self._may_share(principal, owner)
        rules = self._content(body)
        now = now_iso()
        ruleset = Ruleset(owner, body.name, 1, body.description, bool(body.shared), now, now)
        first = Version(
            owner,
            body.name,
            1,
            body.description,
            rules,
            content_digest(body.description, rules),
            now,
            principal.user_id,
        )
        refused = await self.store.create(ruleset, first)
        if refused is Refused.NAME_TAKEN:
            raise Conflict(
                f"A rule set {body.name!r} exists already; add a version with POST /rulesets/{body.name}/versions.",
                field="name",
            )
        if refused is Refused.SHARED_TAKEN:
            raise Conflict(f"Another rule set is shared under the name {body.name!r}.", field="shared")
        if refused is not None:
            raise Conflict("The rule set changed meanwhile; try again.", field="name")
        await self.audit.audit(principal.user_id, "ruleset.create", _audit_target(first), None, first.public())
        if ruleset.shared:
            await self.audit.audit(principal.user_id, "ruleset.share", f"{owner}/{body.name}", False, True)
        return first

    async def push(self, principal: Principal, name: str, body: VersionIn, owner: str | None) -> tuple[Version, bool]:
        """(version, created): the next version; or, when its content equals the latest's, that one
        (nothing new is written). A retired set is reinstated either way."""
        ruleset = await self._writable(principal, name, owner)
        if body.shared is not None and body.shared != ruleset.shared:
            self._may_share(principal, ruleset.owner)
        rules = self._content(body)
        digest = content_digest(body.description, rules)
        for _ in range(3):  # another push may move `latest` between the read and the write
            latest = await self._version(ruleset, ruleset.latest, field="name")
            now = now_iso()
            unchanged = latest.digest == digest
            version = (
                latest
                if unchanged
                else Version(
                    ruleset.owner, name, ruleset.latest + 1, body.description, rules, digest, now, principal.user_id
                )
            )
            if not unchanged or ruleset.retired_at is not None:
                refused = await self.store.add_version(ruleset, version, now)
                if refused is not None:
                    ruleset = await self._writable(principal, name, owner)
                    continue
                if ruleset.retired_at is not None:
                    await self.audit.audit(
                        principal.user_id, "ruleset.reinstate", _audit_target(version), ruleset.public(), None
                    )
                if not unchanged:
                    await self.audit.audit(
                        principal.user_id, "ruleset.version", _audit_target(version), latest.public(), version.public()
                    )
            await self._share(principal, ruleset, body.shared)
            return version, not unchanged
        raise Conflict(f"Rule set {name!r} keeps changing; try again.", field="name")

    async def _share(self, principal: Principal, ruleset: Ruleset, shared: bool | None) -> None:
        if shared is None or shared == ruleset.shared:
            return
        refused = await self.store.set_shared(ruleset, shared, now_iso())
        if refused is not None:
            raise Conflict(f"Another rule set is shared under the name {ruleset.name!r}.", field="shared")
        await self.audit.audit(
            principal.user_id,
            "ruleset.share" if shared else "ruleset.unshare",
            f"{ruleset.owner}/{ruleset.name}",
            ruleset.shared,
            shared,
        )

    async def retire(self, principal: Principal, name: str, owner: str | None) -> Ruleset:
        """Retire the set: new validations (tests too) refuse it; its versions stay readable. Idempotent."""
        ruleset = await self._writable(principal, name, owner)
        if await self.store.retire(ruleset.owner, name, now_iso()):
            await self.audit.audit(
                principal.user_id, "ruleset.retire", f"{ruleset.owner}/{name}", ruleset.public(), None
            )
        return await self._writable(principal, name, owner)

    # --- read ---------------------------------------------------------------------------------
    async def get(
        self, principal: Principal, name: str, owner: str | None, limit: int, cursor: str | None
    ) -> tuple[Ruleset, list[Version], str | None]:
        """The set and a page of its versions, newest first."""
        ruleset = await self._readable(principal, name, owner)
        start = decode_cursor(cursor, lambda v: _is_version_key(v, ruleset)) if cursor else None
        versions, last = await self.store.versions_of(ruleset.owner, name, limit, start)
        return ruleset, versions, encode_cursor(last) if last else None

    async def version(self, principal: Principal, name: str, version: int, owner: str | None) -> Version:
        return await self._version(await self._readable(principal, name, owner), version)

    async def list_page(
        self, principal: Principal, limit: int, cursor: str | None, owner: str | None
    ) -> tuple[list[Ruleset], str | None]:
        """The caller's sets by name, then the sets others share that the caller's names do not shadow (without
        `owner`); admins: `owner`'s sets."""
        target = self._owner(principal, owner)
        phase: str = "own"
        start: dict[str, Any] | None = None
        if cursor:
            phase, start = decode_cursor(cursor, lambda v: _is_list_cursor(v, target))
        items: list[Ruleset] = []
        if phase == "own":
            items, last = await self.store.sets_of(target, limit, start)
            if last is not None:
                return items, encode_cursor(["own", last])
            if owner is not None and owner != principal.user_id:  # another user's sets only
                return items, None
            phase, start = "shared", None
        while len(items) < limit:
            pointers, last = await self.store.shared_page(limit - len(items), start)
            for holder, name in pointers:
                if holder == principal.user_id or await self.store.get_set(principal.user_id, name) is not None:
                    continue  # listed among the caller's own, or shadowed by the caller's set of that name
                found = await self.store.get_set(holder, name)
                if found is not None and found.shared:
                    items.append(found)
            if last is None:
                return items, None
            start = last
        return items, encode_cursor(["shared", start])

    # --- a submission's `ruleset` -------------------------------------------------------------
    async def resolve(self, principal: Principal, reference: str) -> RulesetVersion:
        """`name` (the latest version) or `name@3`: the caller's own set first, then a shared one.
        404 naming `ruleset` when there is no such set or version; 409 when the set is retired."""
        name, number = parse_reference(reference)
        try:
            ruleset = await self._readable(principal, name, None)
        except NotFound:
            raise NotFound(f"No rule set {name!r}.", field="ruleset") from None
        _usable(ruleset, "ruleset")
        version = await self._version(ruleset, number or ruleset.latest, field="ruleset")
        return version.as_used()

    # --- rule tests ---------------------------------------------------------------------------
    async def start_test(
        self,
        principal: Principal,
        name: str,
        number: int,
        owner: str | None,
        validations: Validations,
        idempotency_key: str | None,
    ) -> Validation:
        """Judge every example of the version by a validation of kind `test` (governed, charged to the
        caller, cancellable, followed by its events like any validation); the version keeps its id."""
        ruleset = await self._readable(principal, name, owner)
        if ruleset.owner != principal.user_id and not principal.is_admin:
            raise Forbidden("Only the rule set's owner (or an admin) may test it.", field="name")
        _usable(ruleset, "name")
        version = await self._version(ruleset, number)
        documents = [
            Document(example_file(rule.id, n), example.text.encode("utf-8"))
            for rule in version.rules
            for n, example in enumerate(rule.examples, start=1)
        ]
        if not documents:
            raise Unprocessable(f"Rule set {version.reference!r} has no examples to test.", field="examples")
        submission = Submission(
            documents=documents,
            rules=[],
            # A test asks the model now: a report of stored answers would measure an earlier model.
            reuse=False,
            ruleset=version.reference,
            resolved=version.as_used(),
            kind="test",
        )
        validation, _ = await validations.create(principal, submission, idempotency_key)
        run = RuleTest(validation.id, now_iso(), principal.user_id)
        if await self.store.start_test(version, run):
            await self.audit.audit(
                principal.user_id, "ruleset.test", _audit_target(version), None, {"validation_id": validation.id}
            )
        return validation

    async def test_report(
        self, principal: Principal, name: str, number: int, owner: str | None, validations: Validations
    ) -> tuple[Version, RuleTest, str | None, Report | None]:
        """(version, its latest test, the test validation's status, its report): the report once the test
        ended, computed from its results at the first read after that and stored on the version. The
        status is None when the caller may not read the test's validation (another's test of a shared set)."""
        version = await self.version(principal, name, number, owner)
        test = version.test
        if test is None:
            raise NotFound(f"{version.reference} has not been tested (POST its …/test).", field="test")
        if version.report is not None:
            return version, test, version.report.status, version.report
        try:
            validation = await validations.get(principal, test.validation_id)
        except NotFound:
            return version, test, None, None
        if validation.status not in TERMINAL:
            return version, test, validation.status, None
        results = [r async for page in validations.result_pages(principal, validation.id) for r in page]
        report = score(
            version.rules, results, validation_id=validation.id, status=validation.status, computed_at=now_iso()
        )
        if not await self.store.save_report(version, report):
            stored = await self._version_of(version)
            if stored.report is not None and stored.report.validation_id == validation.id:
                report = stored.report  # another read stored it first: that one
        return version, test, validation.status, report

    async def _version_of(self, version: Version) -> Version:
        found = await self.store.get_version(version.owner, version.name, version.version)
        if found is None:  # versions are never deleted
            raise AppError(f"{version.reference} vanished.")
        return found


def _not_unicode(text: str) -> bool:
    """A lone surrogate (a JSON `\\ud800` escape) is no text: UTF-8, and so DynamoDB, cannot hold it."""
    return any("\ud800" <= c <= "\udfff" for c in text)


def _usable(ruleset: Ruleset, field: str) -> None:
    if ruleset.retired_at is not None:
        raise Conflict(
            f"Rule set {ruleset.name!r} is retired (since {ruleset.retired_at}): new validations cannot use it. "
            "Its versions stay readable; pushing a version reinstates it.",
            field=field,
        )


def _audit_target(version: Version) -> str:
    return f"{version.owner}/{version.reference}"


def _is_version_key(value: Any, ruleset: Ruleset) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == {"owner", "sk"}
        and value["owner"] == ruleset.owner
        and isinstance(value["sk"], str)
        and value["sk"].startswith(f"v#{ruleset.name}#")
        and len(value["sk"]) <= 128
    )


def _is_list_cursor(value: Any, owner: str) -> bool:
    """["own", key of `owner`'s sets] or ["shared", key of the shared pointers or None for their start], as
    list_page issues them."""
    if not (isinstance(value, list) and len(value) == 2 and value[0] in ("own", "shared")):
        return False
    key = value[1]
    if key is None:
        return value[0] == "shared"
    return (
        isinstance(key, dict)
        and set(key) == {"owner", "sk"}
        and all(isinstance(v, str) and 0 < len(v) <= 128 for v in key.values())
        and key["owner"] == (owner if value[0] == "own" else SHARED_PARTITION)
        and key["sk"].startswith("set#")
    )

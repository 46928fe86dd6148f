"""Read a submission (multipart or JSON), enforce every limit, and decide what is text.

Everything here runs before anything is stored: a rejected request leaves no trace.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal

import anyio.to_thread
from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from app.errors import BadRequest, PayloadTooLarge, Unprocessable, UnsupportedMediaType
from app.limits import loads_bounded
from app.settings import Settings
from core import text
from core.fairness import PRIORITIES, Priority  # a priority orders the owner's own validations in the governor

_UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what POST /uploads hands out
RULESET_NAME = re.compile(r"[a-z0-9_-]{1,64}")  # a stored rule set's name: `@` separates the version


@dataclass(frozen=True)
class Document:
    name: str
    content: bytes  # valid UTF-8 text, as uploaded (BOM and all)


@dataclass(frozen=True)
class Rule:
    id: str
    text: str


@dataclass(frozen=True)
class RulesetVersion:
    """One immutable version of a stored rule set, as a validation uses it (its examples stay with the set)."""

    owner: str
    name: str
    version: int
    rules: tuple[Rule, ...]

    @property
    def reference(self) -> str:
        return f"{self.name}@{self.version}"


Kind = Literal["validation", "test"]  # test: a rule set's examples judged against its rules


class LaneIn(BaseModel):
    """How the model is asked: the tier, and on flex how long to wait for capacity."""

    model_config = ConfigDict(extra="forbid")
    tier: Literal["standard", "flex", "batch"] = Field(
        description="standard; flex (half price, slower, may lack capacity); batch (the Batch API)"
    )
    flex_deadline_seconds: int = Field(
        default=300,
        ge=0,
        le=86_400,
        description='flex: how long one call retries "resource unavailable" before `flex_fallback`',
    )
    flex_fallback: Literal["standard", "fail"] = Field(
        default="standard", description="flex past its deadline: ask at the standard tier, or fail the part"
    )
    batch_sync_tier: Literal["flex", "standard"] = Field(
        default="flex",
        description="batch: the tier of its synchronous calls (re-asks, parts the batches left, combine calls): "
        "flex (half price, as the batch; standard past flex_deadline_seconds) or standard",
    )


@dataclass(frozen=True)
class Submission:
    documents: list[Document]
    rules: list[Rule]  # inline rules (a referenced rule set's rules are added when it is resolved)
    reuse: bool = True  # a part judged before (same text, rules, model, prompt) takes the stored verdict
    priority: Priority = "normal"
    ruleset: str | None = None  # `name` or `name@3`, as sent
    resolved: RulesetVersion | None = None  # the version it names, once resolved
    kind: Kind = "validation"
    lane: LaneIn | None = None  # the tier asked (None: the owner's default)
    uploads: tuple[str, ...] = ()  # ids of files uploaded straight to S3 (app/uploads), after the inline ones
    model: str | None = None  # a model of the admin's list (None: its default)

    def fingerprint(self) -> str:
        """Same files, rules and options → same hash (for Idempotency-Key)."""
        canonical: dict[str, Any] = {
            "documents": [[d.name, hashlib.sha256(d.content).hexdigest()] for d in self.documents],
            "rules": [[r.id, r.text] for r in self.rules],
        }
        if not self.reuse:
            canonical["reuse"] = False
        if self.priority != "normal":  # so keys stored before priorities existed still match their bodies
            canonical["priority"] = self.priority
        if self.ruleset is not None:
            canonical["ruleset"] = self.ruleset
        if self.lane is not None:
            canonical["lane"] = self.lane.model_dump()
        if self.uploads:
            canonical["uploads"] = list(self.uploads)
        if self.model is not None:
            canonical["model"] = self.model
        return hashlib.sha256(json.dumps(canonical, separators=(",", ":")).encode()).hexdigest()


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    text: str


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=255)
    content: str


class JsonSubmission(BaseModel):
    """`application/json` form of `POST /validations`."""

    model_config = ConfigDict(extra="forbid")
    documents: list[DocumentIn] = Field(default_factory=list, description="Inline files (small submissions)")
    uploads: list[str] = Field(
        default_factory=list,
        description="Ids of files uploaded straight to S3 (`POST /uploads`), validated after the inline ones",
    )
    rules: list[str | RuleIn] = Field(
        default_factory=list, description="Inline rules; may be empty when `ruleset` names a stored rule set"
    )
    ruleset: str | None = Field(
        default=None,
        max_length=80,
        description="A stored rule set: `name` (its latest version) or `name@3`; its rules come first",
    )
    reuse: bool = Field(default=True, description="false: ask the model again even for parts judged before")
    priority: Priority = "normal"
    tier: Literal["standard", "flex", "batch"] | None = Field(
        default=None, description="The service tier (default: your quota's `default_tier`): docs, Lanes"
    )
    flex_deadline_seconds: int = Field(default=300, ge=0, le=86_400)
    flex_fallback: Literal["standard", "fail"] = "standard"
    batch_sync_tier: Literal["flex", "standard"] = "flex"
    model: str | None = Field(
        default=None, min_length=1, max_length=128, description="A model of `GET /admin/models` (default: its default)"
    )


# Unicode categories a file name may not hold: controls (Cc), format characters (Cf: bidi
# overrides and isolates, zero-width characters), lone surrogates (Cs), line and paragraph
# separators (Zl, Zp). A name is shown to people and to the model; these make it read as
# something else.
_REFUSED_IN_NAMES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _check_name(name: str, field: str) -> str:
    """The name as stored: NFC-normalized (so `é` and `e\u0301` are one name) and stripped."""
    clean = unicodedata.normalize("NFC", name).strip()
    shown = ascii(name)[1:-1]  # a refused name is echoed escaped: a bidi override stays inert
    refused = next((c for c in clean if unicodedata.category(c) in _REFUSED_IN_NAMES), None)
    if refused is not None:
        raise Unprocessable(
            f"Invalid file name {shown!r}: it holds U+{ord(refused):04X} "
            f"({unicodedata.name(refused, unicodedata.category(refused))}); "
            "control, format (bidi) and separator characters are not allowed.",
            field=field,
            file=shown,
        )
    if not clean or len(clean) > 255 or "/" in clean or "\\" in clean or clean in {".", ".."}:
        raise Unprocessable(
            f"Invalid file name {name!r}: 1-255 characters, no path separators.", field=field, file=name
        )
    return clean


def _as_text(name: str, content: bytes, content_type: str | None) -> None:
    try:
        text.check(name, content, content_type)
    except text.NotText as refused:
        raise UnsupportedMediaType(str(refused), file=name) from None


def _document(settings: Settings, name: str, content: bytes, content_type: str | None, index: int) -> Document:
    field = f"files[{index}]"
    name = _check_name(name, field)
    if len(content) > settings.max_file_bytes:
        raise PayloadTooLarge(
            f"File {name!r} is {len(content)} bytes; the limit is {settings.max_file_bytes} bytes per file.",
            file=name,
            limit="max_file_bytes",
            limit_value=settings.max_file_bytes,
        )
    _as_text(name, content, content_type)
    if text.blank(content):
        raise Unprocessable(f"File {name!r} is empty: nothing to validate.", file=name, field=field)
    return Document(name, content)


async def _checked(settings: Settings, name: str, content: bytes, content_type: str | None, index: int) -> Document:
    """`_document` on a worker thread: decoding and scanning megabytes is no work for the event loop."""
    return await anyio.to_thread.run_sync(_document, settings, name, content, content_type, index)


def _rules(settings: Settings, raw: list[Any], ruleset: str | None = None) -> list[Rule]:
    if not raw and ruleset is None:
        raise Unprocessable("At least one rule is required (inline `rules`, or a stored `ruleset`).", field="rules")
    if len(raw) > settings.max_rules:
        raise Unprocessable(
            f"{len(raw)} rules; the limit is {settings.max_rules}.",
            field="rules",
            limit="max_rules",
            limit_value=settings.max_rules,
        )
    parsed: list[RuleIn] = []
    for i, item in enumerate(raw):
        try:
            rule = RuleIn(text=item) if isinstance(item, str) else RuleIn.model_validate(item)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise Unprocessable(f"Rule {i}: {where}: {first['msg']}.", field=f"rules[{i}].{where}") from exc
        if not rule.text.strip():
            raise Unprocessable(f"Rule {i} has no text.", field=f"rules[{i}].text")
        if any(unicodedata.category(c) == "Cs" for c in rule.text):
            raise Unprocessable(f"Rule {i} is not valid Unicode text (a lone surrogate).", field=f"rules[{i}].text")
        if len(rule.text) > settings.max_rule_chars:
            raise Unprocessable(
                f"Rule {i} has {len(rule.text)} characters; the limit is {settings.max_rule_chars}.",
                field=f"rules[{i}].text",
                limit="max_rule_chars",
                limit_value=settings.max_rule_chars,
            )
        parsed.append(rule)
    given = [r.id for r in parsed if r.id]
    duplicates = sorted({i for i in given if given.count(i) > 1})
    if duplicates:
        raise Unprocessable(f"Rule ids must be unique; repeated: {', '.join(duplicates)}.", field="rules")
    taken, counter, rules = set(given), 0, []
    for rule in parsed:
        rule_id = rule.id
        while rule_id is None or (rule.id is None and rule_id in taken):
            counter += 1
            rule_id = f"r{counter}"
        taken.add(rule_id)
        rules.append(Rule(rule_id, rule.text.strip()))
    return rules


_LANE_FIELDS = ("tier", "flex_deadline_seconds", "flex_fallback", "batch_sync_tier")


def _lane(form: Any) -> LaneIn | None:
    """The multipart lane fields (each at most once), checked as the JSON ones are."""
    values = {}
    for name in _LANE_FIELDS:
        given = form.getlist(name)
        if len(given) > 1 or (given and not isinstance(given[0], str)):
            raise Unprocessable(f"Send `{name}` at most once.", field=name)
        if given:
            values[name] = given[0]
    if "tier" not in values:
        return None
    try:
        return LaneIn.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise Unprocessable(f"{where}: {first['msg']}.", field=where) from exc


def _priority(values: list[Any]) -> Priority:
    """The multipart `priority` field: absent, or one of high, normal, low."""
    if not values:
        return "normal"
    if len(values) > 1 or values[0] not in PRIORITIES:
        raise Unprocessable(f"`priority` must be one of {', '.join(PRIORITIES)} (once).", field="priority")
    return PRIORITIES[PRIORITIES.index(values[0])]


def _ruleset(value: str | None) -> str | None:
    """A stored rule set's reference as sent: `name` or `name@3` (resolved when the validation is created)."""
    if value is None:
        return None
    name, _, version = value.partition("@")
    if not RULESET_NAME.fullmatch(name) or (version and not version.isdigit()) or value.endswith("@"):
        raise Unprocessable(
            f"`ruleset` is `name` or `name@version` (name: 1-64 of a-z, 0-9, - and _); got {value[:80]!r}.",
            field="ruleset",
        )
    return value


def _finish(
    settings: Settings,
    documents: list[Document],
    rules: list[Rule],
    reuse: bool = True,
    priority: Priority = "normal",
    ruleset: str | None = None,
    lane: LaneIn | None = None,
    uploads: list[str] | None = None,
    files_field: str = "files",
    model: str | None = None,
) -> Submission:
    uploads = uploads or []
    if not documents and not uploads:
        raise Unprocessable("The batch is empty: send at least one file or upload.", field=files_field)
    if len(documents) + len(uploads) > settings.max_files:
        raise PayloadTooLarge(
            f"{len(documents) + len(uploads)} files; the limit is {settings.max_files} per validation.",
            limit="max_files",
            limit_value=settings.max_files,
        )
    names = [d.name for d in documents]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise Unprocessable(
            f"File names must be unique; repeated: {', '.join(repeated)}.", field="files", file=repeated[0]
        )
    total = sum(len(d.content) for d in documents)
    if total > settings.max_request_bytes:
        raise PayloadTooLarge(
            f"The files add up to {total} bytes; the limit is {settings.max_request_bytes} bytes per request.",
            limit="max_request_bytes",
            limit_value=settings.max_request_bytes,
        )
    for index, upload_id in enumerate(uploads):
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise Unprocessable(f"uploads[{index}] is not an upload id.", field=f"uploads[{index}]")
    return Submission(
        documents, rules, reuse, priority, ruleset=ruleset, lane=lane, uploads=tuple(uploads), model=model
    )


def _check_declared_length(request: Request, settings: Settings) -> None:
    declared = request.headers.get("content-length")
    # Multipart framing adds a little; allow 1 MiB over the files' limit before refusing unread.
    if declared and declared.isdigit() and int(declared) > settings.max_request_bytes + 1024 * 1024:
        raise PayloadTooLarge(
            f"The request is {declared} bytes; the limit is {settings.max_request_bytes} bytes.",
            limit="max_request_bytes",
            limit_value=settings.max_request_bytes,
        )


async def read_submission(request: Request, settings: Settings) -> Submission:
    _check_declared_length(request, settings)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        return await _read_json(request, settings)
    if content_type == "multipart/form-data":
        return await _read_multipart(request, settings)
    raise UnsupportedMediaType(
        f"Send multipart/form-data (files + rules) or application/json, not {content_type or 'no content type'}.",
        field="Content-Type",
    )


def _json_values(settings: Settings) -> int:
    """Values a submission's JSON may hold: about five per document and per rule, with room to spare."""
    return 8 * (settings.max_files + settings.max_rules) + 64


async def _read_body(request: Request) -> bytearray:
    """The body in one buffer (`request.body()` keeps a joined copy on the request until it ends).
    `app/limits.BodyLimit` bounds it while it streams."""
    body = bytearray()
    async for part in request.stream():
        body += part
    return body


async def _read_json(request: Request, settings: Settings) -> Submission:
    body = await _read_body(request)
    raw = loads_bounded(body, max_depth=settings.max_json_depth, max_values=_json_values(settings))
    del body
    # Counts before the model validates every document.
    given = sum(len(raw[k]) for k in ("documents", "uploads") if isinstance(raw, dict) and isinstance(raw.get(k), list))
    if given > settings.max_files:
        raise PayloadTooLarge(
            f"{given} files; the limit is {settings.max_files} per validation.",
            limit="max_files",
            limit_value=settings.max_files,
        )
    try:
        parsed = JsonSubmission.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise Unprocessable(f"{where}: {first['msg']}.", field=where) from exc
    del raw
    ruleset = _ruleset(parsed.ruleset)
    rules = _rules(settings, list(parsed.rules), ruleset)
    documents = []
    for i, d in enumerate(parsed.documents):
        try:
            content = d.content.encode("utf-8")
        except UnicodeEncodeError as exc:  # a JSON "\ud800" escape: a lone surrogate is no text
            raise UnsupportedMediaType(
                f"File {ascii(d.name)} is not valid Unicode text (a lone surrogate at offset {exc.start}).",
                file=ascii(d.name)[1:-1],
                field=f"documents[{i}].content",
            ) from exc
        d.content = ""  # one copy of the text at a time
        documents.append(await _checked(settings, d.name, content, None, i))
    lane = (
        LaneIn(
            tier=parsed.tier,
            flex_deadline_seconds=parsed.flex_deadline_seconds,
            flex_fallback=parsed.flex_fallback,
            batch_sync_tier=parsed.batch_sync_tier,
        )
        if parsed.tier
        else None
    )
    return _finish(
        settings,
        documents,
        rules,
        parsed.reuse,
        parsed.priority,
        ruleset,
        lane,
        parsed.uploads,
        "documents",
        parsed.model,
    )


async def _read_multipart(request: Request, settings: Settings) -> Submission:
    try:
        form = await request.form(
            max_files=settings.max_files + 1,
            max_fields=10 + settings.max_files,  # each upload id is one field
            max_part_size=settings.max_rules * settings.max_rule_chars * 4 + 65536,
        )
    except MultiPartException as exc:
        if "Too many files" in str(exc):
            raise PayloadTooLarge(
                f"More than {settings.max_files} files; the limit is {settings.max_files} per validation.",
                limit="max_files",
                limit_value=settings.max_files,
            ) from exc
        raise BadRequest(f"Malformed multipart body: {exc}.") from exc
    except HTTPException as exc:  # Starlette's own 400s (e.g. no boundary)
        raise BadRequest(f"Malformed multipart body: {exc.detail}.") from exc
    try:
        fields = {"files", "uploads", "rules", "ruleset", "reuse", "priority", "model", *_LANE_FIELDS}
        unexpected = sorted(set(form.keys()) - fields)
        if unexpected:
            raise Unprocessable(
                f"Unexpected form fields: {', '.join(unexpected)}; "
                "send `files` and `rules` or `ruleset` (and `reuse`, `priority`).",
                field=unexpected[0],
            )
        raw_ruleset = form.getlist("ruleset")
        if len(raw_ruleset) > 1 or (raw_ruleset and not isinstance(raw_ruleset[0], str)):
            raise Unprocessable("Send at most one `ruleset` field (`name` or `name@version`).", field="ruleset")
        ruleset = _ruleset(raw_ruleset[0] if raw_ruleset else None)  # type: ignore[arg-type]  # str, checked above
        raw_reuse = form.get("reuse", "true")
        if raw_reuse not in ("true", "false"):
            raise Unprocessable("`reuse` is `true` or `false`.", field="reuse")
        priority = _priority(form.getlist("priority"))
        raw_rules = form.getlist("rules")
        if ruleset is not None and not raw_rules:
            raw_rules = ["[]"]  # the stored rule set's rules only
        if len(raw_rules) != 1 or not isinstance(raw_rules[0], str):
            raise Unprocessable("Send exactly one `rules` part holding a JSON array of rules.", field="rules")
        rules_value = loads_bounded(
            raw_rules[0].encode(), max_depth=settings.max_json_depth, max_values=_json_values(settings), field="rules"
        )
        if not isinstance(rules_value, list):
            raise Unprocessable("`rules` must be a JSON array of strings or {id, text} objects.", field="rules")
        rules = _rules(settings, rules_value, ruleset)
        documents = []
        for index, upload in enumerate(form.getlist("files")):
            if not isinstance(upload, UploadFile):
                raise Unprocessable(f"files[{index}] is not a file part.", field=f"files[{index}]")
            content = await upload.read(settings.max_file_bytes + 1)
            await upload.close()  # its spooled copy goes now, not when the whole form closes
            documents.append(
                await _checked(settings, upload.filename or f"file-{index}", content, upload.content_type, index)
            )
        uploads = form.getlist("uploads")
        if not all(isinstance(u, str) for u in uploads):
            raise Unprocessable("`uploads` fields hold upload ids, not files.", field="uploads")
        raw_model = form.getlist("model")
        if len(raw_model) > 1 or (raw_model and not (isinstance(raw_model[0], str) and 1 <= len(raw_model[0]) <= 128)):
            raise Unprocessable("Send at most one `model` field (a model's name).", field="model")
        return _finish(
            settings,
            documents,
            rules,
            raw_reuse == "true",
            priority,
            ruleset,
            _lane(form),
            [str(u) for u in uploads],
            model=str(raw_model[0]) if raw_model else None,
        )
    finally:
        await form.close()

"""The plan step (lambdas/plan_files) on in-memory fakes of its stores: a line-oriented file
planned over many invocations (small ranges, a short time budget) writes the parts one whole
pass writes and answers the same plan; a JSON or Markdown file past the whole-file limit, and
files failing a check, are per-file errors with no parts."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from core.planning import plan_file
from lambdas.common.config import LambdaConfig
from lambdas.plan_files.handler import plan_one

RULES = [{"id": "no-secret", "text": 'The file must not contain "secret".'}]
CONFIG = LambdaConfig(validations_table="v", parts_table="p", uploads_bucket="u", part_max_tokens=120)


@dataclass
class _Validations:
    record: dict[str, Any]

    def get(self, validation_id: str, *names: str) -> dict[str, Any]:
        return {n: self.record[n] for n in names}


@dataclass
class _Files:
    content: bytes
    ranges: int = 0

    def range(self, key: str, start: int, end: int, etag: str | None = None) -> tuple[bytes, int]:
        self.ranges += 1
        return self.content[start:end], len(self.content)

    def whole(self, key: str, etag: str | None = None) -> bytes:
        return self.content


@dataclass
class _Parts:
    written: dict[str, dict[str, Any]] = field(default_factory=dict)

    def put_planned(self, parts: list[dict[str, Any]], expires_at: int) -> None:
        self.written.update({p["part_id"]: {**p, "expires_at": expires_at} for p in parts})


@dataclass
class _Store:
    validations: _Validations
    files: _Files
    parts: _Parts


def store_of(name: str, content: bytes, **file: Any) -> Any:
    record = {
        "run": 1,
        "status": "QUEUED",
        "rules": RULES,
        "expires_at": 2_000_000_000,
        "files": [{"name": name, "key": "k", "etag": "e", "size": len(content), **file}],
    }
    return _Store(_Validations(record), _Files(content), _Parts())


class _Clock:
    """Remaining time that runs out after `ranges` reads of the file: an invocation's end."""

    def __init__(self, files: _Files, ranges: int) -> None:
        self.files, self.until = files, files.ranges + ranges

    def __call__(self) -> int:
        return 900_000 if self.files.ranges < self.until else 1_000


def planned(store: Any, config: LambdaConfig, ranges_per_invocation: int) -> tuple[dict[str, Any], int]:
    """Invoked as PlanMore would, each invocation's cursor through JSON; (answer, invocations)."""
    cursor, invocations = None, 0
    while True:
        invocations += 1
        clock = _Clock(store.files, ranges_per_invocation)
        answer = plan_one(store, config, "v1", 1, 0, cursor, clock)
        if not answer.get("more"):
            return answer, invocations
        assert len(json.dumps(answer)) < 2048  # the state's payload stays small
        cursor = json.loads(json.dumps(answer["cursor"]))


def whole_plan(name: str, content: bytes) -> Any:
    return plan_file("v1", 0, name, "k", content, RULES, CONFIG.part_max_tokens, CONFIG.completion_max_tokens)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("app.log", ("".join(f"{i} event {'x' * (i * 7 % 90)} secret\r\n" for i in range(400)) + "end").encode()),
        (
            "rows.csv",
            b"\xef\xbb\xbfid,name,note\n"
            + b"".join(f'{i},"name {i}","multi\nline {"y" * (i % 50)}"\n'.encode() for i in range(300)),
        ),
        ("events.jsonl", "".join(f'{{"i": {i}, "é": "{"z" * (i % 40)}"}}\n' for i in range(300)).encode()),
    ],
)
def test_a_file_planned_over_many_invocations_writes_the_parts_of_one_pass(name: str, content: bytes) -> None:
    config = CONFIG.model_copy(update={"plan_range_bytes": 4096, "plan_max_line_bytes": 4096})
    store = store_of(name, content)

    answer, invocations = planned(store, config, ranges_per_invocation=2)

    whole = whole_plan(name, content)
    assert invocations >= 3
    assert "rejected" not in answer
    assert list(store.parts.written.values()) == [{**p, "expires_at": 2_000_000_000} for p in whole.parts]
    f = whole.file
    assert answer == {
        "file_index": 0,
        "parts": f["parts"],
        "kind": f["kind"],
        "last_line": f["last_line"],
        "combine_estimate": f["combine_estimate"],
        "estimate": whole.estimate,
    }


def test_an_invocation_run_again_with_its_cursor_rewrites_the_same_parts() -> None:
    content = "".join(f"line {i} {'w' * (i % 60)}\n" for i in range(500)).encode()
    config = CONFIG.model_copy(update={"plan_range_bytes": 4096, "plan_invocation_bytes": 8192})
    store = store_of("a.log", content)
    first = plan_one(store, config, "v1", 1, 0)  # the check pass, and part of the split
    second = plan_one(store, config, "v1", 1, 0, first["cursor"])
    written = dict(store.parts.written)

    again = plan_one(store, config, "v1", 1, 0, first["cursor"])  # a retry of the second invocation

    assert again == second and store.parts.written == written


def test_a_json_file_past_the_whole_file_limit_is_a_per_file_error_naming_it_and_the_limit() -> None:
    config = CONFIG.model_copy(update={"plan_whole_file_max_bytes": 1024 * 1024})
    content = b"[" + b",".join(b'{"a": 1}' for _ in range(200_000)) + b"]"
    store = store_of("big.json", content)

    answer = plan_one(store, config, "v1", 1, 0)

    assert answer["rejected"]["type"] == "too_large"
    assert "'big.json'" in answer["rejected"]["detail"] and "up to 1 MiB" in answer["rejected"]["detail"]
    assert store.parts.written == {} and store.files.ranges == 0


def test_a_small_json_file_is_still_planned_whole() -> None:
    content = json.dumps([{"i": i, "text": "v" * 40} for i in range(60)]).encode()
    store = store_of("data.json", content)

    answer = plan_one(store, CONFIG, "v1", 1, 0)

    whole = whole_plan("data.json", content)
    assert answer["parts"] == whole.file["parts"] > 1 and answer["kind"] == "json"
    assert list(store.parts.written) == [p["part_id"] for p in whole.parts]


@pytest.mark.parametrize(
    ("name", "content", "file", "kind", "detail"),
    [
        ("a.txt", b"  \r\n\t\n" * 2000, {}, "empty", "is empty"),
        ("a.log", b"ok\n" * 3000 + b"caf\xe9\n", {}, "not_text", "invalid byte at offset 9003"),
        ("a.log", b"\x00\x01\x02" * 3000, {}, "not_text", "looks binary"),
        ("a.log", b"fine\n" * 3000, {"sha256": "0" * 64}, "sha256_mismatch", "declared SHA-256"),
        ("a.log", b"short\n" + b"x" * 20_000 + b"\n", {}, "line_too_long", "longer than"),
    ],
)
def test_a_file_failing_a_check_read_in_ranges_gets_no_parts(
    name: str, content: bytes, file: dict[str, Any], kind: str, detail: str
) -> None:
    config = CONFIG.model_copy(update={"plan_range_bytes": 4096, "plan_max_line_bytes": 8192})
    store = store_of(name, content, **file)

    answer, _ = planned(store, config, ranges_per_invocation=100 if "sha256" in file else 1)

    assert answer["rejected"]["type"] == kind and detail in answer["rejected"]["detail"]
    assert store.parts.written == {}


def test_a_declared_sha256_that_matches_is_planned() -> None:
    content = b"fine line\n" * 3000
    config = CONFIG.model_copy(update={"plan_range_bytes": 4096, "plan_invocation_bytes": 4096})
    store = store_of("a.log", content, sha256=hashlib.sha256(content).hexdigest())

    answer, invocations = planned(store, config, ranges_per_invocation=100)

    assert answer["parts"] == whole_plan("a.log", content).file["parts"] and invocations > 3


def test_a_declared_sha256_not_checked_within_one_invocation_refuses_the_file() -> None:
    """hashlib's state cannot be carried to the next invocation: the check pass must end in one."""
    content = b"fine line\n" * 3000
    config = CONFIG.model_copy(update={"plan_range_bytes": 4096})
    store = store_of("a.log", content, sha256=hashlib.sha256(content).hexdigest())

    answer, _ = planned(store, config, ranges_per_invocation=2)

    assert answer["rejected"]["type"] == "too_large" and "within one invocation" in answer["rejected"]["detail"]
    assert store.parts.written == {}

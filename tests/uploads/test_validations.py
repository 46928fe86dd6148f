"""Validations of files uploaded straight to S3: planned by the state machine's plan step
(lambdas/plan_files) with the inline path's code, through the whole embedded system."""

from __future__ import annotations

from typing import Any

import httpx

from core.dynamo import from_item
from tests.support.stack import Aws, all_results, make_user, wait_for_status
from tests.uploads.conftest import MIB, User
from tests.uploads.test_api import declare, problem

NO_SECRET = {"id": "no-secret", "text": 'The file must not contain "secret".'}


def uploaded(api: Any, user: User, name: str, data: bytes) -> str:
    """An upload holding `data`, through its presigned PUT; its id."""
    (ticket,) = declare(api, user, {"name": name, "size": len(data)})
    put = httpx.put(ticket["url"], content=data, headers=ticket["headers"])
    assert put.status_code == 200, put.text
    return str(ticket["upload_id"])


def validate(api: Any, user: User, body: dict[str, Any]) -> dict[str, Any]:
    answer = api.post("/validations", json={"rules": [NO_SECRET], **body}, headers=user[1])
    assert answer.status_code == 202, answer.text
    created: dict[str, Any] = answer.json()
    return created


def ended(api: Any, user: User, validation_id: str) -> dict[str, Any]:
    return wait_for_status(api, validation_id, headers=user[1])


class _as:
    """The API as `user` (all_results reads with the client's own headers)."""

    def __init__(self, api: Any, user: User) -> None:
        self.api, self.user = api, user

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.api.get(url, headers=self.user[1], **kwargs)


def lines(count: int, secret_at: set[int]) -> bytes:
    return "".join(f"row {i}: {'secret' if i in secret_at else 'plain'} value\n" for i in range(1, count + 1)).encode()


def by_file(api: Any, user: User, validation_id: str) -> dict[str, dict[str, Any]]:
    return {r["file"]: r for r in all_results(_as(api, user), validation_id)}


def test_uploaded_files_are_planned_in_the_state_machine_and_judged_like_inline_ones(
    uploads_api: Any, alice: User
) -> None:
    data = lines(400, {7, 260})
    upload_id = uploaded(uploads_api, alice, "big.log", data)

    created = validate(
        uploads_api, alice, {"documents": [{"name": "a.txt", "content": "a secret\n"}], "uploads": [upload_id]}
    )
    assert created["progress"]["total"] == 1  # the uploaded file's parts are not known before the plan step
    assert [f["planned"] for f in created["files"]] == [True, False]
    done = ended(uploads_api, alice, created["id"])
    inline = validate(uploads_api, alice, {"documents": [{"name": "big.log", "content": data.decode()}]})
    inline_done = ended(uploads_api, alice, inline["id"])

    assert done["status"] == "SUCCEEDED", done
    results = by_file(uploads_api, alice, created["id"])
    assert list(results) == ["a.txt", "big.log"]
    assert done["progress"]["total"] == 1 + inline_done["progress"]["total"] and inline_done["progress"]["total"] > 1
    same = by_file(uploads_api, alice, inline["id"])["big.log"]
    assert results["big.log"]["rules"] == same["rules"]  # the same parts, the same verdicts
    assert [f["line"] for f in results["big.log"]["rules"][0]["findings"]] == [7, 260]
    assert results["a.txt"]["rules"][0]["passed"] is False


def test_a_file_that_fails_the_plan_checks_is_a_per_file_error_and_the_rest_is_judged(
    uploads_api: Any, alice: User
) -> None:
    binary = uploaded(uploads_api, alice, "latin1.txt", "caf\xe9 secret\n".encode("latin-1"))
    blank = uploaded(uploads_api, alice, "blank.txt", b"  \n\t\n")
    good = uploaded(uploads_api, alice, "good.txt", lines(3, {2}))

    created = validate(uploads_api, alice, {"uploads": [binary, blank, good]})
    done = ended(uploads_api, alice, created["id"])

    assert done["status"] == "SUCCEEDED", done
    results = by_file(uploads_api, alice, created["id"])
    assert results["latin1.txt"]["status"] == "FAILED"
    assert results["latin1.txt"]["error"]["type"] == "not_text"
    assert "not UTF-8 text (invalid byte at offset 3)" in results["latin1.txt"]["error"]["detail"]
    assert results["latin1.txt"]["rules"] == [
        {"id": "no-secret", "passed": None, "findings": [], "ungrounded": [], "undecided": "error"}
    ]
    assert results["blank.txt"]["error"]["type"] == "empty"
    assert results["good.txt"]["status"] == "SUCCEEDED"
    assert [f["line"] for f in results["good.txt"]["rules"][0]["findings"]] == [2]


def test_a_submission_whose_every_file_is_rejected_ends_failed_with_the_reasons(uploads_api: Any, alice: User) -> None:
    picture = uploaded(uploads_api, alice, "notes.txt", b"\x00\x01\x02PNG" * 50)

    created = validate(uploads_api, alice, {"uploads": [picture]})
    done = ended(uploads_api, alice, created["id"])

    assert done["status"] == "FAILED"
    assert done["error"]["type"] == "files_rejected"
    assert "notes.txt" in done["error"]["detail"] and "looks binary" in done["error"]["detail"]


def test_the_reservation_is_corrected_once_the_plan_is_known_refunded_or_charged(uploads_api: Any, aws: Aws) -> None:
    """A dense file (short lines: many tokens per byte) costs more than its size's guess, a wide
    one (runs of spaces: few tokens) less; either way the run holds what the plan counted."""
    user = make_user(
        uploads_api, quota={"capacity_tokens": 200_000, "refill_tokens_per_minute": 1_000_000, "max_running": 5}
    )
    dense = uploaded(uploads_api, user, "dense.txt", b"a\n" * 3000)
    wide = uploaded(uploads_api, user, "wide.txt", ((" " * 400) + "x\n").encode() * 200)
    dynamodb, table = aws.client("dynamodb"), f"{uploads_api.app.state.settings.name_prefix}-validations"

    for upload_id, grew in ((dense, True), (wide, False)):
        created = validate(uploads_api, user, {"uploads": [upload_id]})
        assert ended(uploads_api, user, created["id"])["status"] == "SUCCEEDED"
        item = from_item(
            dynamodb.get_item(TableName=table, Key={"id": {"S": created["id"]}}, ConsistentRead=True)["Item"]
        )
        assert item["reserved"] == item["estimated_tokens"] == item["run_cost"]
        assert (item["estimated_tokens"] > item["guessed_tokens"]) is grew
        assert "unplanned" not in item


def test_a_plan_past_the_owners_capacity_ends_failed_naming_both_numbers(uploads_api: Any) -> None:
    user = make_user(
        uploads_api, quota={"capacity_tokens": 6_000, "refill_tokens_per_minute": 1_000_000, "max_running": 5}
    )
    dense = uploaded(uploads_api, user, "dense.txt", b"a\n" * 3000)  # guessed ~2,400 tokens, planned ~31,000

    created = validate(uploads_api, user, {"uploads": [dense]})
    done = ended(uploads_api, user, created["id"])

    assert done["status"] == "FAILED" and done["error"]["type"] == "over_capacity"
    assert "capacity is 6000" in done["error"]["detail"]


def test_uploads_a_validation_may_not_take_are_refused_naming_the_upload(
    uploads_api: Any, alice: User, bob: User
) -> None:
    mine = uploaded(uploads_api, alice, "mine.txt", b"hello\n")
    (pending,) = declare(uploads_api, alice, {"name": "later.txt", "size": 6})

    others = uploads_api.post("/validations", json={"rules": [NO_SECRET], "uploads": [mine]}, headers=bob[1])
    not_yet = uploads_api.post(
        "/validations", json={"rules": [NO_SECRET], "uploads": [mine, pending["upload_id"]]}, headers=alice[1]
    )
    twice = uploads_api.post(
        "/validations",
        json={"rules": [NO_SECRET], "documents": [{"name": "mine.txt", "content": "x\n"}], "uploads": [mine]},
        headers=alice[1],
    )
    dry = uploads_api.post(
        "/validations?dry_run=true", json={"rules": [NO_SECRET], "uploads": [mine]}, headers=alice[1]
    )

    assert problem(others, 404)["field"] == "uploads[0]"
    assert problem(not_yet, 409)["field"] == "uploads[1]"
    assert problem(twice, 422)["field"] == "uploads[0]"
    assert problem(dry, 422)["field"] == "uploads"
    listed = uploads_api.get("/validations", headers=alice[1]).json()["items"]
    assert listed == []  # nothing was stored for any of them


def test_inline_files_and_uploads_count_together_against_max_files(uploads_api: Any, alice: User) -> None:
    limit = uploads_api.app.state.settings.max_files
    documents = [{"name": f"f{i}.txt", "content": "x\n"} for i in range(limit)]

    answer = uploads_api.post(
        "/validations", json={"rules": [NO_SECRET], "documents": documents, "uploads": ["u1"]}, headers=alice[1]
    )

    body = problem(answer, 413)
    assert (body["limit"], body["limit_value"]) == ("max_files", limit)


def test_an_owner_without_a_quota_validates_uploads_too(uploads_api: Any) -> None:
    admin: User = ("admin", {})  # the client's own headers: the bootstrap admin, who has no quota

    created = validate(uploads_api, admin, {"uploads": [uploaded(uploads_api, admin, "a.log", lines(3, {1}))]})
    done = ended(uploads_api, admin, created["id"])

    assert done["status"] == "SUCCEEDED", done
    assert [f["line"] for f in by_file(uploads_api, admin, created["id"])["a.log"]["rules"][0]["findings"]] == [1]


def test_a_multipart_upload_whose_bytes_miss_their_declared_sha256_is_refused_by_the_plan_step(
    uploads_api: Any, alice: User
) -> None:
    """S3 checks a multipart upload's parts, not the whole file's SHA-256: the plan step, reading it, does."""
    data = b"0123456789abcdef\n" * (5 * MIB // 17 + 40)  # just over one 5 MiB part
    (ticket,) = declare(uploads_api, alice, {"name": "big.log", "size": len(data), "sha256": "ab" * 32})
    etags, offset = [], 0
    for part in ticket["parts"]:
        put = httpx.put(part["url"], content=data[offset : offset + part["size"]])
        assert put.status_code == 200, put.text
        etags.append({"number": part["number"], "etag": put.headers["etag"]})
        offset += part["size"]
    done = uploads_api.post(f"/uploads/{ticket['upload_id']}/complete", json={"parts": etags}, headers=alice[1])
    assert done.status_code == 200, done.text

    created = validate(
        uploads_api,
        alice,
        {"documents": [{"name": "a.txt", "content": "fine\n"}], "uploads": [ticket["upload_id"]]},
    )
    ended_ = ended(uploads_api, alice, created["id"])

    assert ended_["status"] == "SUCCEEDED", ended_
    refused = by_file(uploads_api, alice, created["id"])["big.log"]
    assert refused["status"] == "FAILED" and refused["error"]["type"] == "sha256_mismatch"

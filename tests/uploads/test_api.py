"""Uploads straight to S3 through the embedded AWS: real HTTP PUTs to the presigned URLs."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import httpx
import pytest

from app.uploads.dependencies import get_clock
from app.uploads.layout import object_key
from tests.support.stack import Aws
from tests.uploads.conftest import MIB, User

PROBLEM = "application/problem+json"


def declare(api: Any, user: User, *files: dict[str, Any]) -> list[dict[str, Any]]:
    answer = api.post("/uploads", json={"files": list(files)}, headers=user[1])
    assert answer.status_code == 201, answer.text
    assert answer.headers["cache-control"] == "no-store"
    tickets: list[dict[str, Any]] = answer.json()["uploads"]
    return tickets


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def state(api: Any, user: User, upload_id: str) -> str:
    answer = api.get(f"/uploads/{upload_id}", headers=user[1])
    assert answer.status_code == 200, answer.text
    return str(answer.json()["state"])


def problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    body: dict[str, Any] = answer.json()
    return body


def test_a_single_put_with_its_sha256_is_confirmed_by_the_next_read(uploads_api: Any, alice: User) -> None:
    data = b"first line\nsecond line\n"
    (ticket,) = declare(uploads_api, alice, {"name": "notes.txt", "size": len(data), "sha256": sha256(data)})
    assert (ticket["kind"], ticket["method"], ticket["name"], ticket["size"]) == (
        "single",
        "PUT",
        "notes.txt",
        len(data),
    )
    assert state(uploads_api, alice, ticket["upload_id"]) == "pending"

    put = httpx.put(ticket["url"], content=data, headers=ticket["headers"])

    assert put.status_code == 200, put.text
    shown = uploads_api.get(f"/uploads/{ticket['upload_id']}", headers=alice[1]).json()
    assert (shown["state"], shown["kind"], shown["sha256"]) == ("uploaded", "single", sha256(data))
    assert shown["uploaded_at"] is not None
    again = uploads_api.post(f"/uploads/{ticket['upload_id']}/complete", headers=alice[1])  # a PUT needs none: 200
    assert (again.status_code, again.json()["state"]) == (200, "uploaded")


def test_a_multipart_upload_goes_through_its_part_urls_and_completes_once(
    uploads_api: Any, alice: User, aws: Aws
) -> None:
    data = b"0123456789abcdef\n" * (5 * MIB // 17 + 40)  # just over one 5 MiB part
    (ticket,) = declare(uploads_api, alice, {"name": "big.log", "size": len(data)})
    assert ticket["kind"] == "multipart" and ticket["part_size"] == 5 * MIB
    assert [(p["number"], p["size"]) for p in ticket["parts"]] == [(1, 5 * MIB), (2, len(data) - 5 * MIB)]

    etags, offset = [], 0
    for part in ticket["parts"]:
        put = httpx.put(part["url"], content=data[offset : offset + part["size"]])
        assert put.status_code == 200, put.text
        etags.append({"number": part["number"], "etag": put.headers["etag"]})
        offset += part["size"]
    assert state(uploads_api, alice, ticket["upload_id"]) == "pending"  # nothing joined yet
    done = uploads_api.post(ticket["complete_url"], json={"parts": etags}, headers=alice[1])

    assert (done.status_code, done.json()["state"]) == (200, "uploaded"), done.text
    key = object_key(alice[0], ticket["upload_id"])
    s3, bucket = aws.client("s3"), uploads_api.app.state.settings.bucket
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"] == [{"Key": "upload", "Value": "pending"}]
    replay = uploads_api.post(ticket["complete_url"], json={"parts": etags}, headers=alice[1])
    assert (replay.status_code, replay.json()["state"]) == (200, "uploaded")


def test_another_users_upload_is_not_found(uploads_api: Any, alice: User, bob: User) -> None:
    (ticket,) = declare(uploads_api, alice, {"name": "mine.txt", "size": 10})

    for answer in (
        uploads_api.get(f"/uploads/{ticket['upload_id']}", headers=bob[1]),
        uploads_api.post(f"/uploads/{ticket['upload_id']}/complete", headers=bob[1]),
    ):
        body = problem(answer, 404)
        assert (body["field"], body["upload_id"]) == ("upload_id", ticket["upload_id"])
    assert state(uploads_api, alice, ticket["upload_id"]) == "pending"


def test_an_expired_upload_reads_as_expired_and_cannot_be_completed(
    uploads_api: Any, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"too late\n"
    (ticket,) = declare(uploads_api, alice, {"name": "late.txt", "size": len(data)})
    assert httpx.put(ticket["url"], content=data, headers=ticket["headers"]).status_code == 200
    later = time.time() + uploads_api.app.state.settings.upload_ttl_seconds
    monkeypatch.setitem(uploads_api.app.dependency_overrides, get_clock, lambda: lambda: later)

    assert state(uploads_api, alice, ticket["upload_id"]) == "expired"
    body = problem(uploads_api.post(f"/uploads/{ticket['upload_id']}/complete", headers=alice[1]), 410)
    assert (body["upload_id"], body["expired_at"]) == (ticket["upload_id"], ticket["expires_at"])


def test_bytes_other_than_the_declared_sha256_are_refused_by_s3(uploads_api: Any, alice: User) -> None:
    data = b"the declared bytes\n"
    (ticket,) = declare(uploads_api, alice, {"name": "signed.txt", "size": len(data), "sha256": sha256(data)})

    forged = httpx.put(ticket["url"], content=b"other bytes, same size", headers=ticket["headers"])

    assert forged.status_code == 400 and "<Code>BadDigest</Code>" in forged.text
    assert state(uploads_api, alice, ticket["upload_id"]) == "pending"  # nothing was stored
    assert httpx.put(ticket["url"], content=data, headers=ticket["headers"]).status_code == 200
    assert state(uploads_api, alice, ticket["upload_id"]) == "uploaded"


def test_an_object_of_another_size_or_hash_than_declared_is_422_naming_the_upload(
    uploads_api: Any, alice: User, aws: Aws
) -> None:
    data = b"twenty-one bytes....\n"
    short, unchecked = declare(
        uploads_api,
        alice,
        {"name": "short.txt", "size": len(data)},
        {"name": "unchecked.txt", "size": len(data), "sha256": sha256(data)},
    )
    # The embedded AWS does not check the signed Content-Length (S3 would refuse the PUT): the API does.
    assert httpx.put(short["url"], content=data[:-5], headers=short["headers"]).status_code == 200
    # An object written without the checksum the URL requires (no presigned PUT of S3 can do it).
    bucket = uploads_api.app.state.settings.bucket
    aws.client("s3").put_object(Bucket=bucket, Key=object_key(alice[0], unchecked["upload_id"]), Body=data)

    for answer in (
        uploads_api.get(f"/uploads/{short['upload_id']}", headers=alice[1]),
        uploads_api.post(f"/uploads/{short['upload_id']}/complete", headers=alice[1]),
    ):
        body = problem(answer, 422)
        assert (body["upload_id"], body["field"], body["declared_size"], body["stored_size"]) == (
            short["upload_id"],
            "size",
            len(data),
            len(data) - 5,
        )
    body = problem(uploads_api.get(f"/uploads/{unchecked['upload_id']}", headers=alice[1]), 422)
    assert (body["upload_id"], body["field"], body["file"]) == (unchecked["upload_id"], "sha256", "unchecked.txt")


def test_a_multipart_upload_with_a_short_part_or_a_wrong_etag_is_422(uploads_api: Any, alice: User) -> None:
    data = b"x" * (5 * MIB + 10)
    (ticket,) = declare(uploads_api, alice, {"name": "parts.txt", "size": len(data)})
    first, last = ticket["parts"]
    one = httpx.put(first["url"], content=data[: first["size"]]).headers["etag"]
    two = httpx.put(last["url"], content=b"x" * 4).headers["etag"]  # 10 declared

    wrong = uploads_api.post(
        ticket["complete_url"],
        json={"parts": [{"number": 1, "etag": one}, {"number": 2, "etag": '"0"'}]},
        headers=alice[1],
    )
    body = problem(wrong, 422)
    assert (body["field"], body["upload_id"], body["aws_error"]) == ("parts", ticket["upload_id"], "InvalidPart")
    missing = uploads_api.post(ticket["complete_url"], json={"parts": [{"number": 1, "etag": one}]}, headers=alice[1])
    assert problem(missing, 422)["field"] == "parts"
    short = uploads_api.post(
        ticket["complete_url"],
        json={"parts": [{"number": 1, "etag": one}, {"number": 2, "etag": two}]},
        headers=alice[1],
    )
    body = problem(short, 422)
    assert (body["field"], body["declared_size"], body["stored_size"]) == ("size", len(data), 5 * MIB + 4)


def test_a_file_over_max_upload_bytes_is_413_naming_the_limit_and_nothing_is_made(
    uploads_api: Any, alice: User, aws: Aws
) -> None:
    settings = uploads_api.app.state.settings
    limit = settings.max_upload_bytes
    files = [{"name": "small.txt", "size": 10}, {"name": "large.txt", "size": limit + 1}]

    body = problem(uploads_api.post("/uploads", json={"files": files}, headers=alice[1]), 413)
    assert (body["limit"], body["limit_value"], body["field"], body["file"]) == (
        "max_upload_bytes",
        limit,
        "files[1].size",
        "large.txt",
    )
    too_many = [files[0]] * (settings.max_files + 1)
    body = problem(uploads_api.post("/uploads", json={"files": too_many}, headers=alice[1]), 413)
    assert (body["limit"], body["limit_value"], body["field"]) == ("max_files", settings.max_files, "files")
    records = aws.client("dynamodb").scan(
        TableName=settings.table("uploads"),
        FilterExpression="#o = :o",
        ExpressionAttributeNames={"#o": "owner"},
        ExpressionAttributeValues={":o": {"S": alice[0]}},
    )
    assert records["Count"] == 0
    prefix = object_key(alice[0], "")
    assert aws.client("s3").list_multipart_uploads(Bucket=settings.bucket, Prefix=prefix).get("Uploads", []) == []


def test_names_are_checked_as_inline_file_names(uploads_api: Any) -> None:
    bidi = problem(uploads_api.post("/uploads", json={"files": [{"name": "a\u202etxt.exe", "size": 3}]}), 422)
    assert bidi["field"] == "files[0].name"
    path = problem(uploads_api.post("/uploads", json={"files": [{"name": "../etc/passwd", "size": 3}]}), 422)
    assert path["field"] == "files[0].name"
    binary = problem(uploads_api.post("/uploads", json={"files": [{"name": "photo.png", "size": 3}]}), 415)
    assert (binary["field"], binary["file"]) == ("files[0].name", "photo.png")

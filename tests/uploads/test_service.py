"""`UploadService`'s rules over in-memory fakes of the table and S3 (tests/uploads/fakes.py)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from app.errors import AppError, Conflict, Gone, NotFound, Unprocessable
from app.identity.principal import Principal
from app.uploads.records import CompletedUpload, Declaration, UploadState
from app.uploads.service import Issued, UploadService
from tests.support.stack import settings_of
from tests.uploads.fakes import FakeObjects, FakeRecords

MIB = 1024 * 1024
ALICE, BOB = Principal("alice", "user"), Principal("bob", "user")
T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def records() -> FakeRecords:
    return FakeRecords()


@pytest.fixture
def objects() -> FakeObjects:
    return FakeObjects()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(records: FakeRecords, objects: FakeObjects, clock: Clock) -> UploadService:
    settings = settings_of(upload_multipart_threshold_bytes=8 * MIB, upload_part_bytes=5 * MIB, upload_ttl_seconds=600)
    return UploadService(records, objects, settings, clock)


def create(service: UploadService, *files: Declaration, principal: Principal = ALICE) -> list[Issued]:
    return run(service.create(principal, list(files)))


def test_a_file_up_to_the_threshold_is_one_put_and_a_larger_one_a_url_per_part(
    service: UploadService, records: FakeRecords, objects: FakeObjects, clock: Clock
) -> None:
    small, large = create(service, Declaration("a.txt", 8 * MIB, "ab" * 32), Declaration("b.log", 8 * MIB + 1))

    assert small.put is not None and small.put.headers == {
        "x-amz-checksum-sha256": "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s="
    }
    assert small.parts == () and not small.upload.multipart
    assert large.put is None and [(p.number, p.size) for p in large.parts] == [(1, 5 * MIB), (2, 3 * MIB + 1)]
    assert set(objects.multiparts) == {large.upload.multipart_id}
    assert set(records.items) == {small.upload.upload_id, large.upload.upload_id}
    assert {u.expires_at for u in records.items.values()} == {int(clock.now) + 600}
    assert {u.state for u in records.items.values()} == {UploadState.PENDING}


def test_a_write_that_fails_aborts_the_multipart_uploads_it_started(
    service: UploadService, records: FakeRecords, objects: FakeObjects
) -> None:
    records.failure = RuntimeError("DynamoDB refused")

    with pytest.raises(RuntimeError):
        create(service, Declaration("a.log", 9 * MIB), Declaration("b.log", 9 * MIB))

    assert len(objects.aborted) == 2 and objects.multiparts == {}
    assert records.items == {}


def test_a_multipart_upload_that_cannot_start_leaves_none_of_the_others(
    service: UploadService, records: FakeRecords, objects: FakeObjects
) -> None:
    objects.fail_start = 2

    with pytest.raises(RuntimeError):
        create(service, Declaration("a.log", 9 * MIB), Declaration("b.log", 9 * MIB), Declaration("c.log", 9 * MIB))

    assert objects.multiparts == {} and len(objects.aborted) == 2
    assert records.items == {}


def test_completing_joins_the_parts_once_and_a_lost_answer_is_recovered(
    service: UploadService, records: FakeRecords, objects: FakeObjects
) -> None:
    (issued,) = create(service, Declaration("big.log", 9 * MIB))
    upload = issued.upload
    assert upload.multipart_id is not None
    parts = [(n, objects.put_part(upload.multipart_id, n, b"x" * p.size)) for n, p in enumerate(issued.parts, 1)]
    # S3 completed it, but the answer never reached the API: the record is still pending.
    run(objects.complete_multipart(upload.key, upload.multipart_id, parts))

    done = run(service.complete(ALICE, upload.upload_id, parts))

    assert done.state is UploadState.UPLOADED and done.etag == objects.objects[upload.key].etag
    assert run(service.complete(ALICE, upload.upload_id, parts)) == done  # a replay answers it again


def test_completing_an_aborted_multipart_upload_is_409(service: UploadService, objects: FakeObjects) -> None:
    (issued,) = create(service, Declaration("big.log", 9 * MIB))
    assert issued.upload.multipart_id is not None
    run(objects.abort_multipart(issued.upload.key, issued.upload.multipart_id))

    with pytest.raises(Conflict) as refused:
        run(service.complete(ALICE, issued.upload.upload_id, [(1, "a"), (2, "b")]))

    assert refused.value.extra["upload_id"] == issued.upload.upload_id


def test_parts_listed_out_of_order_or_incomplete_are_422_before_s3_is_asked(service: UploadService) -> None:
    (issued,) = create(service, Declaration("big.log", 9 * MIB))

    for parts in ([], [(1, "a")], [(2, "b"), (1, "a")], [(1, "a"), (2, "b"), (3, "c")]):
        with pytest.raises(Unprocessable) as refused:
            run(service.complete(ALICE, issued.upload.upload_id, parts))
        assert refused.value.extra["field"] == "parts"


def test_completed_answers_what_a_validation_reads_in_the_order_asked(
    service: UploadService, objects: FakeObjects
) -> None:
    data = b"line\n" * 10
    digest = hashlib.sha256(data).hexdigest()
    single, multi = create(
        service, Declaration("one.txt", len(data), digest), Declaration("two.log", 9 * MIB, "3c" * 32)
    )
    objects.put(single.upload.key, data)
    assert multi.upload.multipart_id is not None
    parts = [(n, objects.put_part(multi.upload.multipart_id, n, b"y" * p.size)) for n, p in enumerate(multi.parts, 1)]
    run(service.complete(ALICE, multi.upload.upload_id, parts))

    ready = run(service.completed(ALICE, [multi.upload.upload_id, single.upload.upload_id]))

    stored = objects.objects
    assert ready == [
        # S3 checks a multipart upload's parts only: the declared SHA-256 is left to the reader.
        CompletedUpload(
            multi.upload.upload_id,
            "two.log",
            9 * MIB,
            multi.upload.key,
            stored[multi.upload.key].etag,
            "3c" * 32,
            False,
        ),
        CompletedUpload(
            single.upload.upload_id,
            "one.txt",
            len(data),
            single.upload.key,
            stored[single.upload.key].etag,
            digest,
            True,
        ),
    ]


@pytest.mark.parametrize(
    ("case", "error", "field"),
    [
        ("unknown", NotFound, "uploads[1]"),
        ("another user's", NotFound, "uploads[1]"),
        ("expired", Gone, "uploads[1]"),
        ("not uploaded", Conflict, "uploads[1]"),
        ("multipart not completed", Conflict, "uploads[1]"),
        ("wrong size", Unprocessable, "uploads[1]"),
        ("listed twice", Unprocessable, "uploads"),
    ],
)
def test_completed_refuses_the_whole_list_naming_the_upload_at_fault(
    service: UploadService, objects: FakeObjects, clock: Clock, case: str, error: type[AppError], field: str
) -> None:
    data = b"fine\n"
    owner = BOB if case == "another user's" else ALICE
    size = 9 * MIB if case == "multipart not completed" else len(data)
    (bad,) = create(service, Declaration("bad.txt", size), principal=owner)
    if case == "wrong size":
        objects.put(bad.upload.key, data + b"more")
    elif case == "expired":
        objects.put(bad.upload.key, data)
        clock.now += 600
    (good,) = create(service, Declaration("good.txt", len(data)))
    objects.put(good.upload.key, data)
    ids = {
        "unknown": [good.upload.upload_id, "nope"],
        "listed twice": [good.upload.upload_id, good.upload.upload_id],
    }.get(case, [good.upload.upload_id, bad.upload.upload_id])

    with pytest.raises(error) as refused:
        run(service.completed(ALICE, ids))

    assert refused.value.extra["field"] == field
    assert refused.value.extra["upload_id"] == ids[1]


def test_an_expired_upload_reads_as_expired_and_refuses_to_complete(service: UploadService, clock: Clock) -> None:
    (issued,) = create(service, Declaration("late.txt", 4))
    clock.now += 599
    assert run(service.get(ALICE, issued.upload.upload_id)).state is UploadState.PENDING
    clock.now += 1

    assert run(service.get(ALICE, issued.upload.upload_id)).state is UploadState.EXPIRED
    with pytest.raises(Gone):
        run(service.complete(ALICE, issued.upload.upload_id, []))


def test_another_users_upload_is_as_unknown(service: UploadService) -> None:
    (issued,) = create(service, Declaration("mine.txt", 4))

    with pytest.raises(NotFound) as read:
        run(service.get(BOB, issued.upload.upload_id))
    with pytest.raises(NotFound) as unknown:
        run(service.get(BOB, "unknown"))

    assert read.value.detail.replace(issued.upload.upload_id, "?") == unknown.value.detail.replace("unknown", "?")

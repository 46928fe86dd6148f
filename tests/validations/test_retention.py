"""Retention and deletion: every record expires (DynamoDB TTL) with its validation's uploads;
`DELETE /validations/{id}/data` purges an ended validation's data and keeps a tombstone."""

from __future__ import annotations

import time
from typing import Any

from app.settings import Settings
from core import tallies
from tests.support.stack import Aws, HeldCalls, MakeApi, make_user, wait_for, wait_for_status

DOC = {"documents": [{"name": "a.txt", "content": "row 1\nrow 2\n"}], "rules": ["be tidy"]}


def _query(aws: Aws, table: str, validation_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = aws.client("dynamodb").query(
        TableName=table,
        KeyConditionExpression="validation_id = :v",
        ExpressionAttributeValues={":v": {"S": validation_id}},
    )["Items"]
    return items


def test_every_record_of_a_validation_expires_with_its_uploads(make_api: MakeApi, aws: Aws, settings: Settings) -> None:
    api = make_api(retention_days=7, audit_retention_days=90)
    make_user(api)  # an audit entry
    created = time.time()
    validation_id = api.post("/validations", json=DOC).json()["id"]
    wait_for_status(api, validation_id)
    db = aws.client("dynamodb")
    for table in ("validations", "parts", "events", "audit"):
        ttl = db.describe_time_to_live(TableName=settings.table(table))["TimeToLiveDescription"]
        assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at"), table
    week = created + 7 * 86_400
    record = db.get_item(TableName=settings.table("validations"), Key={"id": {"S": validation_id}})["Item"]
    items = [record, *_query(aws, settings.table("parts"), validation_id)]
    items += _query(aws, settings.table("events"), validation_id)
    assert len(items) >= 3
    for item in items:
        assert abs(int(item["expires_at"]["N"]) - week) < 120, item
    audit = db.scan(TableName=settings.table("audit"))["Items"]
    assert audit and all(abs(int(i["expires_at"]["N"]) - (created + 90 * 86_400)) < 120 for i in audit)


def test_deleting_a_validations_data_keeps_a_tombstone_and_answers_410_after(
    make_api: MakeApi, aws: Aws, settings: Settings, hold_calls: Any
) -> None:
    api = make_api()
    _, auth = make_user(api)
    _, stranger = make_user(api)
    held: HeldCalls = hold_calls(0)
    validation_id = api.post("/validations", json=DOC, headers=auth).json()["id"]
    wait_for(lambda: held.waiting >= 1, timeout=60, what="the validation mid-call")
    running = api.delete(f"/validations/{validation_id}/data", headers=auth)
    assert running.status_code == 409 and running.json()["status_value"] == "RUNNING", running.text
    held.release()
    assert wait_for_status(api, validation_id)["status"] == "SUCCEEDED"
    assert api.delete(f"/validations/{validation_id}/data", headers=stranger).status_code == 404

    purged = api.delete(f"/validations/{validation_id}/data", headers=auth)
    assert purged.status_code == 200, purged.text
    tombstone = purged.json()
    assert tombstone["status"] == "SUCCEEDED" and tombstone["purged_at"] and tombstone["files"] == []
    assert tombstone["progress"]["succeeded"] == 1 and tombstone["usage"]["model_calls"] == 1
    for path in (f"/validations/{validation_id}/results", f"/validations/{validation_id}/retry"):
        call = api.get if path.endswith("results") else api.post
        gone = call(path, headers=auth)
        assert gone.status_code == 410 and gone.headers["content-type"] == "application/problem+json", path
    # What stays in the parts table is the tombstone's counts (core/tallies.py): no text, no verdict.
    left = _query(aws, settings.table("parts"), validation_id)
    assert left and all(i["part_id"]["S"].startswith("tally~") for i in left), left
    kept = {"validation_id", "part_id", "expires_at", "served_model", *tallies.COUNTERS}
    assert all(name in kept or name.startswith("settled_") for i in left for name in i), left
    assert _query(aws, settings.table("events"), validation_id) == []
    listed = aws.client("s3").list_objects_v2(Bucket=settings.bucket, Prefix=f"validations/{validation_id}/")
    assert listed.get("KeyCount", 0) == 0
    again = api.delete(f"/validations/{validation_id}/data", headers=auth)
    assert again.status_code == 200 and again.json()["purged_at"] == tombstone["purged_at"]
    actions = [e["action"] for e in api.get("/admin/audit").json()["items"]]
    assert actions.count("validation.purge") == 2


def test_retry_after_the_uploads_expired_answers_410_naming_the_files(
    make_api: MakeApi, aws: Aws, settings: Settings, hold_calls: Any
) -> None:
    api = make_api()
    held: HeldCalls = hold_calls(0)
    validation_id = api.post("/validations", json=DOC).json()["id"]
    wait_for(lambda: held.waiting >= 1, timeout=60, what="the validation mid-call")
    assert api.delete(f"/validations/{validation_id}").json()["status"] in ("CANCELLING", "CANCELLED")
    held.release()
    wait_for_status(api, validation_id, ("CANCELLED",))
    s3 = aws.client("s3")
    for item in s3.list_objects_v2(Bucket=settings.bucket, Prefix=f"validations/{validation_id}/")["Contents"]:
        s3.delete_object(Bucket=settings.bucket, Key=item["Key"])  # as the bucket's lifecycle would
    answer = api.post(f"/validations/{validation_id}/retry")
    assert answer.status_code == 410, answer.text
    assert answer.json()["field"] == "files" and answer.json()["limit"] == "retention_days"
    assert api.get(f"/validations/{validation_id}").json()["status"] == "CANCELLED"  # nothing changed

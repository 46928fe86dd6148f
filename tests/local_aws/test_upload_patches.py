"""Guards for local/aws/upload_patches.py: each fails if its moto defect comes back.

What is sent is what a plain HTTP client sends to a presigned URL: the body and the headers the
URL was signed with, nothing of an SDK."""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from local.aws import upload_patches
from tests.support.stack import REGION, Aws


@pytest.fixture(scope="module")
def s3(aws: Aws) -> Any:
    upload_patches.apply()  # the embedded AWS of this process, patched (a no-op if it was already)
    return boto3.client(
        "s3",
        endpoint_url=aws.endpoint_url,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(signature_version="s3v4"),  # what signs the checksum header into the URL
    )


@pytest.fixture(scope="module")
def bucket(s3: Any) -> str:
    name = f"patches-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    return name


def sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_a_presigned_put_of_other_bytes_than_its_sha256_is_refused_and_stores_nothing(s3: Any, bucket: str) -> None:
    declared = sha256(b"declared bytes")
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "forged", "ChecksumSHA256": declared}
    )

    answer = httpx.put(url, content=b"other bytes!!!", headers={"x-amz-checksum-sha256": declared})

    assert answer.status_code == 400
    assert "<Code>BadDigest</Code>" in answer.text
    with pytest.raises(ClientError) as missing:
        s3.head_object(Bucket=bucket, Key="forged")
    assert missing.value.response["Error"]["Code"] == "404"


def test_a_presigned_put_keeps_its_sha256_for_head_object(s3: Any, bucket: str) -> None:
    data = b"the bytes as declared\n"
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "kept", "ChecksumSHA256": sha256(data)}
    )

    answer = httpx.put(url, content=data, headers={"x-amz-checksum-sha256": sha256(data)})

    assert answer.status_code == 200
    assert answer.headers["x-amz-checksum-sha256"] == sha256(data)
    assert s3.head_object(Bucket=bucket, Key="kept", ChecksumMode="ENABLED")["ChecksumSHA256"] == sha256(data)


def test_a_part_of_other_bytes_than_its_sha256_is_refused(s3: Any, bucket: str) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key="parts")["UploadId"]
    url = s3.generate_presigned_url(
        "upload_part", Params={"Bucket": bucket, "Key": "parts", "UploadId": upload, "PartNumber": 1}
    )

    answer = httpx.put(url, content=b"part bytes", headers={"x-amz-checksum-sha256": sha256(b"other")})

    assert answer.status_code == 400 and "<Code>BadDigest</Code>" in answer.text
    assert s3.list_parts(Bucket=bucket, Key="parts", UploadId=upload).get("Parts", []) == []


def test_parts_and_complete_of_an_upload_s3_no_longer_knows_are_404_no_such_upload(s3: Any, bucket: str) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key="gone")["UploadId"]
    s3.abort_multipart_upload(Bucket=bucket, Key="gone", UploadId=upload)
    url = s3.generate_presigned_url(
        "upload_part", Params={"Bucket": bucket, "Key": "gone", "UploadId": upload, "PartNumber": 1}
    )

    part = httpx.put(url, content=b"late part")
    with pytest.raises(ClientError) as complete:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="gone", UploadId=upload, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"0"'}]}
        )

    assert part.status_code == 404 and "<Code>NoSuchUpload</Code>" in part.text
    assert complete.value.response["Error"]["Code"] == "NoSuchUpload"
    assert complete.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_a_lifecycle_rule_on_a_prefix_and_a_tag_reads_back_as_put(s3: Any, bucket: str) -> None:
    rule = {
        "ID": "expire-unused-uploads",
        "Status": "Enabled",
        "Filter": {
            "And": {"Prefix": "uploads/", "Tags": [{"Key": "upload", "Value": "pending"}], "ObjectSizeGreaterThan": 0}
        },
        "Expiration": {"Days": 1},
    }
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [rule]})

    (stored,) = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]

    assert stored["Filter"] == rule["Filter"]  # what Terraform's provider waits to read back

"""Quota check cost: the token-bucket admission against a raw DynamoDB UpdateItem on the
same endpoint, and admission throughput with 1, 8 and 32 concurrent writers on one bucket.

Baseline: `UpdateItem ADD n :1` on one item (the cheapest write there is). Ours: the
admission a submission makes (queue-head query skipped under `reject`; one
TransactWriteItems: GCRA bucket update + the validation's QUEUED → RUNNING), measured
with a bucket large enough never to refuse, so every call does the full work.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3

from bench import local_settings
from core.clock import now_iso
from core.quota import Admission, Quota, admission_steps
from lambdas.common.config import config_from_environ
from lambdas.common.stores import Store
from lambdas.common.stores.base import Clients
from local.aws.provision import Provisioner
from local.aws.server import EmbeddedAWS

CALLS = 300
QUOTA = Quota(capacity_tokens=10**12, refill_tokens_per_minute=10**12, max_running=10**9)


def clients(endpoint: str) -> tuple[Any, Any]:
    kwargs = {
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "b",
        "aws_secret_access_key": "b",
    }
    return boto3.resource("dynamodb", **kwargs), boto3.client("dynamodb", **kwargs)


def main() -> None:
    with EmbeddedAWS() as aws:
        settings = local_settings(
            name_prefix=f"qb{uuid.uuid4().hex[:6]}", admin_api_key="b", openai_base_url="http://unused/v1"
        )
        Provisioner(settings, aws.endpoint_url).run()
        config = config_from_environ(Provisioner(settings, aws.endpoint_url).function_environment())
        resource, client = clients(aws.endpoint_url)
        client.put_item(
            TableName=settings.table("buckets"),
            Item={"user_id": {"S": "bench"}, "tat": {"N": "0"}, "running": {"N": "0"}},
        )
        table = resource.Table(settings.table("validations"))

        def prepare(n: int) -> list[str]:
            ids = [uuid.uuid4().hex for _ in range(n)]
            with table.batch_writer() as batch:
                for vid in ids:
                    batch.put_item(
                        Item={
                            "id": vid,
                            "owner": "bench",
                            "status": "QUEUED",
                            "run": 1,
                            "queue_key": vid,
                            "run_cost": 100,
                            "created_at": vid,
                        }
                    )
            return ids

        def raw_update(_: object) -> float:
            started = time.perf_counter()
            client.update_item(
                TableName=settings.table("buckets"),
                Key={"user_id": {"S": "counter"}},
                UpdateExpression="ADD n :one",
                ExpressionAttributeValues={":one": {"N": "1"}},
            )
            return time.perf_counter() - started

        def admit(store: Store, vid: str) -> float:
            admission = Admission(
                settings.table("validations"),
                settings.table("buckets"),
                vid,
                "bench",
                vid,
                1,
                100,
                0,
                QUOTA,
                fifo=False,
            )
            started = time.perf_counter()
            outcome = store.drive(admission_steps(admission, time.time(), now_iso()))
            elapsed = time.perf_counter() - started
            assert outcome.admitted, outcome
            return elapsed

        store = Store.of(Clients(config, resource, None, client))
        for _ in range(20):  # warm both paths
            raw_update(None)
        raw = [raw_update(None) for _ in range(CALLS)]
        ours = [admit(store, vid) for vid in prepare(CALLS)]

        local = threading.local()

        def thread_store() -> Store:
            if not hasattr(local, "store"):  # boto3 resources are per thread
                thread_resource, thread_client = clients(aws.endpoint_url)
                local.store = Store.of(Clients(config, thread_resource, None, thread_client))
            store: Store = local.store
            return store

        throughput: dict[int, float] = {}
        raw_throughput: dict[int, float] = {}
        for writers in (1, 8, 32):
            ids = prepare(CALLS)
            with ThreadPoolExecutor(writers) as pool:
                list(pool.map(lambda _: thread_store(), range(writers * 4)))  # clients built before timing
                started = time.perf_counter()
                list(pool.map(lambda vid: admit(thread_store(), vid), ids))
            throughput[writers] = CALLS / (time.perf_counter() - started)
            started = time.perf_counter()
            with ThreadPoolExecutor(writers) as pool:
                list(pool.map(raw_update, range(CALLS)))
            raw_throughput[writers] = CALLS / (time.perf_counter() - started)

    p50_raw, p50_ours = statistics.median(raw), statistics.median(ours)
    print("\n## Quota check (`bench/quotas.py`), embedded DynamoDB, one bucket")
    print("| measure | raw UpdateItem | quota admission | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| latency p50, 1 writer | {p50_raw * 1000:.1f} ms | {p50_ours * 1000:.1f} ms | {p50_ours / p50_raw:.2f} |")
    for writers in (1, 8, 32):
        ours_rate, raw_rate = throughput[writers], raw_throughput[writers]
        print(f"| throughput, {writers} writers | {raw_rate:.0f}/s | {ours_rate:.0f}/s | {ours_rate / raw_rate:.2f} |")


if __name__ == "__main__":
    main()

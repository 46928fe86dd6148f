"""API throughput: `POST /validations` and `GET /validations/{id}` against a bare Starlette
endpoint returning the same JSON, served the same way (uvicorn, loopback) in the same run.

The ratio says what our stack (auth, intake, splitting, S3/DynamoDB writes, StartExecution
for POST; a consistent DynamoDB read for GET) costs compared with serving the bytes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.main import create_app
from bench import local_settings
from local.aws.server import EmbeddedAWS
from local.serving import ThreadedServer
from local.simulator.app import SimulatorConfig
from local.simulator.server import SimulatorServer

CONCURRENCY = 8
POSTS = 120
GETS = 600
HEADERS = {"Authorization": "Bearer bench"}
BODY = {"documents": [{"name": "a.csv", "content": "id,amount\n1,10\n2,20\n"}], "rules": ["amounts are positive"]}


async def drive(base: str, method: str, path: str, count: int, json: Any = None) -> float:
    """Requests per second for `count` requests, CONCURRENCY at a time."""
    async with httpx.AsyncClient(base_url=base, headers=HEADERS, timeout=60) as client:
        queue = iter(range(count))

        async def worker() -> None:
            for _ in queue:
                answer = await client.request(method, path, json=json)
                assert answer.status_code < 300, answer.text

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return count / (time.perf_counter() - started)


def wait_until_idle(base: str) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        page = httpx.get(f"{base}/validations", params={"limit": 100}, headers=HEADERS).json()
        if all(v["status"] != "RUNNING" for v in page["items"]):
            return
        time.sleep(0.5)
    raise RuntimeError("validations still running after 300 s")


def bare_app(post_json: dict[str, Any], get_json: dict[str, Any]) -> Starlette:
    async def post(request: Any) -> JSONResponse:
        await request.body()
        return JSONResponse(post_json, status_code=202)

    async def get(request: Any) -> JSONResponse:
        return JSONResponse(get_json)

    return Starlette(routes=[Route("/validations", post, methods=["POST"]), Route("/validations/{id}", get)])


def main() -> None:
    with EmbeddedAWS() as aws, SimulatorServer(SimulatorConfig(latency_seconds=0.0)) as simulator:
        settings = local_settings(
            aws_endpoint_url=aws.endpoint_url,
            name_prefix=f"bench{uuid.uuid4().hex[:6]}",
            admin_api_key="bench",
            openai_base_url=simulator.base_url,
        )
        api = ThreadedServer(create_app(settings), lifespan="on").start()
        try:
            first = httpx.post(f"{api.url}/validations", json=BODY, headers=HEADERS).json()
            shown = httpx.get(f"{api.url}/validations/{first['id']}", headers=HEADERS).json()
            bare = ThreadedServer(bare_app(first, shown)).start()
            try:
                rows = []
                baseline = asyncio.run(drive(bare.url, "POST", "/validations", POSTS, BODY))
                ours = asyncio.run(drive(api.url, "POST", "/validations", POSTS, BODY))
                rows.append(("POST /validations", ours, baseline))
                wait_until_idle(api.url)  # the executions just started would load the GET runs
                baseline = asyncio.run(drive(bare.url, "GET", "/validations/x", GETS))
                ours = asyncio.run(drive(api.url, "GET", f"/validations/{first['id']}", GETS))
                rows.append(("GET /validations/{id}", ours, baseline))
            finally:
                bare.stop()
        finally:
            api.stop()
    print(f"\n## API throughput ({CONCURRENCY} concurrent clients, loopback, embedded AWS in-process)")
    print("POST includes the embedded engine running the executions it starts, in the same process.")
    print("| endpoint | ours req/s | bare Starlette req/s | ratio |")
    print("|---|---:|---:|---:|")
    for label, ours, baseline in rows:
        print(f"| {label} | {ours:.0f} | {baseline:.0f} | {ours / baseline:.3f} |")


if __name__ == "__main__":
    main()

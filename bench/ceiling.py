"""Where the design stops on real AWS: every AWS call of the real code per model call, and the
calls per second at which each published quota binds.

The whole stack runs locally (API, Step Functions, the validator Lambdas in-process, the
governor) against the embedded AWS and a zero-latency simulator, with fair share on and one
part per Map item: FILES one-part files split between USERS users, a validation each. Every
botocore call of the process (the Lambdas' boto3, the API's aiobotocore) is counted by
operation and, for DynamoDB, by the item it touches (table and key; a transaction's items one
by one). Step Functions' state transitions are read from the executions' histories.

Per model call, then, from the counts and published figures (each an input below):

- DynamoDB, per item: 1,000 WCU/s (a write of an item up to 1 KB is 1 WCU, inside a
  transaction 2) and 3,000 RCU/s (a strongly consistent read up to 4 KB is 1 RCU; in a
  transaction 2). The hottest item by WCU per call binds at 1,000 ÷ that.
- Step Functions Standard: state transitions refill at 1,500/s in the largest regions.
- Lambda: 1,000 concurrent executions; a call holds one for CALL_SECONDS (a ~2,400-token
  call to a small model).
- SSM GetParameter(s): 40 TPS standard throughput; the validators' reads per process and
  second, measured, times the processes a rate of calls keeps warm.
- OpenAI's top tier for a small model: 30,000 RPM and 150M TPM at the measured tokens per call.

Item sizes are not measured: every write counts as one WCU (items up to 1 KB), which
understates a validation item of several KB. Items are told apart by their whole key (a user's
fair-share account, a budget shard `budget~3`), but a validation's call slots are one row per
slot number, and the usage slices and fair-share windows of one key one row (one of them is
current at a time: it takes the writes). The governor's hottest item is reported on its own
row (a validation's call slots left out: each is one validation's): with the limits set here
(target-tpm 10^9) its budget is split over GOVERNOR_SHARDS items.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from contextlib import ExitStack
from typing import Any

from app.settings import PROJECT_ROOT
from bench import aws_client, set_parameters, stack_settings
from core import lambda_env
from local.aws.server import EmbeddedAWS
from local.simulator.app import SimulatorConfig
from local.simulator.server import SimulatorServer

FILES = 80
USERS = 2
RULES = [{"id": "no-secret", "text": 'The file must not contain "secret".'}]
CALL_SECONDS = 2.0
DEFAULT_CALL_TOKENS = 2_400  # charged tokens of a call at the default part size
MODEL_KEY_SECONDS = 300  # how long a warm process keeps the model key (lambdas/common/model_key.py)
WARM_UP = 10.0
QUOTAS = {
    "dynamodb_item_wcu": 1_000,
    "dynamodb_item_rcu": 3_000,
    "sfn_transitions": 1_500,
    "lambda_concurrency": 1_000,
    "ssm_tps": 40,
    "openai_rpm": 30_000,
    "openai_tpm": 150_000_000,
}
_WRITES = {"PutItem", "UpdateItem", "DeleteItem"}
_READS = {"GetItem"}


class Tally:
    """Every AWS call of the process: by (service, operation), and DynamoDB's by item."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: Counter[tuple[str, str]] = Counter()
        self.wcu: Counter[str] = Counter()
        self.rcu: Counter[str] = Counter()
        self.queries: Counter[str] = Counter()
        self.ssm_by_caller: Counter[str] = Counter()  # "validators …" (inside a validator or combiner), "others …"
        self.live_reads: list[float] = []  # when the validators read the live values from SSM

    def record(self, service: str, operation: str, params: dict[str, Any]) -> None:
        with self.lock:
            self.calls[(service, operation)] += 1
            if service == "ssm":
                function = lambda_env.current().get("AWS_LAMBDA_FUNCTION_NAME", "")
                per_lambda = function.endswith(("-validate-part", "-combine-file", "-control"))
                self.ssm_by_caller[f"{'validators' if per_lambda else 'others'} {operation}"] += 1
                if per_lambda and operation == "GetParameters":
                    self.live_reads.append(time.monotonic())
            if service != "dynamodb":
                return
            if operation in _WRITES:
                self.wcu[_item(params)] += 1
            elif operation in _READS:
                self.rcu[_item(params)] += 1
            elif operation == "TransactWriteItems":
                for entry in params.get("TransactItems", []):
                    for kind, request in entry.items():
                        (self.rcu if kind == "ConditionCheck" else self.wcu)[_item(request)] += 2
            elif operation == "TransactGetItems":
                for entry in params.get("TransactItems", []):
                    self.rcu[_item(entry["Get"])] += 2
            elif operation == "BatchGetItem":
                for table, request in params.get("RequestItems", {}).items():
                    for key in request.get("Keys", []):
                        self.rcu[_item({"TableName": table, "Key": key})] += 1
            elif operation in ("Query", "Scan"):
                self.queries[
                    _table(params.get("TableName", "?")) + (f"/{params['IndexName']}" if "IndexName" in params else "")
                ] += 1


def _table(name: str) -> str:
    """The logical table name (the part after the deployment's prefix)."""
    return name.split("-", 1)[1] if "-" in name else name


def _value(typed: Any) -> str:
    if isinstance(typed, dict) and len(typed) == 1:
        return str(next(iter(typed.values())))
    return str(typed)


def _key_names() -> dict[str, tuple[str, ...]]:
    """Each table's key attributes, from infra/terraform/resources.json."""
    resources = json.loads((PROJECT_ROOT / "infra" / "terraform" / "resources.json").read_text())
    return {
        name: tuple(k for k in (table["hash_key"], table["range_key"]) if k)
        for name, table in resources["tables"].items()
    }


_KEYS = _key_names()


def _item(request: dict[str, Any]) -> str:
    """`table key=value,…`, with the parts that differ per validation, part or time shown as `*`."""
    table = _table(str(request.get("TableName", "?")))
    key = request.get("Key") or {k: v for k, v in (request.get("Item") or {}).items() if k in _KEYS.get(table, ())}
    shown = []
    for name, typed in sorted(key.items()):
        value = _value(typed)
        if name == "part_id" and value.startswith(("tally~", "~")):
            pass  # one item per validation (core/tallies.py, core/detail.py): told apart
        elif name in ("validation_id", "part_id", "id", "seq"):
            value = "<validation>" if name in ("id", "validation_id") else "*"
        elif value.startswith("lease#"):  # a validation's call slots: one row per slot number
            value = "lease#*"
        elif name == "sk" and str(_value(key.get("pk", ""))).startswith(("usage", "share#")):
            value = "<current>"  # one slice or window at a time takes the writes: counted as one item
        shown.append(f"{name}={value}")
    return f"{table} {','.join(shown)}"


def install(tally: Tally, stack: ExitStack) -> None:
    """Count every call botocore and aiobotocore make from now until `stack` closes."""
    import aiobotocore.client
    import botocore.client

    sync_call = botocore.client.BaseClient._make_api_call
    async_call = aiobotocore.client.AioBaseClient._make_api_call

    def counted(self: Any, operation: str, params: dict[str, Any]) -> Any:
        tally.record(self.meta.service_model.service_name, operation, params)
        return sync_call(self, operation, params)

    async def counted_async(self: Any, operation: str, params: dict[str, Any]) -> Any:
        tally.record(self.meta.service_model.service_name, operation, params)
        return await async_call(self, operation, params)

    botocore.client.BaseClient._make_api_call = counted
    aiobotocore.client.AioBaseClient._make_api_call = counted_async

    def restore() -> None:
        botocore.client.BaseClient._make_api_call = sync_call
        aiobotocore.client.AioBaseClient._make_api_call = async_call

    stack.callback(restore)


def run() -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from app.main import create_app

    tally = Tally()
    with ExitStack() as stack:
        aws = stack.enter_context(EmbeddedAWS())
        sim = stack.enter_context(SimulatorServer(SimulatorConfig(latency_seconds=0.0, rpm=10**6, tpm=10**9)))
        settings = stack_settings(
            aws.endpoint_url, sim.base_url, "ce", map_concurrency_ceiling=min(FILES, 40), sfn_retry_max_delay_seconds=2
        )
        set_parameters(settings, {"target-tpm": 10**9, "target-rpm": 10**7, "max-parallelism": 20, "fair-share": "on"})
        api = stack.enter_context(TestClient(create_app(settings)))
        api.headers.update({"Authorization": "Bearer bench"})
        heads = []
        for n in range(USERS):
            made = api.post(
                "/admin/users",
                json={
                    "user_id": f"user{n}",
                    "quota": {"capacity_tokens": 10**8, "refill_tokens_per_minute": 10**8, "max_running": 5},
                },
            )
            heads.append({"Authorization": f"Bearer {made.json()['api_key']}"})
        install(tally, stack)
        started = time.monotonic()
        ids = []
        for n, head in enumerate(heads):
            documents = [
                {"name": f"u{n}-f{i}.txt", "content": f"row one of {n}/{i}\nrow two\n"} for i in range(FILES // USERS)
            ]
            answer = api.post(
                "/validations", json={"documents": documents, "rules": RULES, "reuse": False}, headers=head
            )
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["id"])
        ended = []
        while time.monotonic() - started < 600:
            ended = [api.get(f"/validations/{v}").json() for v in ids]
            if all(v["status"] in ("SUCCEEDED", "FAILED", "CANCELLED") for v in ended):
                break
            time.sleep(0.5)
        seconds = time.monotonic() - started
        assert [v["status"] for v in ended] == ["SUCCEEDED"] * len(ids), [v["status"] for v in ended]
        calls = sum(v["usage"]["model_calls"] for v in ended)
        tokens = sum(v["usage"]["prompt_tokens"] + v["usage"]["completion_tokens"] for v in ended)
        sfn = aws_client("stepfunctions", aws.endpoint_url)
        transitions = 0
        for v in ended:
            pages = sfn.get_paginator("get_execution_history").paginate(executionArn=_arn(sfn, settings, v["id"]))
            transitions += sum(1 for page in pages for e in page["events"] if e["type"].endswith("StateEntered"))
    return {
        "tally": tally,
        "calls": calls,
        "tokens": tokens,
        "transitions": transitions,
        "seconds": seconds,
        "started": started,
    }


def _arn(sfn: Any, settings: Any, validation_id: str) -> str:
    machines = sfn.list_state_machines()["stateMachines"]
    machine = next(m["stateMachineArn"] for m in machines if m["name"] == settings.state_machine_name)
    return f"{machine.replace(':stateMachine:', ':execution:', 1)}:{validation_id}"


def ceilings(result: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(quota, what binds it per model call, calls/s at which it binds)."""
    tally: Tally = result["tally"]
    calls = result["calls"]
    # A key with `*` stands for many items (each part, each event, each validation's slot row): shown,
    # never the one item that binds.
    hottest_w, wcu = max(((k, n) for k, n in tally.wcu.items() if "*" not in k), key=lambda kv: kv[1])
    hottest_r, rcu = max(((k, n) for k, n in tally.rcu.items() if "*" not in k), key=lambda kv: kv[1])
    # Reads made inside the validators (each warm process reads for itself) scale with the fleet;
    # the API's and the reconciler's do not (one per deployment). The model key (GetParameter) is
    # cached MODEL_KEY_SECONDS per process: counted at that steady rate, not at this short run's.
    # Steady state: the live-value reads after the first WARM_UP seconds (a new deployment's first sync
    # happens once, not at a rate).
    steady = [t for t in tally.live_reads if t >= result["started"] + WARM_UP]
    live = len(steady)
    ssm_per_process_second = live / max(1.0, result["seconds"] - WARM_UP) + (1 / MODEL_KEY_SECONDS)
    tokens_per_call = result["tokens"] / calls
    per_call_transitions = result["transitions"] / calls
    warm_per_call_rate = CALL_SECONDS  # Lambdas kept warm by one call a second
    governor_w, governor_wcu = max(
        ((item, n) for item, n in tally.wcu.items() if item.startswith("governor ") and "lease#" not in item),
        key=lambda kv: kv[1],
    )
    rows = [
        (
            "DynamoDB 1,000 WCU/s per item",
            f"{hottest_w}: {wcu / calls:.2f} WCU/call",
            QUOTAS["dynamodb_item_wcu"] / (wcu / calls),
        ),
        (
            "(the governor's hottest item)",
            f"{governor_w}: {governor_wcu / calls:.2f} WCU/call",
            QUOTAS["dynamodb_item_wcu"] / (governor_wcu / calls),
        ),
        (
            "DynamoDB 3,000 RCU/s per item",
            f"{hottest_r}: {rcu / calls:.2f} RCU/call",
            QUOTAS["dynamodb_item_rcu"] / (rcu / calls),
        ),
        (
            "Step Functions 1,500 transitions/s",
            f"{per_call_transitions:.1f} transitions/call",
            QUOTAS["sfn_transitions"] / per_call_transitions,
        ),
        ("Lambda 1,000 concurrent", f"{CALL_SECONDS:g} s/call", QUOTAS["lambda_concurrency"] / CALL_SECONDS),
        (
            "SSM 40 TPS",
            f"{ssm_per_process_second:.3f} reads/s per validator process ({live} live-value reads after "
            f"the first {WARM_UP:g} s of {result['seconds']:.0f} s; the key every {MODEL_KEY_SECONDS} s)",
            QUOTAS["ssm_tps"] / (ssm_per_process_second * warm_per_call_rate)
            if ssm_per_process_second
            else float("inf"),
        ),
        ("OpenAI 30,000 RPM", "1 request/call", QUOTAS["openai_rpm"] / 60),
        ("OpenAI 150M TPM", f"{tokens_per_call:.0f} tokens/call", QUOTAS["openai_tpm"] / 60 / tokens_per_call),
        (
            "OpenAI 150M TPM",
            f"{DEFAULT_CALL_TOKENS:,} tokens/call (default part size)",
            QUOTAS["openai_tpm"] / 60 / DEFAULT_CALL_TOKENS,
        ),
    ]
    return rows


def main() -> None:
    result = run()
    tally: Tally = result["tally"]
    calls = result["calls"]
    print(f"\n## Ceiling: {calls} model calls, {result['seconds']:.0f} s, AWS calls per model call\n")
    print("| service | operation | per call |")
    print("|---|---|---|")
    for (service, operation), n in sorted(tally.calls.items(), key=lambda kv: -kv[1]):
        print(f"| {service} | {operation} | {n / calls:.2f} |")
    print("\n| item | WCU/call | RCU/call |")
    print("|---|---|---|")
    items = set(tally.wcu) | set(tally.rcu)
    for item in sorted(items, key=lambda i: -(tally.wcu[i] + tally.rcu[i]))[:12]:
        print(f"| `{item}` | {tally.wcu[item] / calls:.2f} | {tally.rcu[item] / calls:.2f} |")
    print("\n| governor item (its hottest 12 by WCU) | WCU/call |")
    print("|---|---|")
    governor = Counter({i: n for i, n in tally.wcu.items() if i.startswith("governor ") and "lease#" not in i})
    for item, n in governor.most_common(12):
        print(f"| `{item}` | {n / calls:.2f} |")
    print("\n| SSM reads by | count |")
    print("|---|---|")
    for caller, n in sorted(tally.ssm_by_caller.items()):
        print(f"| {caller} | {n} |")
    print("\n| queried | per call |")
    print("|---|---|")
    for table, n in tally.queries.most_common(8):
        print(f"| {table} | {n / calls:.2f} |")
    print("\n| quota | per model call | binds at calls/s |")
    print("|---|---|---|")
    rows = ceilings(result)
    for quota, why, rate in rows:
        print(f"| {quota} | {why} | {rate:,.0f} |")
    binding = min(rows, key=lambda r: r[2])
    print(
        f"\nBinding first: {binding[0]} at {binding[2]:,.0f} calls/s "
        f"(goal: OpenAI's top tier binds first, at {QUOTAS['openai_rpm'] / 60:,.0f} calls/s)."
    )


if __name__ == "__main__":
    main()

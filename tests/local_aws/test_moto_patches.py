"""Guards for local/aws/moto_patches.py: each fails if its moto defect comes back."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.local_aws.handlers import probe
from tests.support.stack import Aws, wait_for


def _map_machine(aws: Aws, function_arn: str) -> str:
    return aws.map_machine(function_arn, max_concurrency=2, sleep=0.3)


def test_stop_during_map_is_aborted_not_failed_and_starts_no_iteration_after_it(aws: Aws) -> None:
    from moto.stepfunctions.parser.utils import TMP_THREADS  # every thread the interpreter starts (never pruned)

    machine = _map_machine(aws, aws.function("tests.local_aws.handlers.held"))
    name = uuid.uuid4().hex
    first_thread = len(TMP_THREADS)
    execution = aws.start(machine, {"probe": name, "items": list(range(10))})
    wait_for(lambda: probe.in_flight[name] == 2, what="two iterations in their handlers")

    aws.client("stepfunctions").stop_execution(executionArn=execution)
    # ABORTED at once, as on AWS, while the two iterations are still in their handlers.
    assert aws.client("stepfunctions").describe_execution(executionArn=execution)["status"] == "ABORTED"
    probe.release(name)  # the two iterations running at the stop return now
    result = aws.wait_until(execution)
    # Once the threads it started have ended, the execution can start nothing more.
    wait_for(lambda: not any(t.is_alive() for t in TMP_THREADS[first_thread:]), what="the interpreter's threads to end")

    assert result["status"] == "ABORTED"
    assert result.get("error") != "States.Runtime"
    assert probe.calls[name] == 2  # the two running at the stop; no iteration started after it
    events = aws.client("stepfunctions").get_execution_history(executionArn=execution, maxResults=1000)["events"]
    types = [e["type"] for e in events]
    assert "ExecutionAborted" in types  # iterations may still log their own abort after it
    assert "ExecutionFailed" not in types


def test_start_execution_without_a_name_gets_a_unique_arn(aws: Aws) -> None:
    machine = aws.state_machine({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})
    sfn = aws.client("stepfunctions")

    first = sfn.start_execution(stateMachineArn=machine, input="{}")["executionArn"]
    second = sfn.start_execution(stateMachineArn=machine, input="{}")["executionArn"]

    assert not first.endswith(":None")
    assert first != second
    uuid.UUID(first.rsplit(":", 1)[1])  # named like AWS names it


def test_task_states_reuse_one_boto_client_per_service(aws: Aws) -> None:
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
    from moto.stepfunctions.parser.asl.utils import boto_client

    assert vars(lambda_eval_utils)["boto_client_for"] is boto_client.boto_client_for  # every user rebound
    machine = _map_machine(aws, aws.function("tests.local_aws.handlers.sleepy"))
    name = uuid.uuid4().hex
    aws.wait_until(aws.start(machine, {"probe": name, "items": list(range(6))}))

    cache = vars(boto_client)["boto_client_for"].cache  # kept on the function by local/aws/moto_patches.py
    lambda_clients = [client for key, client in cache.items() if key[1] == "lambda"]
    assert probe.calls[name] == 6
    assert len(lambda_clients) == 1  # six tasks, one client
    assert lambda_clients[0].meta.config.max_pool_connections >= 40  # an inline Map's 40 tasks share its pool


def test_failed_transaction_rolls_back_per_item_without_copying_tables(aws: Aws) -> None:
    from botocore.exceptions import ClientError
    from moto.dynamodb.models import DynamoDBBackend

    db = aws.client("dynamodb")
    table = f"tx-{uuid.uuid4().hex[:8]}"
    db.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    for i in range(50):
        db.put_item(TableName=table, Item={"pk": {"S": "p"}, "sk": {"S": f"{i:03d}"}, "n": {"N": "0"}})

    with pytest.raises(ClientError) as caught:
        db.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": {"pk": {"S": "p"}, "sk": {"S": "new"}}}},
                {
                    "Update": {
                        "TableName": table,
                        "Key": {"pk": {"S": "p"}, "sk": {"S": "000"}},
                        "UpdateExpression": "SET n = :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
                {
                    "Update": {
                        "TableName": table,
                        "Key": {"pk": {"S": "p"}, "sk": {"S": "001"}},
                        "UpdateExpression": "SET n = :one",
                        "ConditionExpression": "n = :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
            ]
        )

    assert caught.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert "Item" not in db.get_item(TableName=table, Key={"pk": {"S": "p"}, "sk": {"S": "new"}})  # put undone
    assert db.get_item(TableName=table, Key={"pk": {"S": "p"}, "sk": {"S": "000"}})["Item"]["n"] == {
        "N": "0"
    }  # update undone
    assert db.scan(TableName=table, Select="COUNT")["Count"] == 50
    snapshotted = DynamoDBBackend.transact_write_items.snapshotted  # type: ignore[attr-defined]  # kept by local/aws/moto_patches.py
    assert snapshotted[-1] == 3  # the three named items, not the table


def test_moto_service_modules_are_listed_once_not_per_request(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import moto
    from moto import backends

    ssm, dynamodb = aws.client("ssm"), aws.client("dynamodb")
    ssm.describe_parameters()  # first use imports the service's modules (imports list directories)
    dynamodb.list_tables()
    moto_dir = os.path.dirname(moto.__file__)
    listings: list[str] = []
    real_listdir = os.listdir

    def listdir(path: str = ".") -> list[str]:
        listings.append(str(path))
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", listdir)

    ssm.describe_parameters()
    dynamodb.list_tables()

    assert [p for p in listings if os.path.normpath(p) == moto_dir] == []
    assert {"dynamodb", "stepfunctions", "ssm"} <= set(backends.list_of_moto_modules())


def test_concurrent_increments_of_one_item_are_all_kept(aws: Aws) -> None:
    from concurrent.futures import ThreadPoolExecutor

    table = aws.table("counter")

    def add(_: int) -> None:
        client = aws.new_client("dynamodb")
        for _ in range(40):
            client.update_item(
                TableName=table,
                Key={"pk": {"S": "c"}},
                UpdateExpression="ADD n :one",
                ExpressionAttributeValues={":one": {"N": "1"}},
            )

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(add, range(16)))

    item = aws.client("dynamodb").get_item(TableName=table, Key={"pk": {"S": "c"}})["Item"]
    assert item["n"] == {"N": "640"}


def test_concurrent_increments_each_return_their_own_new_value(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    """ReturnValues comes from the same atomic step: how event numbers are allocated."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from moto.dynamodb.models.dynamo_type import Item

    slow_json = Item.to_json

    def to_json(self: Item) -> Any:  # widen the window between the update and its serialization
        time.sleep(0.002)
        return slow_json(self)

    monkeypatch.setattr(Item, "to_json", to_json)

    table = aws.table("seq")

    def take(_: int) -> list[int]:
        client = aws.new_client("dynamodb")
        return [
            int(
                client.update_item(
                    TableName=table,
                    Key={"pk": {"S": "c"}},
                    UpdateExpression="ADD n :one",
                    ExpressionAttributeValues={":one": {"N": "1"}},
                    ReturnValues="ALL_NEW",
                )["Attributes"]["n"]["N"]
            )
            for _ in range(20)
        ]

    with ThreadPoolExecutor(8) as pool:
        numbers = [n for taken in pool.map(take, range(8)) for n in taken]

    assert sorted(numbers) == list(range(1, 161))  # no number handed out twice


def test_reads_never_see_an_item_half_created_by_an_update(aws: Aws) -> None:
    import threading

    table = aws.table("halves", range_key=True)
    done, partial, seen = threading.Event(), list[dict[str, Any]](), [0]

    def read() -> None:
        reader = aws.new_client("dynamodb")
        while not done.is_set():
            for item in reader.query(
                TableName=table, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "p"}}
            )["Items"]:
                seen[0] += 1
                if set(item) != {"pk", "sk", "a", "b", "c", "d"}:
                    partial.append(item)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for thread in readers:
        thread.start()
    writer = aws.new_client("dynamodb")
    try:
        for i in range(150):  # create with an update (as a lease claim does), then delete
            key = {"pk": {"S": "p"}, "sk": {"S": f"{i % 3}"}}
            writer.update_item(
                TableName=table,
                Key=key,
                UpdateExpression="SET a = :v, b = :v, c = :v, d = :v",
                ExpressionAttributeValues={":v": {"N": "1"}},
            )
            writer.delete_item(TableName=table, Key=key)
    finally:
        done.set()
        for thread in readers:
            thread.join()
    assert seen[0] > 0
    assert partial == []


def test_known_accounts_are_served_without_the_global_backend_lock(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from moto.core import base_backend

    class CountingLock:
        def __init__(self) -> None:
            self.inner, self.taken = threading.RLock(), 0

        def __enter__(self) -> None:
            self.taken += 1
            self.inner.acquire()

        def __exit__(self, *exc: object) -> None:
            self.inner.release()

    aws.client("dynamodb").list_tables()  # the account's backend exists from here on
    lock = CountingLock()
    monkeypatch.setattr(base_backend, "backend_lock", lock)
    for _ in range(5):
        aws.client("dynamodb").list_tables()
    assert lock.taken == 0


def test_a_parked_task_resumes_on_send_task_success_and_adds_no_history_while_waiting(aws: Aws) -> None:
    from tests.local_aws.handlers import parked_tokens

    sfn = aws.client("stepfunctions")
    name = uuid.uuid4().hex
    execution = aws.start(aws.parking_machine(), {"probe": name})
    wait_for(lambda: parked_tokens[name], what="the task's Lambda to get its token")
    wait_for(
        lambda: sfn.get_execution_history(executionArn=execution)["events"][-1]["type"] == "TaskSubmitted",
        what="the task to be parked",
    )
    parked = len(sfn.get_execution_history(executionArn=execution)["events"])
    assert sfn.describe_execution(executionArn=execution)["status"] == "RUNNING"

    sfn.send_task_success(taskToken=parked_tokens[name][0], output=json.dumps({"slot": "free"}))
    result = aws.wait_until(execution)

    assert result["status"] == "SUCCEEDED"
    assert json.loads(result["output"])["woken"] == {"slot": "free"}
    assert probe.calls[name] == 1  # the Lambda ran once; the wait itself ran nothing
    types = [e["type"] for e in sfn.get_execution_history(executionArn=execution)["events"]]
    assert parked == 5 and types[parked] == "TaskSucceeded"  # nothing was added while parked
    with pytest.raises(ClientError) as caught:  # the task is over: its token is spent
        sfn.send_task_success(taskToken=parked_tokens[name][0], output="{}")
    assert caught.value.response["Error"]["Code"] in {"InvalidToken", "TaskTimedOut", "TaskDoesNotExist"}


def test_stop_execution_aborts_an_execution_parked_on_a_task_token(aws: Aws) -> None:
    from moto.stepfunctions.parser.utils import TMP_THREADS

    from tests.local_aws.handlers import parked_tokens

    sfn = aws.client("stepfunctions")
    name = uuid.uuid4().hex
    first_thread = len(TMP_THREADS)
    execution = aws.start(aws.parking_machine(), {"probe": name})
    wait_for(lambda: parked_tokens[name], what="the task's Lambda to get its token")
    # Parked means the engine has recorded the task as submitted: the Lambda holding its token is
    # not enough (the engine appends TaskSubmitted after the Lambda returns).
    wait_for(
        lambda: sfn.get_execution_history(executionArn=execution)["events"][-1]["type"] == "TaskSubmitted",
        what="the task to be parked",
    )

    sfn.stop_execution(executionArn=execution, error="Cancelled", cause="test")
    # Without the fix the execution stays RUNNING until the task's 7-day timeout.
    result = aws.wait_until(execution, timeout=30)

    assert result["status"] == "ABORTED"
    types = [e["type"] for e in sfn.get_execution_history(executionArn=execution)["events"]]
    assert types[-1] == "ExecutionAborted"
    wait_for(lambda: not any(t.is_alive() for t in TMP_THREADS[first_thread:]), what="the parked thread to end")


@pytest.mark.parametrize("max_concurrency", [0, 60])  # 0: "no limit"
def test_an_inline_map_runs_at_most_forty_iterations_at_once(aws: Aws, max_concurrency: int) -> None:
    machine = aws.map_machine(aws.function("tests.local_aws.handlers.held"), max_concurrency=max_concurrency, sleep=0)
    name = uuid.uuid4().hex
    execution = aws.start(machine, {"probe": name, "items": list(range(41))})
    # Every iteration is held in its handler: without the cap the 41st starts beside the others.
    wait_for(lambda: probe.in_flight[name] >= 40, what="forty iterations in their handlers")
    probe.release(name)
    result = aws.wait_until(execution)

    assert result["status"] == "SUCCEEDED"
    assert probe.calls[name] == 41  # every item ran...
    assert probe.peak[name] == 40  # ...never more than forty at once


def _every_kind_of_attribute() -> dict[str, Any]:
    return {
        "pk": {"S": "item"},
        "s": {"S": "é, 漢字"},
        "empty": {"S": ""},
        "n": {"N": "1.50"},
        "b": {"B": b"\x00\x01\xff"},
        "ss": {"SS": ["a"]},
        "ns": {"NS": ["2"]},
        "bs": {"BS": [b"\x02"]},
        "yes": {"BOOL": True},
        "no": {"BOOL": False},
        "null": {"NULL": True},
        "m": {"M": {"l": {"L": [{"S": "x"}, {"N": "3"}, {"B": b"\x03"}, {"M": {}}, {"L": []}]}}},
        **{f"a{i:02d}": {"S": f"value {i}"} for i in range(30)},
    }


def test_attribute_values_are_serialized_in_one_pass_with_the_same_bytes(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.core import serialize

    table = aws.table("wire")
    item = _every_kind_of_attribute()
    db = aws.new_client("dynamodb")
    db.put_item(TableName=table, Item=item)
    bodies: list[bytes] = []
    db.meta.events.register(
        "after-call.dynamodb.GetItem", lambda http_response, **_: bodies.append(http_response.content)
    )
    picks = [0]
    pick = serialize.XFormedAttributePicker.__call__

    def counted(self: Any, context: Any) -> Any:
        picks[0] += 1
        return pick(self, context)

    monkeypatch.setattr(serialize.XFormedAttributePicker, "__call__", counted)

    assert db.get_item(TableName=table, Key={"pk": {"S": "item"}})["Item"] == item
    # The response's own members only: moto's serializer looks up ten members per attribute value.
    assert picks[0] < 10

    patched = serialize.BaseJSONSerializer._serialize_type_structure
    original = patched.original  # type: ignore[attr-defined]  # kept by local/aws/moto_patches.py
    monkeypatch.setattr(serialize.BaseJSONSerializer, "_serialize_type_structure", original)
    db.get_item(TableName=table, Key={"pk": {"S": "item"}})
    assert picks[0] > 10 * len(item)
    assert bodies[0] == bodies[1]  # the bytes moto's own serializer writes


def test_a_projected_read_converts_only_the_attributes_it_names_once(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.dynamodb.models.dynamo_type import DynamoType, Item

    table = aws.table("project")
    db = aws.client("dynamodb")
    db.put_item(TableName=table, Item=_every_kind_of_attribute())
    items, values = [0], [0]
    convert_item, convert_value = Item.to_regular_json, DynamoType.to_regular_json

    def counted_item(self: Item) -> Any:
        items[0] += 1
        return convert_item(self)

    def counted_value(self: DynamoType) -> Any:
        values[0] += 1
        return convert_value(self)

    monkeypatch.setattr(Item, "to_regular_json", counted_item)
    monkeypatch.setattr(DynamoType, "to_regular_json", counted_value)

    def read(projection: str) -> tuple[dict[str, Any], int]:
        values[0] = 0
        item = db.get_item(
            TableName=table,
            Key={"pk": {"S": "item"}},
            ProjectionExpression=projection,
            ExpressionAttributeNames={"#s": "s"},
        )["Item"]
        return item, values[0]

    paths, paths_converted = read("n, b, m.l[2], a03, #s, absent")
    _, attributes_converted = read("n, b, m, a03, #s")

    assert paths == {"n": {"N": "1.50"}, "b": {"B": b"\x00\x01\xff"}, "m": {"M": {"l": {"L": [{"B": b"\x03"}]}}},
                     "a03": {"S": "value 3"}, "s": {"S": "é, 漢字"}}  # fmt: skip
    # The five attributes the paths start with, once each (moto: the whole item once per path).
    assert items[0] == 0 and paths_converted == attributes_converted


def test_an_update_copies_the_item_only_for_what_reads_the_copy(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.dynamodb.models.dynamo_type import Item

    table = aws.table("copies")  # no stream: nothing reads the backend's copy
    db = aws.client("dynamodb")
    db.put_item(TableName=table, Item={"pk": {"S": "item"}, "n": {"N": "1"}, "keep": {"S": "k"}})
    copies = [0]
    deepcopy = Item.__deepcopy__

    def counted(self: Item, memo: dict[int, Any]) -> Item:
        copies[0] += 1
        return deepcopy(self, memo)

    monkeypatch.setattr(Item, "__deepcopy__", counted)

    def add_one(returned: str) -> tuple[dict[str, Any] | None, int]:
        copies[0] = 0
        answer = db.update_item(
            TableName=table,
            Key={"pk": {"S": "item"}},
            UpdateExpression="ADD n :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
            ReturnValues=returned,
        )
        return answer.get("Attributes"), copies[0]

    assert add_one("NONE") == (None, 0)  # moto: 2 (the old image, the stream's)
    assert add_one("ALL_NEW") == ({"pk": {"S": "item"}, "n": {"N": "3"}, "keep": {"S": "k"}}, 0)
    assert add_one("ALL_OLD") == ({"pk": {"S": "item"}, "n": {"N": "3"}, "keep": {"S": "k"}}, 1)
    assert add_one("UPDATED_OLD") == ({"n": {"N": "4"}}, 1)
    assert add_one("UPDATED_NEW") == ({"n": {"N": "6"}}, 1)


def test_a_query_sizes_only_the_items_its_key_condition_reads(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.dynamodb.models.table import Item

    table = aws.table("ranges", range_key=True)
    db = aws.client("dynamodb")
    for pk in ("mine", "other"):
        for i in range(40):
            db.put_item(TableName=table, Item={"pk": {"S": pk}, "sk": {"S": f"{i:03d}"}, "v": {"N": str(i)}})
    sized = [0]
    size = Item.size

    def counted_size(self: Item) -> int:
        sized[0] += 1
        return size(self)

    monkeypatch.setattr(Item, "size", counted_size)

    def query(condition: str, values: dict[str, Any], **more: Any) -> tuple[list[str], Any, int]:
        sized[0] = 0
        answer = db.query(
            TableName=table,
            KeyConditionExpression=f"pk = :pk{condition}",
            ExpressionAttributeValues={":pk": {"S": "mine"}, **values},
            **more,
        )
        return [item["sk"]["S"] for item in answer["Items"]], answer.get("LastEvaluatedKey"), sized[0]

    between = " AND sk BETWEEN :a AND :b"
    bounds = {":a": {"S": "010"}, ":b": {"S": "012"}}
    # Sized twice each (moto's page check, then its page total): the 3 items read (moto: the partition's 40 too).
    assert query(between, bounds) == (["010", "011", "012"], None, 6)
    # Pages, order and the other conditions as before.
    first, last, _ = query(between, bounds, Limit=2)
    assert (first, last) == (["010", "011"], {"pk": {"S": "mine"}, "sk": {"S": "011"}})
    assert query(between, bounds, Limit=2, ExclusiveStartKey=last)[:2] == (["012"], None)
    assert query(between, bounds, ScanIndexForward=False)[0] == ["012", "011", "010"]
    assert query(" AND begins_with(sk, :p)", {":p": {"S": "03"}})[0] == [f"{i:03d}" for i in range(30, 40)]
    assert query(" AND sk < :b", {":b": {"S": "002"}})[0] == ["000", "001"]
    assert query("", {})[0] == [f"{i:03d}" for i in range(40)]
    absent = db.query(
        TableName=table, KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": {"S": "none"}}
    )
    assert absent["Items"] == []


def test_a_definition_is_parsed_once_for_its_creation_and_every_execution(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.stepfunctions.parser.asl.antlr.runtime.ASLParser import ASLParser

    parses: list[str] = []
    state_machine = ASLParser.state_machine  # the grammar's start rule: one call per parse

    def counted(self: ASLParser) -> Any:
        parses.append("parse")
        return state_machine(self)

    monkeypatch.setattr(ASLParser, "state_machine", counted)
    tag = uuid.uuid4().hex  # a definition no earlier test made
    choose = {"Variable": "$.n", "NumericGreaterThan": 1, "Next": "Big"}
    machine = aws.state_machine(
        {
            "StartAt": "Tag",
            "States": {
                "Tag": {"Type": "Pass", "Result": tag, "ResultPath": "$.tag", "Next": "Choose"},
                "Choose": {"Type": "Choice", "Choices": [choose], "Default": "Small"},
                "Big": {"Type": "Pass", "Result": "big", "ResultPath": "$.size", "End": True},
                "Small": {"Type": "Pass", "Result": "small", "ResultPath": "$.size", "End": True},
            },
        }
    )
    outputs = [json.loads(aws.wait_until(aws.start(machine, {"n": n}))["output"]) for n in (1, 2)]

    assert outputs == [{"n": 1, "tag": tag, "size": "small"}, {"n": 2, "tag": tag, "size": "big"}]
    assert parses == ["parse"]  # at CreateStateMachine; moto parsed again for each execution
    bad = json.dumps({"StartAt": "A", "States": {"A": {"Type": "Nope", "Comment": tag}}})
    for _ in range(2):  # a definition that does not parse is refused every time, never kept
        with pytest.raises(ClientError, match="Nope"):
            aws.client("stepfunctions").create_state_machine(name=f"bad-{tag[:8]}", definition=bad, roleArn=aws.role())


def _distributed_map_machine(aws: Aws, **tolerance: float) -> str:
    """A Distributed Map over its input's items whose item 2 fails; the Map's failure is caught."""
    return aws.state_machine(
        {
            "StartAt": "Items",
            "States": {
                "Items": {
                    "Type": "Map",
                    "ItemsPath": "$.items",
                    "MaxConcurrency": 2,
                    **tolerance,
                    "ItemProcessor": {
                        "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                        "StartAt": "Which",
                        "States": {
                            "Which": {
                                "Type": "Choice",
                                "Choices": [{"Variable": "$", "NumericEquals": 2, "Next": "Broken"}],
                                "Default": "Fine",
                            },
                            "Broken": {"Type": "Fail", "Error": "Broken", "Cause": "item 2"},
                            "Fine": {"Type": "Succeed"},
                        },
                    },
                    "ResultPath": None,
                    "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Caught"}],
                    "End": True,
                },
                "Caught": {"Type": "Pass", "End": True},
            },
        }
    )


@pytest.mark.parametrize(
    ("tolerance", "caught"),
    [
        ({"ToleratedFailurePercentage": 0.0}, True),
        ({}, True),  # AWS's default: no failure tolerated
        ({"ToleratedFailurePercentage": 25.0}, False),  # one item of four
        ({"ToleratedFailureCount": 1}, False),
    ],
)
def test_a_distributed_map_past_its_tolerated_failures_fails(
    aws: Aws, tolerance: dict[str, float], caught: bool
) -> None:
    machine = _distributed_map_machine(aws, **tolerance)

    result = aws.wait_until(aws.start(machine, {"items": [1, 2, 3, 4]}))

    assert result["status"] == "SUCCEEDED"
    output = json.loads(result["output"])
    if caught:
        assert output["error"]["Error"] == "States.ExceedToleratedFailureThreshold"
    else:
        assert "error" not in output

"""Fixes for defects of moto 5.2.5 (Step Functions interpreter, DynamoDB transactions).

moto is pinned exactly (pyproject.toml) because these reach into its internals. Each
fix is small, says which defect it mends, and is guarded by a test in
tests/local_aws/test_moto_patches.py that fails if the defect comes back or the
internals move.
"""

from __future__ import annotations

import collections
import functools
import importlib
import re
import threading
import uuid
from collections.abc import Collection
from typing import Any

from botocore.config import Config

_applied = False
_lock = threading.Lock()

# Modules of the interpreter that did `from ...boto_client import boto_client_for`.
_BOTO_CLIENT_USERS = (
    "moto.stepfunctions.parser.asl.component.state.exec.state_map.result_writer.resource_eval.resource_eval_s3",
    "moto.stepfunctions.parser.asl.component.state.exec.state_map.item_reader.eval.resource_eval_s3",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.lambda_eval_utils",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_unsupported",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_glue",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_events",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_ecs",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sqs",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_dynamodb",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_batch",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sns",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk",
)


def _keep_stopped_executions_aborted() -> None:
    """StopExecution during a Map ends the execution FAILED (States.Runtime) instead of ABORTED.

    Defect: when the execution is stopped, each Map iteration raises a failure whose
    details are a plain string; the Map state's error handling calls `.get()` on it,
    the resulting AttributeError reaches the program loop, and `Environment.set_error`
    overwrites the `ProgramStopped` state with an error. On AWS a stopped execution is
    ABORTED whatever its states do afterwards, so once stopped, later errors are ignored.
    """
    from moto.stepfunctions.parser.asl.component.state.exec.execute_state import ExecutionState
    from moto.stepfunctions.parser.asl.eval.environment import Environment
    from moto.stepfunctions.parser.asl.eval.program_state import ProgramStopped

    original = Environment.set_error
    original_error_output = ExecutionState._construct_error_output_value

    def construct_error_output_value(failure_event: Any) -> Any:
        # The aborted iteration's details are a str, not a dict: read them as empty.
        details = failure_event.event_details or {}
        if any(not isinstance(spec, dict) for spec in details.values()):
            return {"Error": "", "Cause": ""}
        return original_error_output(failure_event)

    ExecutionState._construct_error_output_value = staticmethod(construct_error_output_value)  # type: ignore[method-assign]

    @functools.wraps(original)
    def set_error(self: Environment, error: Any) -> None:
        if isinstance(self._program_state, ProgramStopped):
            return
        original(self, error)

    Environment.set_error = set_error  # type: ignore[method-assign]


def _name_executions_like_aws() -> None:
    """StartExecution without a name gives an ARN ending in `:None`.

    Defect: moto formats the missing name into the ARN, so every unnamed execution of a
    state machine gets the same ARN and silently collides with the previous one. AWS
    generates a UUID name; so do we.
    """
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    original = StepFunctionsParserBackend.start_execution

    @functools.wraps(original)
    def start_execution(self: Any, state_machine_arn: str, name: str | None = None, *args: Any, **kwargs: Any) -> Any:
        return original(self, state_machine_arn, name or str(uuid.uuid4()), *args, **kwargs)

    StepFunctionsParserBackend.start_execution = start_execution  # type: ignore[method-assign]


INLINE_MAP_LIMIT = 40  # AWS: an inline Map runs at most 40 iterations at once, whatever MaxConcurrency says


def _cap_inline_maps_at_forty() -> None:
    """An inline Map runs every item at once when MaxConcurrency is 0 (or above 40).

    Defect: moto starts one worker per item (MaxConcurrency 0, "no limit") or MaxConcurrency
    workers, however many; AWS runs at most 40 iterations of an inline Map at once. Without
    the cap, a validation here could reach more calls in flight through the Map alone than
    it ever could on AWS (core/headroom.py is what lets it go past 40). Distributed Maps
    (their own `_eval_body`) are left alone.
    """
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.inline_iteration_component import (
        InlineIterationComponent,
    )

    original = InlineIterationComponent._eval_body

    @functools.wraps(original)
    def eval_body(self: Any, env: Any) -> None:
        eval_input = env.stack[-1]  # popped by the original
        if eval_input.max_concurrency <= 0 or eval_input.max_concurrency > INLINE_MAP_LIMIT:
            eval_input.max_concurrency = min(INLINE_MAP_LIMIT, len(eval_input.input_items))  # 0 items: 0 workers
        original(self, env)

    InlineIterationComponent._eval_body = eval_body  # type: ignore[method-assign]


def _pooled_client(client: Any) -> Any:
    """The same client with a connection pool for 64 concurrent requests instead of 10."""
    import boto3

    return boto3.client(
        client.meta.service_model.service_name,
        region_name=client.meta.region_name,
        endpoint_url=client.meta.endpoint_url,
        aws_access_key_id="ak",
        aws_secret_access_key="sk",
        config=client.meta.config.merge(Config(max_pool_connections=64)),
    )


def _reuse_boto_clients() -> None:
    """The interpreter builds a new boto3 client for every Task state (5-10 ms of CPU each).

    Defect: `boto_client_for` is called per task; creating a botocore client loads and
    parses service models each time. Clients are thread-safe, so keep one per
    (region, service). The original ignores `state_credentials` (it always signs with
    fixed keys), so the cache does too. Its client pools 10 connections while a Map runs
    up to 40 tasks at once: every request beyond 10 opened (and dropped) a TCP connection
    and a server thread, so the cached client gets a pool of 64.
    """
    boto_client = importlib.import_module("moto.stepfunctions.parser.asl.utils.boto_client")
    original = boto_client.boto_client_for
    cache: dict[tuple[str, str, str], Any] = {}
    cache_lock = threading.Lock()

    @functools.wraps(original)
    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        from moto.settings import moto_server_port

        key = (region, service, moto_server_port())  # a restarted server may use a new port
        with cache_lock:
            if key not in cache:
                cache[key] = _pooled_client(original(region, service))
            return cache[key]

    boto_client_for.cache = cache  # type: ignore[attr-defined]  # for the guard test
    boto_client.boto_client_for = boto_client_for  # type: ignore[attr-defined]  # moto's module attribute, patched
    for module_name in _BOTO_CLIENT_USERS:
        module = importlib.import_module(module_name)
        if hasattr(module, "boto_client_for"):
            module.boto_client_for = boto_client_for  # type: ignore[attr-defined]  # as above, where it was imported


def _roll_back_transactions_per_item() -> None:
    """TransactWriteItems deep-copies every table it touches, whole, to roll back on failure.

    Defect: the cost of one transaction grows with the size of the tables (measured: 27 ms
    with 10 items, 190 ms with 2,500), so a validation's part writes get slower as it
    progresses and a 500-part validation becomes quadratic. DynamoDB itself isolates per
    item. We snapshot just the items the transaction names, and make the whole-table copy
    a no-op (the module's `copy` is swapped for one that leaves tables alone).
    """
    models = importlib.import_module("moto.dynamodb.models")
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    real_copy = models.copy

    class _CopyLeavingTables:
        copy = staticmethod(real_copy.copy)

        @staticmethod
        def deepcopy(value: Any, memo: Any = None) -> Any:
            return value if isinstance(value, Table) else real_copy.deepcopy(value, memo)

    models.copy = _CopyLeavingTables  # type: ignore[attr-defined]  # the `copy` module moto's models imported
    original = models.DynamoDBBackend.transact_write_items

    def item_keys(backend: Any, transact_items: list[dict[str, Any]]) -> list[tuple[Any, Any, Any]]:
        keys = []
        for entry in transact_items:
            op_type, op = next(iter(entry.items()))
            table = backend.tables.get(op.get("TableName"))
            attrs = op.get("Item" if op_type == "Put" else "Key") or {}
            if table is None or table.hash_key_attr not in attrs:
                continue  # the original raises the right error for these
            range_key = DynamoType(attrs[table.range_key_attr]) if table.range_key_attr in attrs else None
            keys.append((table, DynamoType(attrs[table.hash_key_attr]), range_key))
        return keys

    @functools.wraps(original)
    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        snapshots = [
            (table, hash_key, range_key, real_copy.deepcopy(table.get_item(hash_key, range_key)))
            for table, hash_key, range_key in item_keys(self, transact_items)
        ]
        transact_write_items.snapshotted.append(len(snapshots))  # type: ignore[attr-defined]  # guard test
        try:
            return original(self, transact_items)
        except Exception:
            for table, hash_key, range_key, before in reversed(snapshots):
                container = table.items[hash_key] if range_key is not None else table.items
                key = range_key if range_key is not None else hash_key
                if before is None:
                    container.pop(key, None)
                else:
                    container[key] = before
            raise

    transact_write_items.snapshotted = collections.deque(maxlen=100)  # type: ignore[attr-defined]
    models.DynamoDBBackend.transact_write_items = transact_write_items


def _serialize_attribute_values_in_one_pass() -> None:
    """Every DynamoDB answer walks each attribute of each item through the generic serializer.

    Defect (cost): moto's response serializer visits all ten members of the `AttributeValue`
    union for every attribute, looking each up through its alias providers (`S`, then `s`,
    ...): about a quarter of the embedded AWS's CPU in a validation, mostly Query results
    and items read back. moto holds an attribute value in the wire format already, blobs
    aside (the serializer base64-encodes them), so it is written in one pass here, with the
    serializer's own conversions: the same bytes.
    """
    serialize = importlib.import_module("moto.core.serialize")
    original = serialize.BaseJSONSerializer._serialize_type_structure

    def wire(value: dict[str, Any], base64: Any) -> dict[str, Any]:
        ((kind, inner),) = value.items()  # a union: exactly one member is set
        if kind in ("S", "N"):
            return {kind: str(inner)}
        if kind in ("SS", "NS"):
            return {kind: [str(v) for v in inner]}
        if kind == "B":
            return {kind: base64(inner)}
        if kind == "BS":
            return {kind: [base64(v) for v in inner]}
        if kind == "M":
            return {kind: {k: wire(v, base64) for k, v in inner.items()}}
        if kind == "L":
            return {kind: [wire(v, base64) for v in inner]}
        return {kind: inner}  # BOOL, NULL: booleans, written as they are

    @functools.wraps(original)
    def serialize_structure(self: Any, serialized: Any, value: Any, shape: Any, key: str) -> None:
        if (
            key
            and shape.name == "AttributeValue"
            and isinstance(value, dict)
            and len(value) == 1
            and self.operation_model.service_model.service_name == "dynamodb"
        ):
            serialized[self.get_serialized_name(shape, key)] = wire(value, self._base64)
            return
        original(self, serialized, value, shape, key)

    serialize_structure.original = original  # type: ignore[attr-defined]  # the guard test compares both
    serialize.BaseJSONSerializer._serialize_type_structure = serialize_structure


def _project_items_from_one_conversion() -> None:
    """A read with a ProjectionExpression converts the whole item once per projected path.

    Defect (cost): `Item.project` calls `self.to_regular_json()` (a deep copy and a
    conversion of every attribute) inside its loop over the paths, so reading 6 attributes of
    a validation record converted the whole record 6 times, however few of its attributes
    the paths named: about a tenth of the embedded AWS's CPU in a validation. Here the
    attributes the paths start with are converted, once (the loop only reads them).
    """
    dynamo_type = importlib.import_module("moto.dynamodb.models.dynamo_type")
    Item = dynamo_type.Item
    original = Item.project
    list_element = re.compile(r"(.+)\[(\d+)\]$")  # `find_nested_key`'s reading of `name[i]`

    def project(self: Any, projection_expressions: list[list[str]]) -> Any:
        named = {(m.group(1) if (m := list_element.match(path[0])) else path[0]) for path in projection_expressions}
        read = {  # Item.to_regular_json, for these attributes only
            name: dynamo_type.deserializer.deserialize(self.attrs[name].to_regular_json())
            for name in named
            if name in self.attrs
        }
        result: dict[str, Any] = {}
        for path in projection_expressions:
            dynamo_type.merge_dicts(result, dynamo_type.find_nested_key(path, read))
        return Item(
            hash_key=self.hash_key,
            range_key=self.range_key,
            attrs=dynamo_type.serializer.serialize(result)["M"],
        )

    functools.update_wrapper(project, original)
    Item.project = project


def _copy_updated_items_only_for_a_reader() -> None:
    """Every UpdateItem deep-copies the whole item twice, for readers that are not there.

    Defect (cost): moto's UpdateItem handler copies and converts the stored item before the
    update for ReturnValues ALL_OLD, UPDATED_OLD and UPDATED_NEW, also when a request asks for
    NONE or ALL_NEW; and the backend copies it again for the table's stream, also when the
    table has none. Both grow with the item: about a fifth of the embedded AWS's CPU in a
    validation of 90 files (its record lists them). Now the handler sees no old item when
    nothing reads it, and the backend keeps the item itself when no stream does.
    """
    models = importlib.import_module("moto.dynamodb.models")
    responses = importlib.import_module("moto.dynamodb.responses")
    from moto.dynamodb.models.dynamo_type import Item

    unread = threading.local()  # `old_image`, `stream`: this thread's copy would go unread

    def copying(module_copy: Any, unread_when: str, instead: Any) -> Any:
        class Copy:
            copy = staticmethod(module_copy.copy)

            @staticmethod
            def deepcopy(value: Any, memo: Any = None) -> Any:
                if isinstance(value, Item) and getattr(unread, unread_when, False):
                    return instead(value)
                return module_copy.deepcopy(value, memo)

        return Copy

    # Each module's `copy` (models' is already the one that leaves tables alone) is wrapped.
    responses.copy = copying(responses.copy, "old_image", lambda item: None)  # type: ignore[attr-defined]
    models.copy = copying(models.copy, "stream", lambda item: item)  # type: ignore[attr-defined]
    handler_update = responses.DynamoHandler.update_item
    backend_update = models.DynamoDBBackend.update_item

    @functools.wraps(handler_update)
    def update_item_answer(self: Any) -> Any:
        unread.old_image = self.body.get("ReturnValues", "NONE") in ("NONE", "ALL_NEW")
        try:
            return handler_update(self)
        finally:
            unread.old_image = False

    @functools.wraps(backend_update)
    def update_item(self: Any, table_name: str, *args: Any, **kwargs: Any) -> Any:
        table = self.tables.get(table_name)
        unread.stream = table is not None and table.stream_shard is None
        try:
            return backend_update(self, table_name, *args, **kwargs)
        finally:
            unread.stream = False

    responses.DynamoHandler.update_item = update_item_answer
    models.DynamoDBBackend.update_item = update_item


def _query_only_the_partition_it_names() -> None:
    """A Query lists the whole table and sizes every item of the partition it names.

    Defect (cost): `Table.query` of a table's own keys takes `all_items()` (every item of the
    table, sorted), keeps the partition's, then computes `Item.size()` (a walk of every
    attribute) of each of them before it checks the sort-key condition. A validation's Map
    items each query their range of the validation's parts, so each query sized every part:
    quadratic in the parts, ~15% of the CPU of a validation of 200 parts. Here such a Query
    starts from the partition's items that meet the sort-key condition, found by the
    partition's key; moto's loop then sorts, pages and filters them as before, and its 1 MB
    page counts the items the key condition reads (DynamoDB's limit), not the partition's.
    Index queries and the legacy QueryFilter (`filter_kwargs`) go moto's way.
    """
    table_module = importlib.import_module("moto.dynamodb.models.table")
    Table = table_module.Table
    original_query = Table.query
    original_all_items = Table.all_items
    narrowed = threading.local()  # (table, items): what `all_items` answers inside this thread's query

    def all_items(self: Any) -> Any:
        found = getattr(narrowed, "found", None)
        if found is not None and found[0] is self:
            return found[1]
        return original_all_items(self)

    def query(
        self: Any,
        hash_key: Any,
        range_comparison: str | None,
        range_objs: list[Any],
        limit: int,
        exclusive_start_key: Any,
        scan_index_forward: bool,
        projection_expressions: Any,
        index_name: str | None = None,
        consistent_read: bool = False,
        filter_expression: Any = None,
        hash_key_conditions: Any = None,
        range_key_conditions: Any = None,
        **filter_kwargs: Any,
    ) -> Any:
        args = (hash_key, range_comparison, range_objs, limit, exclusive_start_key, scan_index_forward)
        kwargs = {
            "projection_expressions": projection_expressions,
            "index_name": index_name,
            "consistent_read": consistent_read,
            "filter_expression": filter_expression,
            "hash_key_conditions": hash_key_conditions,
            "range_key_conditions": range_key_conditions,
            **filter_kwargs,
        }
        # One sort-key condition at most, on the table's sort key (what moto then compares).
        on_the_sort_key = not range_key_conditions or [c[0] for c in range_key_conditions] == [self.range_key_attr]
        if index_name or filter_kwargs or hash_key is None or not self.range_key_attr or not on_the_sort_key:
            return original_query(self, *args, **kwargs)
        partition = self.items.get(hash_key) or {}  # keyed by DynamoType, whose hash follows its equality
        items = [
            item
            for item in partition.values()
            if isinstance(item, table_module.Item)
            and (not range_comparison or item.range_key.compare(range_comparison, range_objs))
        ]
        narrowed.found = (self, items)
        try:
            return original_query(self, *args, **kwargs)
        finally:
            narrowed.found = None

    functools.update_wrapper(query, original_query)
    functools.update_wrapper(all_items, original_all_items)
    Table.query = query
    Table.all_items = all_items


def _list_service_modules_once() -> None:
    """Every request to moto's server lists moto's package directory, under a global lock.

    Defect: `DomainDispatcherApplication.get_backend_for_host` calls
    `backends.list_of_moto_modules()`, which runs `os.listdir` plus an `isdir` per entry
    (~150 stats) for each request while holding the dispatcher's lock: about a quarter of
    the embedded AWS's CPU in a validation, and it serializes requests. The directory does
    not change while the process runs, so list it once.
    """
    backends = importlib.import_module("moto.backends")
    listed = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: listed  # type: ignore[attr-defined]  # replaced by its cached answer


def _serialize_dynamodb_writes() -> None:
    """Concurrent writes to one DynamoDB item lose updates.

    Defect: moto's server handles each request on its own thread, and `update_item`
    reads, modifies and stores the item without a lock; two concurrent
    `ADD succeeded :one` on a validation record can both read the old value (seen: 219
    of 220 increments kept). DynamoDB applies each write to an item atomically. One lock
    around moto's write operations restores that.

    Second defect, same cause: an UpdateItem that creates an item stores it with its keys
    first and applies the SET clauses after, so a concurrent GetItem/Query can see a
    half-built item (seen: a lease item without its `expires_at`). DynamoDB reads never
    see a partial write, so reads take the same lock.
    """
    models = importlib.import_module("moto.dynamodb.models")
    responses = importlib.import_module("moto.dynamodb.responses")
    lock = threading.RLock()
    # Third defect: UpdateItem's response handler reads the item before the update and
    # serializes it after, outside the backend call, so `ReturnValues` (ALL_NEW: how the
    # events' `event_seq` is allocated) could include a concurrent update's increment and two
    # writers got the same number (seen: a PutItem of an event failing its condition). The
    # handlers of UpdateItem and GetItem run whole under the lock.
    for name in ("update_item", "get_item"):
        original_handler = getattr(responses.DynamoHandler, name)

        def locked_handler(self: Any, *args: Any, __original: Any = original_handler, **kwargs: Any) -> Any:
            with lock:
                return __original(self, *args, **kwargs)

        functools.update_wrapper(locked_handler, original_handler)
        setattr(responses.DynamoHandler, name, locked_handler)
    for name in (
        "put_item",
        "update_item",
        "delete_item",
        "transact_write_items",
        "execute_statement",
        "batch_execute_statement",
        "get_item",
        "query",
        "scan",
    ):
        original = getattr(models.DynamoDBBackend, name)

        def locked(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            with lock:
                return __original(self, *args, **kwargs)

        functools.update_wrapper(locked, original)
        setattr(models.DynamoDBBackend, name, locked)


def _skip_backend_lock_for_known_accounts() -> None:
    """Every request, of every service, takes moto's one global lock.

    Defect: `BackendDict.__getitem__` calls `_create_account_specific_backend`, which takes
    the module-wide `backend_lock` and lists the account ids even when the account's
    backend exists, so all concurrent requests queue on one lock (seen: ~14% of the
    embedded AWS's samples in a validation). A backend that exists is returned directly;
    creating one still goes through the lock.
    """
    base_backend = importlib.import_module("moto.core.base_backend")
    original = base_backend.BackendDict.__getitem__

    @functools.wraps(original)
    def getitem(self: Any, account_id: str) -> Any:
        if dict.__contains__(self, account_id):
            return dict.__getitem__(self, account_id)
        return original(self, account_id)

    base_backend.BackendDict.__getitem__ = getitem


def _abort_executions_parked_on_a_task_token() -> None:
    """StopExecution leaves an execution parked in a `.waitForTaskToken` task RUNNING.

    Defect: stopping wakes Wait states (they sleep on the program's state event) but not a
    task waiting for its callback: that thread sleeps on its callback endpoint until
    SendTaskSuccess/Failure or the task's TimeoutSeconds (a queued validation: 7 days), so
    the execution never reaches ABORTED and a cancel never settles. On AWS, StopExecution
    aborts at once. After a stop, every callback endpoint of the execution is interrupted:
    the wait returns without an outcome and the program, seeing it was stopped, ends
    ABORTED (the task logs a TaskTimedOut before ExecutionAborted; AWS logs none).
    """
    from moto.stepfunctions.parser.asl.eval.environment import Environment

    original = Environment.set_stop

    @functools.wraps(original)
    def set_stop(self: Environment, stop_date: Any, cause: str | None, error: str | None) -> None:
        original(self, stop_date, cause, error)
        pool = self.callback_pool_manager._pool  # moto keeps the endpoints only here
        for endpoint in list(pool.values()):
            endpoint.interrupt_all()

    Environment.set_stop = set_stop  # type: ignore[method-assign]


def _abort_at_once_on_stop() -> None:
    """StopExecution leaves the execution RUNNING until the task in flight returns.

    Defect: moto sets ABORTED only when the interpreter's thread ends, so an execution stopped
    while a Lambda task runs (a validator mid-call) is described RUNNING for as long as that
    call takes, and whoever waits for the stop (a cancel settling, the reconciler) waits with
    it. On AWS, a stopped standard execution is ABORTED at once (what its task still does is
    discarded): the status, and the stop date, are set by StopExecution itself.
    """
    from moto.stepfunctions.parser.api import ExecutionStatus
    from moto.stepfunctions.parser.asl.eval.program_state import ProgramStopped
    from moto.stepfunctions.parser.backend.execution import Execution

    original = Execution.stop

    @functools.wraps(original)
    def stop(self: Execution, stop_date: Any, error: str | None, cause: str | None) -> None:
        original(self, stop_date, error, cause)
        env = self.exec_worker.env if self.exec_worker is not None else None
        # Only a stop that took (the program had not ended on its own meanwhile).
        stopped = env is not None and isinstance(env.program_state(), ProgramStopped)
        if stopped and self.exec_status == ExecutionStatus.RUNNING:
            self.exec_status = ExecutionStatus.ABORTED
            self.stop_date = stop_date

    Execution.stop = stop  # type: ignore[method-assign]


# The parse trees kept (~1.2 MB each for the validation machine): a deployment's or a test's few
# machines, not every one a test process makes.
PARSED_DEFINITIONS = 16


def _parse_each_definition_once() -> None:
    """Every execution parses its state machine's definition again, with ANTLR in pure Python.

    Defect (cost): CreateStateMachine parses the definition to validate it, and each execution's
    worker parses it again before its first state: ~0.1 s of CPU for the validation machine's
    16 KB of ASL, each time (8% of the CPU of the end-to-end tests went to the executions' parses).
    The parse tree depends on the text alone and the preprocessor only reads it, so the trees of
    the last few definitions are kept; every parse still builds its own evaluation components
    from the tree, as before. A definition that does not parse is never kept: it raises every time.
    """
    asl_parser = importlib.import_module("moto.stepfunctions.parser.asl.parse.asl_parser")
    original = asl_parser.AmazonStateLanguageParser.parse
    trees: collections.OrderedDict[str, Any] = collections.OrderedDict()
    trees_lock = threading.Lock()

    def parse(definition: str) -> tuple[Any, Any]:
        with trees_lock:
            tree = trees.get(definition)
            if tree is not None:
                trees.move_to_end(definition)
        if tree is not None:
            return asl_parser.Preprocessor().visit(tree), tree
        program, tree = original(definition)
        with trees_lock:
            trees[definition] = tree
            while len(trees) > PARSED_DEFINITIONS:
                trees.popitem(last=False)
        return program, tree

    functools.update_wrapper(parse, original)
    asl_parser.AmazonStateLanguageParser.parse = staticmethod(parse)


def _fail_distributed_maps_past_their_tolerated_failures() -> None:
    """A Distributed Map succeeds however many of its child executions failed.

    Defect: moto counts a Map Run's failed and timed-out items but never compares them with
    ToleratedFailureCount / ToleratedFailurePercentage (it logs that they "have no effect"): the
    Map succeeds, a failed item's output null. On AWS a Map Run past its threshold (0 by default)
    fails with States.ExceedToleratedFailureThreshold, which the Map state's Catch sees: the
    parts' Distributed Map relies on it to end a validation whose child failed (its part was not
    recorded). Here the Map Run is judged once its items have run (AWS fails it as soon as the
    threshold is passed); a failure must pass both thresholds (AWS: either of those declared).
    """
    from moto.stepfunctions.parser.api import HistoryEventType, MapRunFailedEventDetails
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.distributed_iteration_component import (
        DistributedIterationComponent,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    original = DistributedIterationComponent._map_run

    @functools.wraps(original)
    def map_run(self: Any, env: Any, eval_input: Any) -> None:
        original(self, env, eval_input)
        record = eval_input.map_run_record
        counts = record.item_counter
        failed, total = counts.failed.get() + counts.timed_out.get(), max(1, counts.total.get())
        within = failed <= (record.tolerated_failure_count or 0) or 100.0 * failed / total <= (
            record.tolerated_failure_percentage or 0.0
        )
        if not env.is_running() or not failed or within:
            return
        name = StatesErrorName(typ=StatesErrorNameType.StatesExceedToleratedFailureThreshold)
        details = MapRunFailedEventDetails(
            error=name.error_name, cause="The specified tolerated failure threshold was exceeded"
        )
        raise FailureEventException(
            FailureEvent(
                env=env,
                error_name=name,
                event_type=HistoryEventType.MapRunFailed,
                # moto declares EventDetails total but builds it with one key, as here.
                event_details=EventDetails(mapRunFailedEventDetails=details),  # type: ignore[typeddict-item]
            )
        )

    DistributedIterationComponent._map_run = map_run  # type: ignore[method-assign]


_FIXES = (
    _keep_stopped_executions_aborted,
    _name_executions_like_aws,
    _cap_inline_maps_at_forty,
    _reuse_boto_clients,
    _roll_back_transactions_per_item,
    _copy_updated_items_only_for_a_reader,  # after the line above: wraps models' `copy` again
    _serialize_attribute_values_in_one_pass,
    _project_items_from_one_conversion,
    _query_only_the_partition_it_names,
    _list_service_modules_once,
    _serialize_dynamodb_writes,
    _skip_backend_lock_for_known_accounts,
    _abort_executions_parked_on_a_task_token,
    _abort_at_once_on_stop,
    _parse_each_definition_once,
    _fail_distributed_maps_past_their_tolerated_failures,
)
# Fixes of moto's CPU cost, not of its behaviour: bench/local_stack.py measures them against
# moto as it is (`apply(without=...)`).
COST_FIXES = (
    _copy_updated_items_only_for_a_reader.__name__,
    _serialize_attribute_values_in_one_pass.__name__,
    _project_items_from_one_conversion.__name__,
    _query_only_the_partition_it_names.__name__,
)


def apply(without: Collection[str] = ()) -> None:
    """Apply every fix (but those named in `without`) once per process."""
    global _applied
    with _lock:
        if _applied:
            return
        for fix in _FIXES:
            if fix.__name__ not in without:
                fix()
        _applied = True

"""A fault hook for crash-window tests: fail the N-th AWS write of one writer.

Installed from a test on botocore clients (the API's aioboto3 clients, or the Lambdas'
boto3 clients) as a `before-call` handler: no production code knows about it. While a
writer runs under `faults.writer(fail_at, mode)`, every call it makes is seen here; writes
(DynamoDB Put/Update/Delete/TransactWrite/BatchWrite, S3 Put/Delete, Step Functions
Start/Stop/SendTask*) are counted, and the `fail_at`-th raises a `ServiceUnavailable`
ClientError before it is sent (botocore's retries never see it):

- mode "error": only that write fails; the writer's own error handling (its undo) runs;
- mode "crash": that write and every AWS call after it fail, as if the process died there:
  no undo can reach AWS.

`fail_at=None` counts a clean run's writes (`Run.writes`), so a test can fail each of them
in turn; `fail_on="sfn.StartExecution"` fails the first write of that name instead. In mode
"error", `Run.writes_after` counts the writes the writer still made after the fault: when
there were none, mode "crash" at the same write leaves AWS in the same state (what it would
refuse are reads).

Which calls belong to the writer: every call through the hooked clients while the block is
open (the API: one request at a time through its clients), or only the calls of the thread
that opened it (`thread_only`: a Lambda handler invoked in the test's thread,
while the embedded AWS runs other invocations on its own threads with the same clients).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from botocore.exceptions import ClientError

Mode = Literal["error", "crash"]
MODES: tuple[Mode, ...] = ("error", "crash")

WRITES = {
    "dynamodb": {"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"},
    "s3": {"PutObject", "DeleteObject", "DeleteObjects", "CopyObject"},
    "sfn": {"StartExecution", "StopExecution", "SendTaskSuccess", "SendTaskFailure", "SendTaskHeartbeat"},
}


@dataclass
class Run:
    """One writer's run under the hook: the writes it made (or tried), and whether the fault fired."""

    fail_at: int | None
    mode: Mode
    fail_on: str | None = None
    writes: list[str] = field(default_factory=list)  # "dynamodb.PutItem", in order
    requests: list[dict[str, Any]] = field(default_factory=list)  # each DynamoDB or Step Functions write's body
    fired: str | None = None  # the write that was failed
    after: int = 0  # calls made after the fault (mode "error"), or refused (mode "crash")
    writes_after: int = 0  # of which writes

    @property
    def dead(self) -> bool:
        return self.fired is not None and self.mode == "crash"

    def __str__(self) -> str:
        return f"{self.mode} at write {self.fail_at} ({self.fired}) of {self.writes}"


def _unavailable(operation: str) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": "ServiceUnavailable", "Message": "injected fault (tests/faults.py)"},
            "ResponseMetadata": {"HTTPStatusCode": 503},
        },
        operation,
    )


class Faults:
    """`install(*clients)` once; then `with faults.writer(n, mode) as run:` around one writer."""

    def __init__(self, *, thread_only: bool = False) -> None:
        self._thread_only = thread_only
        self._run: Run | None = None
        self._thread: int | None = None
        self._lock = threading.Lock()
        self._clients: list[Any] = []

    def install(self, *clients: Any) -> Faults:
        for client in clients:
            client.meta.events.register("before-call.*.*", self._before_call, unique_id=f"faults-{id(self)}")
            self._clients.append(client)
        return self

    def uninstall(self) -> None:
        for client in self._clients:
            client.meta.events.unregister("before-call.*.*", unique_id=f"faults-{id(self)}")
        self._clients.clear()

    @contextmanager
    def writer(self, fail_at: int | None = None, mode: Mode = "error", fail_on: str | None = None) -> Iterator[Run]:
        run = Run(fail_at, mode, fail_on)
        with self._lock:
            self._run, self._thread = run, threading.get_ident()
        try:
            yield run
        finally:
            with self._lock:
                self._run = self._thread = None

    def _before_call(self, model: Any, params: Any = None, **_: Any) -> None:
        run = self._run
        if run is None or (self._thread_only and threading.get_ident() != self._thread):
            return
        service = model.service_model.service_id.hyphenize()  # "dynamodb", "s3", "sfn"
        with self._lock:
            if run.fired is not None:
                run.after += 1
                if run.dead:
                    raise _unavailable(model.name)
            if model.name not in WRITES.get(service, ()):
                return
            name = f"{service}.{model.name}"
            run.writes_after += run.fired is not None
            run.writes.append(name)
            body = (params or {}).get("body") or b"{}"
            run.requests.append(json.loads(body) if service in ("dynamodb", "sfn") else {})
            if run.fired is None and (len(run.writes) == run.fail_at or name == run.fail_on):
                run.fired = name
                raise _unavailable(model.name)

"""Validators without Step Functions: the real grant path, many at once, against the embedded
DynamoDB and the simulator.

A `Fleet` stands for a deployment's warm Lambdas: each worker thread is one "process", with its
own DynamoDB client, its own `Governor` (budget view, grant lock) and its own `LiveConfig`
cache, as separate Lambdas have. A worker takes a one-part file at a time and runs it as a
validator invocation does: a lease (call slot and grant), `Asker.ask` (reserve, call the
simulator over HTTP, settle, feed the headers or the 429 back), then the lease closed. A
refused call (429) or no capacity within the wait puts the file back, as Step Functions'
retry would. Setting up takes the governor's table and the SSM parameters only, so a few
hundred calls run in seconds. A fleet asks one `model` (default: the configured one) from that
model's budget, as the validators of a validation of that model do.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.settings import Settings
from core import governor as g
from core import prompt
from core.lines import decode_part
from core.parts import split_file
from core.tokens import count_message_tokens
from lambdas.common.config import LambdaConfig, config_from_environ
from lambdas.common.errors import CapacityUnavailable, RateLimited
from lambdas.common.governor import Governor
from lambdas.common.live_config import LiveConfig
from lambdas.common.model import Asker, model_client
from local.aws.provision import Provisioner
from tests.support.stack import Aws, lines_document

RULES = [{"id": "no-secret", "text": "No line may contain the word secret."}]
WAIT = 120  # seconds: a bound on a broken test, never a measurement


def deployment(aws: Aws, settings: Settings, parameters: dict[str, Any], **config: Any) -> LambdaConfig:
    """The governor's table and the live parameters of `settings`' deployment (nothing else),
    and the Lambdas' configuration for it with `config` overrides."""
    provisioner = Provisioner(settings, aws.endpoint_url)
    provisioner.create_tables()
    provisioner.create_parameters()
    for name, value in parameters.items():
        aws.client("ssm").put_parameter(
            Name=f"{settings.ssm_prefix}/{name}", Value=str(value), Type="String", Overwrite=True
        )
    return config_from_environ(provisioner.function_environment()).model_copy(update=config)


def spent(client: Any, table: str, scope: g.Scope = g.HOME) -> int:
    """granted − returned over every shard of a model's budget: the tokens its validators sent
    (or may still send)."""
    keys = [{"pk": {"S": scope.pk(g.BUDGET_PK, s)}, "sk": {"S": "tokens"}} for s in range(g.SHARDS)]
    items = client.batch_get_item(RequestItems={table: {"Keys": keys, "ConsistentRead": True}})["Responses"][table]
    return sum(int(i.get("granted", {"N": "0"})["N"]) - int(i.get("returned", {"N": "0"})["N"]) for i in items)


def one_part_file(index: int) -> tuple[list[dict[str, str]], int]:
    """A small file's one part call: (messages, prompt tokens)."""
    name, text = f"file-{index}.txt", lines_document(3).encode()
    span = split_file(name, text, 1_000)[0]
    part = decode_part(text[span.start_byte : span.end_byte], span.start_byte)
    view = prompt.PartView(name, span.first_line, span.last_line, 1, 1)
    messages = prompt.part_messages(view, part, RULES, prompt.new_nonce())
    return messages, count_message_tokens(messages)


@dataclass
class _Attempts:
    """The validations store's one method an Asker uses, counting."""

    made: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count_attempt(self, *_: Any, **__: Any) -> None:
        with self.lock:
            self.made += 1


@dataclass
class _Store:
    validations: _Attempts = field(default_factory=_Attempts)


@dataclass
class Outcome:
    answered: int = 0
    refused: int = 0  # RateLimited: the simulator answered 429
    no_capacity: int = 0  # CapacityUnavailable: no slot or grant within the wait
    granted_at: list[float] = field(default_factory=list)  # wall clock, when each call was let through
    waits: int = 0  # the governors' sleeps: for a slot, a place in the budget's schedule, a lost race


class Fleet:
    def __init__(self, aws: Aws, config: LambdaConfig, processes: int, model: str | None = None) -> None:
        self.config, self.processes = config, processes
        self.model = model or config.openai_model
        self.validation_id = f"v{uuid.uuid4().hex[:10]}"
        self.outcome = Outcome()
        self._lock = threading.Lock()
        self._aws = aws

    def _process(self) -> tuple[Governor, LiveConfig]:
        dynamodb = self._aws.new_client("dynamodb")
        live = LiveConfig(
            dynamodb,
            self._aws.new_client("ssm"),
            self.config.governor_table,
            self.config.ssm_prefix,
            self.config.config_cache_seconds,
            configured=self.config.openai_model,
        )
        governor = Governor(
            dynamodb,
            self.config.governor_table,
            lambda: live.limits(self.model),
            self.config.governor_window_seconds,
            self.config.lease_seconds,
            sleep=self._sleep,
            scope=g.Scope.of(self.model, self.config.openai_model),
        )
        return governor, live

    def run(self, files: int, cap: Callable[[LiveConfig], int] | None = None) -> Outcome:
        """Validate `files` one-part files with `processes` workers; every file answered once.

        The processes are warm before the first file (clients built, settings read, the model
        client made): what is measured is the governor, not the harness's start."""
        todo: queue.Queue[int] = queue.Queue()
        for index in range(files):
            todo.put(index)
        errors: list[BaseException] = []
        model_client(self.config.openai_base_url, "", self.config.openai_timeout_seconds)
        processes = [self._process() for _ in range(self.processes)]
        for _, live in processes:
            live.limits()
        workers = [
            threading.Thread(target=self._work, args=(process, todo, files, cap, errors)) for process in processes
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(WAIT)
        assert not any(w.is_alive() for w in workers), "workers still running"
        assert not errors, errors
        return self.outcome

    def _work(
        self,
        process: tuple[Governor, LiveConfig],
        todo: queue.Queue[int],
        files: int,
        cap: Callable[[LiveConfig], int] | None,
        errors: list[BaseException],
    ) -> None:
        try:
            governor, live = process
            store: Any = _Store()

            def slots() -> int:
                return cap(live) if cap is not None else live.limits().max_parallelism

            while True:
                with self._lock:
                    if self.outcome.answered >= files:
                        return
                try:
                    index = todo.get(timeout=0.05)
                except queue.Empty:
                    continue
                messages, tokens = one_part_file(index)
                lease = governor.lease(self.validation_id, slots)
                asker = Asker(
                    self.config,
                    store,
                    governor,
                    lease,
                    self.validation_id,
                    lambda: 600_000,
                    self._granted,
                    model=self.model,
                )
                try:
                    asker.ask(messages, prompt.PART_RESPONSE_FORMAT, tokens)
                except RateLimited:
                    self._add(refused=1)
                    todo.put(index)  # Step Functions retries the invocation
                except CapacityUnavailable:
                    self._add(no_capacity=1)
                    todo.put(index)
                else:
                    self._add(answered=1)
                finally:
                    lease.close()
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    def _sleep(self, seconds: float) -> None:
        with self._lock:
            self.outcome.waits += 1
        time.sleep(seconds)

    def _granted(self) -> None:
        """Right before a call (the Asker's `before_call`): its start."""
        with self._lock:
            self.outcome.granted_at.append(time.time())

    def _add(self, *, answered: int = 0, refused: int = 0, no_capacity: int = 0) -> None:
        with self._lock:
            self.outcome.answered += answered
            self.outcome.refused += refused
            self.outcome.no_capacity += no_capacity

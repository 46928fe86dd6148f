"""DynamoDB and S3 access of the Lambdas (boto3): one store per table or domain, built once per
configuration. Every write is safe to run twice.

    store = store_for(config)
    store.validations.get(validation_id, "rules", "files")
    store.parts.record_success(validation_id, part, verdicts, usage, model)
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import boto3
from botocore.config import Config

from core.steps import Step, StepAnswer
from lambdas.common.config import LambdaConfig
from lambdas.common.stores.answers import Answers
from lambdas.common.stores.base import Clients
from lambdas.common.stores.batches import Batches
from lambdas.common.stores.events import Events
from lambdas.common.stores.files import Files
from lambdas.common.stores.parts import Parts
from lambdas.common.stores.queue import Queue
from lambdas.common.stores.users import Users
from lambdas.common.stores.validations import Validations

__all__ = ["Store", "client_for", "client_kwargs", "store_for"]

T = TypeVar("T")


@dataclass(frozen=True)
class Store:
    """The Lambdas' stores over one set of clients."""

    clients: Clients
    validations: Validations
    parts: Parts
    files: Files
    answers: Answers
    events: Events
    users: Users
    queue: Queue
    batches: Batches

    @classmethod
    def of(cls, clients: Clients) -> Store:
        users = Users(clients)
        validations = Validations(clients, users)
        parts = Parts(clients)
        return cls(
            clients,
            validations,
            parts,
            Files(clients),
            Answers(clients),
            Events(clients, validations, parts),
            users,
            Queue(clients, users),
            Batches(clients),
        )

    @property
    def config(self) -> LambdaConfig:
        return self.clients.config

    @property
    def client(self) -> Any:
        """The low-level DynamoDB client (the governor's typed requests)."""
        return self.clients.client

    def drive(self, steps: Generator[Step, StepAnswer, T]) -> T:
        return self.clients.drive(steps)


def client_kwargs(config: LambdaConfig) -> dict[str, Any]:
    """What every boto3 client of the Lambdas is built with (region, endpoint, retries, pool)."""
    # Many invocations share these clients in the embedded AWS (one per thread): a bigger pool.
    kwargs: dict[str, Any] = {
        "region_name": config.aws_region,
        "config": Config(retries={"mode": "standard"}, max_pool_connections=50),
    }
    if config.aws_endpoint_url:
        kwargs.update(endpoint_url=config.aws_endpoint_url, aws_access_key_id="local", aws_secret_access_key="local")
    return kwargs


@lru_cache(maxsize=32)
def store_for(config: LambdaConfig) -> Store:
    """One set of clients per configuration, reused across warm invocations."""
    kwargs = client_kwargs(config)
    clients = Clients(
        config,
        boto3.resource("dynamodb", **kwargs),
        boto3.client("s3", **kwargs),
        boto3.client("dynamodb", **kwargs),
        boto3.client("stepfunctions", **kwargs),
    )
    return Store.of(clients)


@lru_cache(maxsize=32)
def client_for(config: LambdaConfig, service: str) -> Any:
    """A boto3 client of another service (Step Functions for the reconciler), as `store_for` builds its own."""
    return boto3.client(service, **client_kwargs(config))

"""What `ValidationService` needs of its collaborators: one `Protocol` per port.

Each port lists only the methods the service calls, with the signatures of the real classes
(their docstrings say what each call means; the real classes are the reference). The app wires
the AWS-backed classes (app/validations/dependencies.py); the unit tests wire in-memory fakes
(tests/support/fakes.py). mypy checks that both satisfy these.

| port          | real class                                  |
|---------------|---------------------------------------------|
| Store         | app.validations.store.ValidationStore       |
| Executions    | app.aws.stepfunctions.Executions            |
| Quotas        | app.quotas.service.QuotaService             |
| Users         | app.users.service.UserService               |
| Events        | app.events.service.EventLog                 |
| Notifications | app.webhooks.service.Notifications          |
| Rulesets      | app.rulesets.service.RulesetService         |
| Prices        | app.pricing.prices.PriceBook                |
| Spending      | app.pricing.spend.SpendStore                |
| LiveLimits    | app.pricing.limits.LiveLimits               |
| Uploads       | app.uploads.service.UploadService           |
| Models        | app.models.catalog.ModelCatalog             |
| Functions     | app.aws.functions.Functions                 |
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from app.identity.principal import OnLimit, Principal
    from app.quotas.service import Bucket
    from app.uploads.records import CompletedUpload
    from app.validations.intake import RulesetVersion
    from app.validations.records import Part, Validation
    from core.models import ModelEntry
    from core.pricing import PriceTable
    from core.quota import Outcome, Quota
    from core.spend import Budget


class Store(Protocol):
    """Validations, their parts (and file verdicts), their uploaded files, and Idempotency-Key claims.

    Conditional writes answer False (never raise) when their condition does not hold."""

    # the reuse cache
    async def reusable(self, digests: list[str]) -> set[str]: ...

    # validations
    async def get(self, validation_id: str) -> Validation | None: ...

    async def delete(self, validation_id: str) -> None: ...

    async def update(
        self,
        validation_id: str,
        sets: dict[str, Any],
        *,
        expect: dict[str, Any] | None = None,
        remove: tuple[str, ...] = (),
    ) -> bool: ...

    async def clear_end_marker(self, validation_id: str, run: int) -> bool: ...

    async def list_for_owner(
        self, owner: str, limit: int, start_key: dict[str, Any] | None
    ) -> tuple[list[Validation], dict[str, Any] | None]: ...

    async def queued_of(self, owner: str) -> list[str]: ...

    # parts and verdicts
    async def put_parts(self, parts: list[dict[str, Any]]) -> None: ...
    async def put_detail(self, record: dict[str, Any]) -> dict[str, Any]: ...

    async def parts_of_files(self, validation_id: str, first_file: int, last_file: int) -> list[Part]: ...

    async def verdicts_of_files(self, validation_id: str, first_file: int, last_file: int) -> dict[int, Part]: ...

    async def reset_failed_verdict(self, validation_id: str, file_index: int) -> bool: ...

    async def reset_failed_parts(self, validation_id: str, parts: list[tuple[str, int]]) -> int: ...

    async def delete_parts(self, validation_id: str, part_ids: list[str]) -> None: ...

    async def part_ids(self, validation_id: str) -> list[str]: ...

    # files
    async def files_exist(self, keys: list[str]) -> bool: ...

    async def put_files(self, objects: dict[str, bytes]) -> None: ...

    async def delete_files(self, keys: list[str]) -> None: ...

    # Idempotency-Key claims
    async def claim_idempotency_key(self, key: str, request_hash: str, validation_id: str) -> dict[str, Any] | None: ...

    async def take_over_idempotency_key(
        self, key: str, held: dict[str, Any], request_hash: str, validation_id: str
    ) -> bool: ...

    async def complete_idempotency_key(self, key: str, validation_id: str) -> None: ...

    async def release_idempotency_key(self, key: str) -> None: ...


class Executions(Protocol):
    """The validation state machine's executions (Step Functions)."""

    def arn_of(self, name: str) -> str: ...

    async def start(self, name: str, payload: dict[str, Any]) -> str: ...

    async def stop(self, execution_arn: str, cause: str) -> None: ...

    async def status(self, execution_arn: str) -> str | None: ...

    async def history(
        self, execution_arn: str, limit: int, token: str | None
    ) -> tuple[list[dict[str, Any]], str | None]: ...


class Quotas(Protocol):
    """Token buckets, running slots and the per-user queue (core/quota.py, core/queue.py)."""

    async def bucket(self, user_id: str) -> Bucket: ...

    async def admit(self, validation: Validation, quota: Quota | None, fifo: bool = True) -> Outcome: ...

    async def queue_ahead(self, owner: str, queue_key: str) -> list[int]: ...

    async def settle(self, validation: Validation, quota: Quota | None) -> bool: ...

    async def enqueue(self, record: dict[str, Any], quota: Quota | None) -> None: ...

    async def join_queue(self, validation: Validation, queue_key: str, quota: Quota | None) -> bool: ...

    async def leave_queue(self, validation_id: str, owner: str, quota: Quota | None) -> bool: ...

    async def release_head(self, owner: str) -> str | None: ...


class Users(Protocol):
    """Owners' limits and state, and the admin audit trail."""

    async def limits_of(self, user_id: str) -> tuple[Quota | None, OnLimit]: ...

    async def disabled(self, user_id: str) -> bool: ...

    async def audit(self, actor: str, action: str, target: str, old: Any, new: Any) -> None: ...


class Events(Protocol):
    """A validation's event log (what its event streams read)."""

    async def append_status(self, validation_id: str) -> int: ...

    async def purge(self, validation_id: str) -> int: ...


class Notifications(Protocol):
    """The owner's webhook notifications of a validation's end."""

    async def validation_ended(self, record: Mapping[str, Any], run: int) -> str | None: ...

    async def resend(self, record: Mapping[str, Any], now: float) -> str: ...


class Rulesets(Protocol):
    """Stored, versioned rule sets: a submission's `ruleset` reference resolved to one version."""

    async def resolve(self, principal: Principal, reference: str) -> RulesetVersion:
        """`name` (the latest version) or `name@3`: the caller's own set first, then a shared one.
        Raises NotFound (404) naming `ruleset` when no such set or version is readable."""
        ...


class Prices(Protocol):
    """The price table in use (core/pricing.py), cached like live configuration."""

    async def table(self) -> PriceTable: ...


class Spending(Protocol):
    """Spend budgets and history (core/spend.py)."""

    async def period(self, user_id: str, key: str) -> dict[str, Any] | None: ...

    async def reserve(self, user_id: str, key: str, amount: Decimal, budget: Budget, expires_at: int) -> bool: ...

    async def release(self, user_id: str, key: str, amount: Decimal) -> None: ...

    async def ratios(self, model: str) -> tuple[float, float] | None: ...


class LiveLimits(Protocol):
    """The deployment's live configuration the estimates read (SSM, cached)."""

    async def target_tpm(self) -> int | None: ...


class Uploads(Protocol):
    """Files uploaded straight to S3 that a validation may read."""

    async def take(self, principal: Principal, upload_ids: list[str]) -> list[CompletedUpload]: ...


class Models(Protocol):
    """The admin's list of models a validation may ask for."""

    async def resolve(self, name: str | None) -> ModelEntry: ...


class Functions(Protocol):
    """Lambda invocations: a cancel has the batch lane's Lambda cancel the open batches."""

    async def invoke(self, name: str, payload: dict[str, Any]) -> dict[str, Any]: ...

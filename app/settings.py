"""The one settings class. Nothing else in `app/` reads `os.environ`."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Mode(StrEnum):
    LOCAL = "local"  # embedded AWS (moto) in-process, or at `aws_endpoint_url`
    AWS = "aws"  # real AWS (or any endpoint), resources provisioned by Terraform


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    mode: Mode = Mode.LOCAL
    host: str = "127.0.0.1"
    port: int = 8000

    # AWS access. In local mode without an endpoint the embedded AWS is started in-process.
    aws_region: str = "us-east-1"
    aws_endpoint_url: str | None = Field(
        default=None,
        description="Send every AWS call here (a separately running embedded AWS, LocalStack).",
    )
    embedded_aws_port: int = Field(default=0, description="0 picks a free loopback port.")

    # Resource names. Defaults follow `name_prefix`; in aws mode take them from `terraform output`.
    name_prefix: str = "validation"
    validations_table: str | None = None
    chunks_table: str | None = None
    idempotency_table: str | None = None
    users_table: str | None = None
    api_keys_table: str | None = None
    buckets_table: str | None = None
    audit_table: str | None = None
    events_table: str | None = None
    governor_table: str | None = None
    reuse_table: str | None = None  # the validators' reuse cache (local provisioning names it for them)
    uploads_bucket: str | None = None
    state_machine_arn: str | None = None
    notify_state_machine_arn: str | None = None  # webhook notifications; default: `<prefix>-notify` beside it
    ssm_prefix: str = "/app"

    admin_api_key: SecretStr | None = None

    # The LLM. In local mode, with neither OPENAI_API_KEY nor OPENAI_BASE_URL set, the
    # OpenAI-compatible simulator is started (local/runtime.py); either one turns it off.
    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    openai_model: str = "gpt-4o-mini"
    openai_timeout_seconds: float = 60.0
    completion_max_tokens: int = Field(
        default=512, ge=16, description="Completion allowance of a model call (what rate limits charge)."
    )
    completion_max_tokens_cap: int = Field(
        default=4096,
        ge=16,
        description="A cut answer (finish_reason length) is asked again with twice the allowance, up to this.",
    )

    # Submission limits (RFC 9457 errors name the one exceeded).
    max_files: int = Field(default=100, ge=1)
    max_file_bytes: int = Field(default=5 * 1024 * 1024, ge=1)
    max_request_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    max_rules: int = Field(default=20, ge=1)
    max_rule_chars: int = Field(default=2000, ge=1)
    chunk_max_tokens: int = Field(
        default=1500, ge=50, description="Token budget of one part's text, and of a combine call's reports."
    )
    idempotency_ttl_hours: int = Field(default=24, ge=24)
    # A request's claim on its Idempotency-Key lasts this long before a retry may take it over
    # (a crashed request's claim then expires quickly instead of answering 409 for a day).
    idempotency_claim_seconds: float = Field(default=60.0, gt=0)

    # Quotas: defaults for users created without their own (POST /admin/users).
    default_capacity_tokens: int = Field(default=1_000_000, ge=1)
    default_refill_tokens_per_minute: int = Field(default=200_000, ge=1)
    default_max_running: int = Field(default=5, ge=1)
    default_on_limit: Literal["queue", "reject"] = "queue"
    default_max_queued: int = Field(default=100, ge=1, description="Validations a user may have queued at once.")
    # The queue's shortest timed wait for a user's token bucket to refill (core/queue.py; tests use 1 s).
    queue_min_wait_seconds: int = Field(default=2, ge=1)

    # Retention: every record expires this long after its validation was created (DynamoDB TTL),
    # as the uploads do (S3 lifecycle, Terraform's upload_expiration_days); the audit trail longer.
    retention_days: float = Field(default=30, gt=0)
    audit_retention_days: float = Field(default=365, gt=0)

    # The reconciler (lambdas/reconcile): a validation without a live execution is ended once its
    # run was queued this long ago; locally the embedded runtime runs it every interval (0 = never).
    reconcile_grace_seconds: float = Field(default=120.0, ge=0)
    reconcile_interval_seconds: float = Field(default=60.0, ge=0)

    # DELETE waits this long for Step Functions to confirm the stop before answering CANCELLING.
    cancel_settle_seconds: float = Field(default=5.0, ge=0)

    # Server-sent events.
    sse_heartbeat_seconds: float = Field(default=15.0, gt=0)
    sse_poll_seconds: float = Field(default=0.5, gt=0, description="How often one feed reads a validation's event log.")
    sse_gap_wait_seconds: float = Field(default=5.0, ge=0)
    sse_retry_millis: int = Field(default=2000, ge=0)
    # Stream tokens (app/stream_tokens): `?token=` opens one validation's events (EventSource sends no header).
    stream_tokens_table: str | None = None
    stream_token_seconds: float = Field(
        default=300.0, gt=0, le=3600, description="How long a stream token opens streams."
    )

    # Step Functions retry timing, templated into the ASL. Tests use short intervals.
    sfn_retry_interval_seconds: int = Field(default=2, ge=1)
    sfn_retry_max_attempts: int = Field(default=6, ge=0)
    sfn_retry_max_delay_seconds: int = Field(default=30, ge=1)

    # The TPM governor (issue 6). The "minute" is scaled down in benchmarks, like the simulator's.
    governor_window_seconds: float = Field(default=60.0, gt=0, description="The window target_tpm is per.")
    lease_seconds: float = Field(
        default=90.0,
        gt=0,
        description="A dead validator's slot and unused tokens come back after this; "
        "must exceed openai_timeout_seconds.",
    )
    config_cache_seconds: float = Field(default=5.0, ge=0, description="How long Lambdas and the API keep SSM values.")
    map_concurrency_ceiling: int = Field(
        default=10, ge=1, le=40, description="Raising max-parallelism live reaches up to this on running validations."
    )

    # Webhooks (app/webhooks, lambdas/notify, statemachine/notify.asl.json). Targets on loopback,
    # private, link-local, multicast or reserved addresses, and plain http://, are refused unless
    # allowed; unset, both are allowed in local mode and refused in aws mode.
    webhooks_table: str | None = None
    webhook_secrets_table: str | None = None
    webhook_deliveries_table: str | None = None
    webhook_allow_private: bool | None = None
    webhook_allow_http: bool | None = None
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, description="One delivery attempt's HTTP timeout.")
    # The notify state machine's Retry (templated into its ASL): 60 s doubling up to 3 h, 15 retries:
    # 16 attempts over about 25 h. Tests use 1 s.
    webhook_retry_interval_seconds: int = Field(default=60, ge=1)
    webhook_retry_max_attempts: int = Field(default=15, ge=0)
    webhook_retry_max_delay_seconds: int = Field(default=10_800, ge=1)

    # Health checks must not hang a load balancer's probe.
    readiness_timeout_seconds: float = 3.0

    # Operating it (issue 17): logs, and Prometheus metrics on their own listener.
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", description="auto: JSON lines, or text when stderr is a terminal."
    )
    metrics_port: int = Field(
        default=9464, ge=0, le=65535, description="The /metrics listener (never the API's port); 0 picks a free port."
    )
    metrics_cache_seconds: float = Field(
        default=10.0, ge=0, description="How long /metrics reuses the DynamoDB reads behind its state gauges."
    )

    # Hostile input and hostile clients (issue 14). Counters are per API process.
    max_body_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Request body limit of every route but POST /validations."
    )
    max_json_depth: int = Field(default=32, ge=4, description="Nesting beyond this in a JSON body is a 400.")
    max_streams: int = Field(default=20, ge=1, description="Open event streams per user (per API process).")
    max_streams_total: int = Field(default=2000, ge=1, description="Open event streams in all (per API process).")
    auth_failures_per_minute: int = Field(
        default=20, ge=1, description="Bad API keys a client address may send per minute before 429 (per process)."
    )
    readiness_cache_seconds: float = Field(default=1.0, ge=0, description="How long /readyz reuses its AWS checks.")
    plan_concurrency: int = Field(default=2, ge=1, description="Submissions split and tokenized at once (threads).")

    @model_validator(mode="after")
    def _cross_check(self) -> Settings:
        """Settings that are only valid together, checked once at load (not at the first call)."""
        problems = []
        if self.mode is Mode.AWS and not self.state_machine_arn:
            problems.append("MODE=aws requires STATE_MACHINE_ARN (see `terraform output api_environment`)")
        # A lease shorter than one model call would hand a live validator's slot to another
        # (infra/terraform/lambda.tf checks the same).
        if self.lease_seconds <= self.openai_timeout_seconds:
            problems.append(
                f"LEASE_SECONDS ({self.lease_seconds:g}) must exceed "
                f"OPENAI_TIMEOUT_SECONDS ({self.openai_timeout_seconds:g})"
            )
        if self.completion_max_tokens_cap < self.completion_max_tokens:
            problems.append(
                f"COMPLETION_MAX_TOKENS_CAP ({self.completion_max_tokens_cap}) must be at least "
                f"COMPLETION_MAX_TOKENS ({self.completion_max_tokens})"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def table(self, logical: str) -> str:
        explicit = getattr(self, f"{logical}_table", None)
        return explicit or f"{self.name_prefix}-{logical}"

    @property
    def bucket(self) -> str:
        return self.uploads_bucket or f"{self.name_prefix}-uploads"

    @property
    def reconcile_function(self) -> str:
        """The reconciler's Lambda (`POST /admin/reconcile` invokes it)."""
        return f"{self.name_prefix}-reconcile"

    @property
    def state_machine_name(self) -> str:
        return f"{self.name_prefix}-validation"

    @property
    def notify_state_machine_name(self) -> str:
        return f"{self.name_prefix}-notify"

    @property
    def notify_machine_arn(self) -> str | None:
        """The notify state machine: as configured, else named `<prefix>-notify` beside the validation one."""
        if self.notify_state_machine_arn or not self.state_machine_arn:
            return self.notify_state_machine_arn
        return f"{self.state_machine_arn.rsplit(':', 1)[0]}:{self.notify_state_machine_name}"

    @property
    def webhooks_private_allowed(self) -> bool:
        return self.mode is Mode.LOCAL if self.webhook_allow_private is None else self.webhook_allow_private

    @property
    def webhooks_http_allowed(self) -> bool:
        return self.mode is Mode.LOCAL if self.webhook_allow_http is None else self.webhook_allow_http

    @property
    def embedded(self) -> bool:
        """True when this process must start the embedded AWS itself."""
        return self.mode is Mode.LOCAL and self.aws_endpoint_url is None

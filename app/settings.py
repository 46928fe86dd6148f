"""The one settings class. Nothing else in `app/` reads `os.environ`."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core import pricing

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Mode(StrEnum):
    """Where the AWS side runs."""

    LOCAL = "local"  # embedded AWS (moto) in-process, or at `aws_endpoint_url`
    AWS = "aws"  # real AWS (or any endpoint), resources provisioned by Terraform


def _table(logical: str) -> str:
    """The description of a table-name setting."""
    return f"Explicit name of the `{logical}` table (aws mode: from `terraform output`); default `<prefix>-{logical}`."


class Settings(BaseSettings):
    """Every setting of the API, read from the environment (or `.env`) by its upper-case name.

    The docs' settings reference (docs/operating/settings.md) is generated from these fields:
    every field needs a `description`.
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    mode: Mode = Field(
        default=Mode.LOCAL,
        description="`local` (the embedded AWS, or the one at `AWS_ENDPOINT_URL`) or `aws` "
        "(resources provisioned by Terraform; credentials from the standard AWS chain).",
    )
    host: str = Field(default="127.0.0.1", description="The address the API listens on.")
    port: int = Field(default=8000, description="The API's port.")

    # AWS access. In local mode without an endpoint the embedded AWS is started in-process.
    aws_region: str = Field(default="us-east-1", description="The AWS region.")
    aws_endpoint_url: str | None = Field(
        default=None,
        description="Send every AWS call here (a separately running embedded AWS, LocalStack). "
        "Unset in local mode: the embedded AWS is started in-process.",
    )
    embedded_aws_port: int = Field(
        default=0, description="Port of the in-process embedded AWS (local mode); 0 picks a free loopback port."
    )

    # Resource names. Defaults follow `name_prefix`; in aws mode take them from `terraform output`.
    name_prefix: str = Field(
        default="validation",
        description="Resource names default to `<prefix>-<table>`, `<prefix>-uploads`, `<prefix>-validation`, …",
    )
    validations_table: str | None = Field(default=None, description=_table("validations"))
    parts_table: str | None = Field(default=None, description=_table("parts") + " Holds the parts.")
    idempotency_table: str | None = Field(default=None, description=_table("idempotency"))
    users_table: str | None = Field(default=None, description=_table("users"))
    api_keys_table: str | None = Field(default=None, description=_table("api_keys"))
    buckets_table: str | None = Field(default=None, description=_table("buckets") + " The users' token buckets.")
    spend_table: str | None = Field(
        default=None, description=_table("spend") + " What users spent per UTC day and month; budget reservations."
    )
    audit_table: str | None = Field(default=None, description=_table("audit"))
    events_table: str | None = Field(default=None, description=_table("events"))
    governor_table: str | None = Field(
        default=None, description=_table("governor") + " The TPM governor's budget, leases, usage and shares."
    )
    reuse_table: str | None = Field(
        default=None,
        description=_table("reuse") + " The validators' reuse cache (local provisioning names it for them).",
    )
    rulesets_table: str | None = Field(
        default=None, description=_table("rulesets") + " Stored rule sets, their versions and test reports."
    )
    uploads_table: str | None = Field(
        default=None, description=_table("uploads") + " Uploads straight to S3 (`POST /uploads`), one item each."
    )
    uploads_bucket: str | None = Field(
        default=None,
        description="Explicit name of the uploads bucket (aws mode: from `terraform output`); "
        "default `<prefix>-uploads`.",
    )
    state_machine_arn: str | None = Field(
        default=None,
        description="The validation state machine (aws mode: required, from `terraform output`).",
    )
    notify_state_machine_arn: str | None = Field(
        default=None,
        description="The webhook notifications' state machine; default: `<prefix>-notify` beside `STATE_MACHINE_ARN`.",
    )
    ssm_prefix: str = Field(
        default="/app",
        description="Where the live SSM parameters (`max-parallelism`, `target-tpm`, `target-rpm`, "
        "`throttle-threshold`, `fair-share`, `models`) and the model key's SecureString live.",
    )

    admin_api_key: SecretStr | None = Field(
        default=None,
        description="The bootstrap admin's key (not rate limited). In local mode one is generated and printed "
        "at start when unset; a key you set is never echoed.",
    )

    # The LLM. In local mode, with neither OPENAI_API_KEY nor OPENAI_BASE_URL set, the
    # OpenAI-compatible simulator is started (local/runtime.py); either one turns it off.
    openai_base_url: str | None = Field(
        default=None,
        description="The model server (any OpenAI-compatible one); unset: api.openai.com. In local mode, "
        "setting this or `OPENAI_API_KEY` turns the simulator off.",
    )
    openai_api_key: SecretStr | None = Field(
        default=None,
        description="The model server's key. It reaches the Lambdas as an SSM SecureString, never in their "
        "environment. In local mode without it (and without `OPENAI_BASE_URL`) the simulator is started.",
    )
    openai_model: str = Field(
        default="gpt-4o-mini",
        description="The deployment's model: the only one offered until an admin sets a list "
        "(`PATCH /admin/models`); its governor budget keeps the unsuffixed keys (`pk=budget`).",
    )
    price_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Prices on top of the defaults (docs: Cost): JSON `{model: {tier: {input, cached_input, "
        "output}}}` in USD per 1M tokens; `{}` for a model removes its price. `PATCH /admin/prices` overrides both.",
    )
    completion_ratio_prior: tuple[float, float] = Field(
        default=(0.08, 0.25),
        description="Completion ÷ prompt tokens (p50, p90) that estimates assume for a model with no ended "
        "validation yet; afterwards the deployment's own history is used.",
    )
    openai_timeout_seconds: float = Field(
        default=60.0, description="One model call's timeout; `LEASE_SECONDS` must exceed it."
    )
    flex_timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        description="A flex call's timeout (flex answers slower; default `OPENAI_TIMEOUT_SECONDS`); "
        "`LEASE_SECONDS` must exceed it too, so raise both for minutes-long flex calls.",
    )
    flex_retry_base_seconds: float = Field(
        default=2.0,
        gt=0,
        description='The first wait after a flex "resource unavailable"; it doubles (jittered) up to '
        "`FLEX_RETRY_MAX_SECONDS` until the validation's `flex_deadline_seconds`.",
    )
    flex_retry_max_seconds: float = Field(default=60.0, gt=0, description="The longest wait between flex retries.")
    # The batch lane (lambdas/batch; docs: Cost, "Lanes").
    batch_max_requests: int = Field(
        default=50_000, ge=1, le=50_000, description="Requests per batch at most (OpenAI: 50,000); more are split."
    )
    batch_max_bytes: int = Field(
        default=200_000_000,
        ge=1_000,
        le=200_000_000,
        description="Bytes per batch input file at most (OpenAI: 200 MB).",
    )
    batch_queue_limit_tokens: int = Field(
        default=2_000_000,
        ge=1_000,
        description="Each model's batch queue limit: prompt tokens in batches not ended, over every validation "
        "(your organization's enqueued-token limit for the model); a submission past it waits.",
    )
    batch_poll_first_seconds: int = Field(
        default=30, ge=1, description="The first wait before a batch is polled (templated into the ASL)."
    )
    batch_poll_max_seconds: int = Field(
        default=600, ge=1, description="The poll spacing doubles up to this (templated into the ASL)."
    )
    batch_cancel_wait_seconds: float = Field(
        default=30.0,
        ge=0,
        le=240,
        description="How long a cancel waits for its cancelled batches to end, to keep what they answered.",
    )
    completion_max_tokens: int = Field(
        default=512,
        ge=16,
        description="Completion allowance of a model call (also what the rate limit charges).",
    )
    completion_max_tokens_cap: int = Field(
        default=4096,
        ge=16,
        description="A cut answer (`finish_reason: length`) is asked again with twice the allowance, up to this.",
    )

    # Submission limits (RFC 9457 errors name the one exceeded).
    max_files: int = Field(default=100, ge=1, description="Files in one submission (413 `max_files`).")
    max_file_bytes: int = Field(
        default=5 * 1024 * 1024, ge=1, description="Bytes of one file, 5 MiB (413 `max_file_bytes`)."
    )
    max_request_bytes: int = Field(
        default=50 * 1024 * 1024,
        ge=1,
        description="Body of `POST /validations`, 50 MiB (plus 1 MiB of multipart framing; 413 `max_request_bytes`).",
    )
    # Uploads straight to S3 (app/uploads): S3 takes one PUT of up to 5 GiB, and multipart
    # uploads of parts from 5 MiB to 5 GiB each.
    max_upload_bytes: int = Field(
        default=5 * 1024**3,
        ge=1,
        le=500 * 5 * 1024**3,
        description="Bytes of one uploaded file (`POST /uploads`), 5 GiB (413 `max_upload_bytes`); "
        "apart from `MAX_FILE_BYTES`, which holds for files sent inline.",
    )
    upload_multipart_threshold_bytes: int = Field(
        default=64 * 1024**2,
        ge=1,
        le=5 * 1024**3,
        description="A file of up to this many bytes is uploaded with one presigned PUT; a larger one with a "
        "multipart upload (a presigned URL per part).",
    )
    upload_part_bytes: int = Field(
        default=64 * 1024**2,
        ge=5 * 1024**2,
        le=5 * 1024**3,
        description="The part size of multipart uploads (S3: 5 MiB to 5 GiB); larger for a file that would "
        "otherwise need more than 500 parts.",
    )
    upload_ttl_seconds: int = Field(
        default=3600,
        ge=60,
        le=7 * 86_400,
        description="An upload must be made, and used, within this; its URLs expire with it (410 after). "
        "A presigned URL also ends when the credentials that signed it do.",
    )
    max_rules: int = Field(default=20, ge=1, description="Rules in one submission (422).")
    max_rule_chars: int = Field(default=2000, ge=1, description="Characters of one rule (422).")
    ruleset_max_rules: int = Field(
        default=20, ge=1, description="Rules in one version of a stored rule set (422 `ruleset_max_rules`)."
    )
    ruleset_max_examples: int = Field(
        default=10, ge=0, description="Examples of one rule of a stored rule set (422 `ruleset_max_examples`)."
    )
    ruleset_max_example_bytes: int = Field(
        default=2048,
        ge=1,
        description="UTF-8 bytes of one example's text (422 `ruleset_max_example_bytes`); every body but "
        "`POST /validations` is also held to `MAX_BODY_BYTES`.",
    )
    part_max_tokens: int = Field(
        default=1500, ge=50, description="Token budget of one part's text, and of a combine call's reports."
    )
    idempotency_ttl_hours: int = Field(
        default=24, ge=24, description="How long an `Idempotency-Key` replays the first answer."
    )
    idempotency_claim_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A request's claim on its `Idempotency-Key` lasts this long before another request may take "
        "it over (so a crashed request's claim expires quickly instead of answering 409 for a day).",
    )

    # Quotas: defaults for users created without their own (POST /admin/users).
    default_capacity_tokens: int = Field(
        default=1_000_000, ge=1, description="Token bucket capacity of users created without a quota."
    )
    default_refill_tokens_per_minute: int = Field(
        default=200_000, ge=1, description="Token bucket refill of users created without a quota."
    )
    default_max_running: int = Field(
        default=5, ge=1, description="Validations running at once for users created without a quota."
    )
    default_on_limit: Literal["queue", "reject"] = Field(
        default="queue", description="What a submission over the limit gets, for users created without a policy."
    )
    default_max_queued: int = Field(
        default=100,
        ge=1,
        description="Validations a user may have queued at once when their quota has no `max_queued` "
        "(the Lambdas read it too: Terraform `default_max_queued`).",
    )
    queue_min_wait_seconds: int = Field(
        default=2,
        ge=1,
        description="The queue's shortest timed wait for a user's token bucket to refill (a running slot is "
        "waited for parked, without a timer; tests use 1 s).",
    )

    # Retention: every record expires this long after its validation was created (DynamoDB TTL),
    # as the uploads do (S3 lifecycle, Terraform's upload_expiration_days); the audit trail longer.
    retention_days: float = Field(
        default=30,
        gt=0,
        description="Validations, parts, events, reuse answers and deliveries expire this long after they were "
        "written (DynamoDB TTL `expires_at`), as the uploads do (Terraform: `upload_expiration_days`).",
    )
    audit_retention_days: float = Field(default=365, gt=0, description="How long audit entries are kept.")

    # The reconciler (lambdas/reconcile): a validation without a live execution is ended once its
    # run was queued this long ago; locally the embedded runtime runs it every interval (0 = never).
    reconcile_grace_seconds: float = Field(
        default=120.0,
        ge=0,
        description="The reconciler leaves a validation without a live execution (or an unannounced end) alone "
        "this long after its run was queued.",
    )
    reconcile_interval_seconds: float = Field(
        default=60.0,
        ge=0,
        description="Local mode runs the reconciler this often (0 = never; on AWS: Terraform's `reconcile_schedule`).",
    )

    cancel_settle_seconds: float = Field(
        default=5.0,
        ge=0,
        description="DELETE waits this long for Step Functions to confirm the stop before answering CANCELLING.",
    )

    # Server-sent events.
    sse_heartbeat_seconds: float = Field(
        default=15.0, gt=0, description="Heartbeat comments on an open event stream this often."
    )
    sse_poll_seconds: float = Field(default=0.5, gt=0, description="How often one feed reads a validation's event log.")
    sse_gap_wait_seconds: float = Field(
        default=5.0, ge=0, description="A missing event number is waited for this long, then skipped."
    )
    sse_retry_millis: int = Field(default=2000, ge=0, description="The `retry:` delay sent to event stream clients.")
    stream_tokens_table: str | None = Field(
        default=None, description=_table("stream_tokens") + " Stream tokens open one validation's events."
    )
    stream_token_seconds: float = Field(
        default=300.0, gt=0, le=3600, description="How long a stream token opens streams."
    )

    # Step Functions retry timing, templated into the ASL. Tests use short intervals.
    sfn_retry_interval_seconds: int = Field(
        default=2, ge=1, description="Validator retries: first interval (templated into the ASL; tests use 1 s)."
    )
    sfn_retry_max_attempts: int = Field(default=6, ge=0, description="Validator retries: attempts.")
    sfn_retry_max_delay_seconds: int = Field(default=30, ge=1, description="Validator retries: longest delay.")

    # The TPM governor. The "minute" is scaled down in benchmarks, like the simulator's.
    governor_window_seconds: float = Field(
        default=60.0,
        gt=0,
        description="The window `target-tpm` is per (benchmarks scale it down with the simulator's).",
    )
    lease_seconds: float = Field(
        default=90.0,
        gt=0,
        description="A dead validator's slot and unused tokens come back after this; "
        "must exceed `OPENAI_TIMEOUT_SECONDS`.",
    )
    config_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long Lambdas keep the live values (mirrored from SSM on the governor's item) and the "
        "API keeps SSM values: a PATCH reaches running validations within this plus one call.",
    )
    governor_shards: int = Field(
        default=8,
        ge=1,
        le=64,
        description="The most items each model's governor budget is split over (each holds its part of the "
        "rate; a validator borrows from another when its own has no place soon), so no budget item takes "
        "more than DynamoDB's 1,000 writes a second per item. 8 holds OpenAI's top tier (500 calls/s); "
        "a budget too small for every shard to hold 32 calls of 8,192 tokens in its burst uses fewer. "
        "1: one item. The Lambdas read it as `GOVERNOR_SHARDS`.",
    )
    map_concurrency_ceiling: int = Field(
        default=10, ge=1, le=40, description="Raising `max-parallelism` live reaches up to this on running validations."
    )
    inline_map_max_items: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="Items the inline parts' Map may have (an item spending every retry writes ~100 of the "
        "execution's 25,000 history events); a validation with more is validated by a Distributed Map.",
    )
    plan_range_bytes: int = Field(
        default=8 * 1024**2,
        ge=4096,
        description="The plan step reads an uploaded text, JSON Lines, CSV or TSV file in ranges of this many "
        "bytes (its memory is about a range), over as many invocations as it takes.",
    )
    plan_invocation_bytes: int = Field(
        default=2 * 1024**3,
        ge=4096,
        description="Bytes one plan step invocation reads before it hands its cursor to the next; it also stops "
        "when its time runs short.",
    )
    plan_max_line_bytes: int = Field(
        default=16 * 1024**2,
        ge=4096,
        description="The longest line an uploaded line-oriented file may hold (a range grows to hold a line); "
        "a longer one refuses the file (`line_too_long`).",
    )
    plan_whole_file_max_bytes: int = Field(
        default=256 * 1024**2,
        ge=1,
        description="JSON and Markdown uploads are planned whole, in the plan function's memory: up to this "
        "many bytes; a bigger one is refused (`too_large`).",
    )
    parts_per_item: int = Field(
        default=8,
        ge=1,
        description="Parts of one Map item per call it runs at once (rounds of ~3 s calls within the validator's "
        "120 s); a validation whose inline items hold more is validated by a Distributed Map with items this size "
        "per call a child runs at once.",
    )

    # Webhooks (app/webhooks, lambdas/notify, statemachine/notify.asl.json).
    webhooks_table: str | None = Field(default=None, description=_table("webhooks"))
    webhook_secrets_table: str | None = Field(default=None, description=_table("webhook_secrets"))
    webhook_deliveries_table: str | None = Field(default=None, description=_table("webhook_deliveries"))
    webhook_allow_private: bool | None = Field(
        default=None,
        description="Allow webhook targets on loopback, private, link-local, multicast or reserved addresses; "
        "unset: allowed in local mode, refused in aws mode.",
    )
    webhook_allow_http: bool | None = Field(
        default=None,
        description="Allow plain `http://` webhook URLs; unset: allowed in local mode, refused in aws mode.",
    )
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, description="One delivery attempt's HTTP timeout.")
    # The notify state machine's Retry (templated into its ASL): 60 s doubling up to 3 h, 15 retries:
    # 16 attempts over about 25 h. Tests use 1 s.
    webhook_retry_interval_seconds: int = Field(
        default=60,
        ge=1,
        description="The notify state machine's first retry interval, doubling (templated into its ASL; tests "
        "use 1 s). With the defaults: 16 attempts over about 25 h.",
    )
    webhook_retry_max_attempts: int = Field(default=15, ge=0, description="The notify state machine's retries.")
    webhook_retry_max_delay_seconds: int = Field(
        default=10_800, ge=1, description="The notify state machine's longest retry interval."
    )

    readiness_timeout_seconds: float = Field(
        default=3.0, description="`/readyz` gives up on its AWS checks after this (never hang a load balancer's probe)."
    )

    # Operating it: logs, and Prometheus metrics on their own listener.
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", description="`json` lines, or `text`; `auto`: JSON unless stderr is a terminal."
    )
    metrics_port: int = Field(
        default=9464,
        ge=0,
        le=65535,
        description="The Prometheus `/metrics` listener (on `HOST`, never the API's port); 0 picks a free port.",
    )
    metrics_cache_seconds: float = Field(
        default=10.0, ge=0, description="How long `/metrics` reuses the DynamoDB reads behind its state gauges."
    )

    # Hostile input and hostile clients. Counters are per API process.
    max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Request body limit of every route but `POST /validations`, 64 KiB (413 `max_body_bytes`).",
    )
    max_json_depth: int = Field(default=32, ge=4, description="Nesting beyond this in a JSON body is a 400.")
    max_streams: int = Field(default=20, ge=1, description="Open event streams per user (per API process).")
    max_streams_total: int = Field(default=2000, ge=1, description="Open event streams in all (per API process).")
    auth_failures_per_minute: int = Field(
        default=20, ge=1, description="Bad API keys a client address may send per minute before 429 (per process)."
    )
    readiness_cache_seconds: float = Field(
        default=1.0, ge=0, description="How long `/readyz` reuses its four AWS checks."
    )
    plan_concurrency: int = Field(
        default=2, ge=1, description="Submissions split and tokenized at once (worker threads, per API process)."
    )

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
        if self.flex_timeout_seconds is not None and self.lease_seconds <= self.flex_timeout_seconds:
            problems.append(
                f"LEASE_SECONDS ({self.lease_seconds:g}) must exceed "
                f"FLEX_TIMEOUT_SECONDS ({self.flex_timeout_seconds:g})"
            )
        if self.completion_max_tokens_cap < self.completion_max_tokens:
            problems.append(
                f"COMPLETION_MAX_TOKENS_CAP ({self.completion_max_tokens_cap}) must be at least "
                f"COMPLETION_MAX_TOKENS ({self.completion_max_tokens})"
            )
        try:
            pricing.merged(self.price_overrides)
        except ValueError as exc:
            problems.append(f"PRICE_OVERRIDES: {exc}")
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
    def batch_function(self) -> str:
        """The batch lane's Lambda (a cancel invokes it to cancel the open batches)."""
        return f"{self.name_prefix}-batch"

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

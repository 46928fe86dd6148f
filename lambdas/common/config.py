"""The Lambdas' settings, validated once per environment at load time."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from pydantic import BaseModel

from core import lambda_env


class LambdaConfig(BaseModel, frozen=True):
    validations_table: str
    parts_table: str
    uploads_bucket: str
    users_table: str = ""
    events_table: str = ""
    buckets_table: str = ""
    spend_table: str = ""  # per-user spend by UTC day and month, charged at settlement (core/spend.py)
    governor_table: str = ""
    reuse_table: str = ""  # part digest → verdict (core/prompt.part_digest); empty: no reuse
    # The TPM governor (core/governor.py).
    governor_window_seconds: float = 60.0
    lease_seconds: float = 90.0  # must exceed openai_timeout_seconds: a lease is renewed before each call
    config_cache_seconds: float = 5.0
    map_concurrency_ceiling: int = 10
    # The inline parts' Map (core/part_ranges.py): at most this many items (the parent's history:
    # ~100 events for an item that spends every retry, 25,000 per execution), each holding at most
    # `parts_per_item` parts per call it runs at once (rounds of ~3 s calls within validate_part's
    # 120 s); a validation past either bound is validated by a Distributed Map over ranges of
    # `parts_per_item` parts per call a child runs at once, read from S3.
    inline_map_max_items: int = 100
    parts_per_item: int = 8
    capacity_wait_seconds: float = 30.0  # wait this long for a slot or tokens, then let Step Functions retry
    governor_shards: int = 8  # the most items a model's budget is split over (core/governor.py)
    # The queue (core/queue.py): the shortest timed wait for the token bucket's refill.
    queue_min_wait_seconds: int = 1
    # max_queued of a quota stored without one (core/quota.Quota.of), as the API's DEFAULT_MAX_QUEUED.
    default_max_queued: int = 100
    ssm_prefix: str = "/app"
    aws_region: str = "us-east-1"
    aws_endpoint_url: str | None = None  # the embedded AWS; unset on AWS
    openai_base_url: str | None = None
    openai_api_key_parameter: str = ""  # the SSM SecureString holding the key (lambdas/common/model_key.py)
    openai_model: str = "gpt-4o-mini"
    openai_timeout_seconds: float = 60.0
    flex_timeout_seconds: float = 60.0  # a flex call's timeout (flex answers slower); below lease_seconds
    flex_retry_base_seconds: float = 2.0  # first wait after a flex "resource unavailable"; doubles, jittered
    flex_retry_max_seconds: float = 60.0
    # The batch lane (lambdas/batch, docs: Cost, "Lanes"): what one batch may hold (OpenAI: 50,000
    # requests, 200 MB), each model's batch queue limit (enqueued prompt tokens), and how long a
    # cancel waits for its cancelled batches to hand back what they answered.
    batch_max_requests: int = 50_000
    batch_max_bytes: int = 200_000_000
    batch_queue_limit_tokens: int = 2_000_000
    batch_cancel_wait_seconds: float = 30.0
    completion_max_tokens: int = 512
    completion_max_tokens_cap: int = 4096  # a cut answer is asked again with twice the allowance, up to this
    part_max_tokens: int = 1500  # a combine call's reports stay within this, as a part's text does
    # Planning an uploaded file (lambdas/plan_files): line-oriented files are read in ranges of
    # this many bytes, an invocation reading at most `plan_invocation_bytes` before it hands on a
    # cursor; a line may be up to `plan_max_line_bytes` (a range grows to hold it). JSON and
    # Markdown files are planned whole, in memory, up to `plan_whole_file_max_bytes`.
    plan_range_bytes: int = 8 * 1024 * 1024
    plan_invocation_bytes: int = 2 * 1024 * 1024 * 1024
    plan_max_line_bytes: int = 16 * 1024 * 1024
    plan_whole_file_max_bytes: int = 256 * 1024 * 1024
    # Records the Lambdas create (combine nodes, file verdicts) expire this long after (DynamoDB TTL).
    retention_days: float = 30.0
    # The reconciler leaves a validation without an execution alone this long after its run was
    # queued: its writer may still be between storing it and StartExecution.
    reconcile_grace_seconds: float = 120.0
    # Leave this much of the invocation's time unused: a batch stops early and is retried.
    reserve_millis: int = 15_000
    # Webhooks (core/webhooks.py): who may start a notification (Finalize, the reconciler) and
    # what the notify Lambda may call. Empty names: no webhooks in this deployment.
    webhooks_table: str = ""
    webhook_secrets_table: str = ""  # read by the notify Lambda only (resources.json `uses`)
    webhook_deliveries_table: str = ""
    notify_state_machine_arn: str = ""
    webhook_allow_private: bool = False  # loopback, private, link-local, ... targets (local mode: on)
    webhook_allow_http: bool = False  # plain http:// targets (local mode: on); else https only
    webhook_timeout_seconds: float = 10.0


@lru_cache(maxsize=32)
def _load(items: tuple[tuple[str, str], ...]) -> LambdaConfig:
    environ = dict(items)
    fields = {name: environ[name.upper()] for name in LambdaConfig.model_fields if environ.get(name.upper())}
    if "aws_region" not in fields and environ.get("AWS_DEFAULT_REGION"):
        fields["aws_region"] = environ["AWS_DEFAULT_REGION"]
    return LambdaConfig.model_validate(fields)  # strings from the environment, coerced by pydantic


def config_from_environ(environ: Mapping[str, str]) -> LambdaConfig:
    """From environment variables (upper-case field names; AWS_DEFAULT_REGION for the region);
    cached per distinct environment."""
    wanted = {k: v for k, v in environ.items() if k.lower() in LambdaConfig.model_fields or k == "AWS_DEFAULT_REGION"}
    return _load(tuple(sorted(wanted.items())))


def load_config() -> LambdaConfig:
    """From the function's environment (core.lambda_env)."""
    return config_from_environ(lambda_env.current())

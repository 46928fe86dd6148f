# One function per entry of resources.json "functions", all from the same two zips of
# `make lambdas`: code.zip (lambdas/ + core/) and a layer with the pinned dependencies.

locals {
  build_dir = coalesce(var.lambda_build_dir, "${path.module}/../../build/lambda")

  function_names = { for name, _ in local.functions : name => "${var.name_prefix}-${replace(name, "_", "-")}" }

  # Settings the Lambdas and the API share, under the environment names both read
  # (lambdas/common/config.py, app/settings.py).
  shared_settings = merge(
    { for table, _ in local.tables : "${upper(table)}_TABLE" => aws_dynamodb_table.this[table].name },
    {
      UPLOADS_BUCKET            = aws_s3_bucket.uploads.id
      SSM_PREFIX                = var.ssm_prefix
      AWS_ENDPOINT_URL          = var.aws_endpoint_url
      OPENAI_MODEL              = var.openai_model
      COMPLETION_MAX_TOKENS     = tostring(var.completion_max_tokens)
      COMPLETION_MAX_TOKENS_CAP = tostring(var.completion_max_tokens_cap)
      PART_MAX_TOKENS           = tostring(var.part_max_tokens)
      QUEUE_MIN_WAIT_SECONDS    = tostring(var.queue_min_wait_seconds)
      DEFAULT_MAX_QUEUED        = tostring(var.default_max_queued)
      GOVERNOR_WINDOW_SECONDS   = tostring(var.governor_window_seconds)
      LEASE_SECONDS             = tostring(var.lease_seconds)
      GOVERNOR_SHARDS           = tostring(var.governor_shards)
      CONFIG_CACHE_SECONDS      = tostring(var.config_cache_seconds)
      MAP_CONCURRENCY_CEILING   = tostring(var.map_concurrency_ceiling)
      INLINE_MAP_MAX_ITEMS      = tostring(var.inline_map_max_items)
      PARTS_PER_ITEM            = tostring(var.parts_per_item)
      PLAN_RANGE_BYTES          = tostring(var.plan_range_bytes)
      PLAN_INVOCATION_BYTES     = tostring(var.plan_invocation_bytes)
      PLAN_MAX_LINE_BYTES       = tostring(var.plan_max_line_bytes)
      PLAN_WHOLE_FILE_MAX_BYTES = tostring(var.plan_whole_file_max_bytes)
      RECONCILE_GRACE_SECONDS   = tostring(var.reconcile_grace_seconds)
      RETENTION_DAYS            = tostring(var.upload_expiration_days) # records expire with their uploads
      NOTIFY_STATE_MACHINE_ARN  = local.notify_machine_arn
      WEBHOOK_ALLOW_PRIVATE     = var.webhook_allow_private ? "true" : "" # unset: refused (aws mode)
      WEBHOOK_ALLOW_HTTP        = var.webhook_allow_http ? "true" : ""
      WEBHOOK_TIMEOUT_SECONDS   = tostring(var.webhook_timeout_seconds)
    },
  )

  # What every handler reads; local provisioning sets the same names
  # (Provisioner.function_environment). Empty values are left out.
  lambda_environment = { for key, value in merge(local.shared_settings, {
    OPENAI_BASE_URL        = var.openai_base_url
    OPENAI_TIMEOUT_SECONDS = tostring(var.openai_timeout_seconds)
    # The flex lane (lanes.tf): a flex call's timeout, and the waits after "resource unavailable".
    FLEX_TIMEOUT_SECONDS    = tostring(coalesce(var.flex_timeout_seconds, var.openai_timeout_seconds))
    FLEX_RETRY_BASE_SECONDS = tostring(var.flex_retry_base_seconds)
    FLEX_RETRY_MAX_SECONDS  = tostring(var.flex_retry_max_seconds)
    # The batch lane (lanes.tf): what one batch holds, each model's queue limit, a cancel's wait.
    BATCH_MAX_REQUESTS        = tostring(var.batch_max_requests)
    BATCH_MAX_BYTES           = tostring(var.batch_max_bytes)
    BATCH_QUEUE_LIMIT_TOKENS  = tostring(var.batch_queue_limit_tokens)
    BATCH_CANCEL_WAIT_SECONDS = tostring(var.batch_cancel_wait_seconds)
    # The key's parameter, never the key (secrets.tf).
    OPENAI_API_KEY_PARAMETER = local.openai_key_count == 1 ? local.openai_key_parameter_name : ""
    # Powertools (lambdas/common/observability.py): log `service` and the metrics' dimension, and their namespace.
    POWERTOOLS_SERVICE_NAME      = var.name_prefix
    POWERTOOLS_METRICS_NAMESPACE = var.metrics_namespace
  }) : key => value if value != "" }

  # The API's whole environment in aws mode (output api_environment); ADMIN_API_KEY is a
  # secret and set apart.
  api_environment = { for key, value in merge(local.shared_settings, {
    MODE                        = "aws"
    AWS_REGION                  = var.region
    NAME_PREFIX                 = var.name_prefix
    STATE_MACHINE_ARN           = aws_sfn_state_machine.validation.arn
    SFN_RETRY_INTERVAL_SECONDS  = tostring(var.retry_interval_seconds)
    SFN_RETRY_MAX_ATTEMPTS      = tostring(var.retry_max_attempts)
    SFN_RETRY_MAX_DELAY_SECONDS = tostring(var.retry_max_delay_seconds)
    BATCH_POLL_FIRST_SECONDS    = tostring(var.batch_poll_first_seconds)
    BATCH_POLL_MAX_SECONDS      = tostring(var.batch_poll_max_seconds)
    BATCH_CANCEL_WAIT_SECONDS   = tostring(var.batch_cancel_wait_seconds)
  }) : key => value if value != "" }
}

resource "aws_lambda_layer_version" "dependencies" {
  layer_name               = "${var.name_prefix}-dependencies"
  description              = "Third-party packages of the validation Lambdas, pinned by requirements.lock"
  filename                 = "${local.build_dir}/dependencies.zip"
  source_code_hash         = filebase64sha256("${local.build_dir}/dependencies.zip")
  compatible_runtimes      = [var.lambda_runtime]
  compatible_architectures = [var.lambda_architecture]
}

resource "aws_cloudwatch_log_group" "function" {
  #checkov:skip=CKV_AWS_158:Logs hold ids and error messages, no file content; CloudWatch encrypts them with its own key.
  #checkov:skip=CKV_AWS_338:Operational logs; retention is a variable (log_retention_days), 30 days by default to bound cost.
  for_each = local.function_names

  name              = "/aws/lambda/${each.value}"
  retention_in_days = var.log_retention_days
}

resource "aws_lambda_function" "this" {
  #checkov:skip=CKV_AWS_116:Invoked synchronously by Step Functions, whose Retry/Catch handle failures (RecordPartFailure); a DLQ only applies to asynchronous invocations.
  #checkov:skip=CKV_AWS_117:The functions reach only public AWS APIs and the model server; a VPC would add NAT cost and nothing to protect.
  #checkov:skip=CKV_AWS_272:Code comes from this repository's reproducible build; code signing needs an AWS Signer profile per deployment.
  #checkov:skip=CKV_AWS_173:Environment variables are encrypted at rest with the Lambda-managed key; set kms_key_arn for a customer-managed key.
  #checkov:skip=CKV_AWS_115:Concurrency is bounded by the state machine's Map (max-parallelism); reserved concurrency is per function in lambda_reserved_concurrency.
  for_each = local.functions

  function_name    = local.function_names[each.key]
  description      = "Step Functions task ${each.key}"
  role             = aws_iam_role.function[each.key].arn
  runtime          = var.lambda_runtime
  architectures    = [var.lambda_architecture]
  handler          = each.value.handler
  filename         = "${local.build_dir}/code.zip"
  source_code_hash = filebase64sha256("${local.build_dir}/code.zip")
  layers           = [aws_lambda_layer_version.dependencies.arn]
  timeout          = lookup(var.lambda_timeouts, each.key, each.value.timeout)
  memory_size      = lookup(var.lambda_memory, each.key, each.value.memory)
  kms_key_arn      = var.kms_key_arn

  reserved_concurrent_executions = lookup(var.lambda_reserved_concurrency, each.key, -1)

  environment {
    variables = local.lambda_environment
  }

  tracing_config {
    mode = var.xray_tracing ? "Active" : "PassThrough"
  }

  depends_on = [aws_cloudwatch_log_group.function, aws_iam_role_policy.function]

  lifecycle {
    precondition {
      # A lease shorter than one model call would hand a live validator's slot to another.
      condition     = var.lease_seconds > var.openai_timeout_seconds
      error_message = "lease_seconds must exceed openai_timeout_seconds."
    }
  }
}

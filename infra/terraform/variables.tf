# Defaults of the settings shared with the API follow app/settings.py; the proof test
# (tests/infra/test_terraform.py) checks that they agree.

variable "region" {
  description = "AWS region for every resource."
  type        = string
  default     = "us-east-1"
}

variable "name_prefix" {
  description = "Prefix of every resource name: tables are <prefix>-<table>, functions <prefix>-<function>."
  type        = string
  default     = "validation"
}

variable "tags" {
  description = "Extra tags on every resource."
  type        = map(string)
  default     = {}
}

variable "aws_endpoint_url" {
  description = "Send every AWS call to this endpoint (the embedded AWS, LocalStack) and pass it to the Lambdas and the API. Empty on AWS."
  type        = string
  default     = ""
}

# ---- data -------------------------------------------------------------------------------

variable "ssm_prefix" {
  description = "Path under which the run-time parameters (max-parallelism, target-tpm, ...) live."
  type        = string
  default     = "/app"

  validation {
    condition     = startswith(var.ssm_prefix, "/") && !endswith(var.ssm_prefix, "/")
    error_message = "ssm_prefix starts with / and does not end with /, e.g. /app."
  }
}

variable "uploads_bucket_name" {
  description = "Name of the uploads bucket; null lets AWS make a unique name from <prefix>-uploads-."
  type        = string
  default     = null
}

variable "upload_expiration_days" {
  description = "Uploaded files are deleted this many days after upload (results stay in DynamoDB)."
  type        = number
  default     = 30
}

variable "point_in_time_recovery" {
  description = "Point-in-time recovery on every DynamoDB table (35 days of restores)."
  type        = bool
  default     = true
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for the DynamoDB tables and the uploads bucket; null uses the AWS-managed keys (aws/dynamodb, aws/s3)."
  type        = string
  default     = null
}

variable "deletion_protection" {
  description = "Refuse to delete the DynamoDB tables (turn off before terraform destroy)."
  type        = bool
  default     = false
}

# ---- functions and state machine ----------------------------------------------------------

variable "lambda_build_dir" {
  description = "Directory holding code.zip and dependencies.zip from `make lambdas`; null means <repo>/build/lambda."
  type        = string
  default     = null
}

variable "lambda_runtime" {
  description = "Lambda runtime of every function and the dependency layer; the layer's wheels are built for it (infra/build_lambdas.py LAMBDA: CPython 3.13 on arm64)."
  type        = string
  default     = "python3.13"
}

variable "lambda_architecture" {
  description = "Instruction set of every function and the dependency layer; the layer's wheels are built for it (infra/build_lambdas.py LAMBDA). arm64 (Graviton) costs less per GB-second."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.lambda_architecture)
    error_message = "lambda_architecture is arm64 or x86_64."
  }
}

variable "lambda_timeouts" {
  description = "Timeout in seconds per function name, overriding resources.json."
  type        = map(number)
  default     = {}
}

variable "lambda_memory" {
  description = "Memory in MB per function name, overriding resources.json."
  type        = map(number)
  default     = {}
}

variable "lambda_reserved_concurrency" {
  description = "Reserved concurrency per function name; absent or -1 means unreserved."
  type        = map(number)
  default     = {}
}

variable "log_retention_days" {
  description = "Retention of the Lambda and state machine log groups."
  type        = number
  default     = 30
}

variable "xray_tracing" {
  description = "X-Ray tracing on the state machine and the functions."
  type        = bool
  default     = false
}

variable "sfn_log_level" {
  description = "Step Functions logging level: ALL, ERROR, FATAL or OFF (ALL logs every state transition, billed per GB)."
  type        = string
  default     = "ERROR"

  validation {
    condition     = contains(["ALL", "ERROR", "FATAL", "OFF"], var.sfn_log_level)
    error_message = "sfn_log_level is one of ALL, ERROR, FATAL, OFF."
  }
}

variable "sfn_log_execution_data" {
  description = "Include execution input and output in the state machines' logs (validation and notify: ids, counts and errors; no file content or webhook secret travels through them)."
  type        = bool
  default     = true
}

variable "retry_interval_seconds" {
  description = "First retry interval of the validator Task (templated into the ASL; SFN_RETRY_INTERVAL_SECONDS)."
  type        = number
  default     = 2
}

variable "retry_max_attempts" {
  description = "Retries of the validator Task (SFN_RETRY_MAX_ATTEMPTS)."
  type        = number
  default     = 6
}

variable "retry_max_delay_seconds" {
  description = "Ceiling of the validator Task's backoff (SFN_RETRY_MAX_DELAY_SECONDS)."
  type        = number
  default     = 30
}

# ---- settings the Lambdas read (the API gets the same values through api_environment) ----

variable "openai_base_url" {
  description = "OpenAI-compatible server; empty means api.openai.com."
  type        = string
  default     = ""
}

variable "openai_api_key" {
  description = "Key for the model server, stored as an SSM SecureString that only the model-calling Lambdas may read (secrets.tf); empty means no key and no parameter."
  type        = string
  default     = ""
  sensitive   = true
}

variable "openai_model" {
  description = "Model name sent with every chat completion."
  type        = string
  default     = "gpt-4o-mini"
}

variable "openai_timeout_seconds" {
  description = "Timeout of one model call."
  type        = number
  default     = 60
}

variable "completion_max_tokens" {
  description = "Completion allowance per part (what rate limits charge); the API estimates with the same value."
  type        = number
  default     = 512
}

variable "completion_max_tokens_cap" {
  description = "A cut answer (finish_reason length) is asked again with twice the allowance, up to this."
  type        = number
  default     = 4096
}

variable "part_max_tokens" {
  description = "Token budget of one part's text and of a combine call's reports; the API splits files with it."
  type        = number
  default     = 1500
}

variable "queue_min_wait_seconds" {
  description = "Shortest timed wait of a queued validation for its user's token bucket to refill."
  type        = number
  default     = 2
}

variable "default_max_queued" {
  description = "Validations a user may have queued at once when the quota does not say (users stored before max_queued existed); the API and the Lambdas read it as DEFAULT_MAX_QUEUED."
  type        = number
  default     = 100
}

variable "reconcile_grace_seconds" {
  description = "The reconciler ends a validation without a live execution once its run was queued this long ago."
  type        = number
  default     = 120
}

variable "reconcile_schedule" {
  description = "How often EventBridge Scheduler runs the reconciler (a schedule expression)."
  type        = string
  default     = "rate(5 minutes)"
}

variable "governor_window_seconds" {
  description = "The window target-tpm is per (60 = per minute)."
  type        = number
  default     = 60
}

variable "governor_shards" {
  description = "The most DynamoDB items each model's governor budget is split over (GOVERNOR_SHARDS; docs: the governor's shards). 8 holds OpenAI's top tier; small budgets use fewer."
  type        = number
  default     = 8
  validation {
    condition     = var.governor_shards >= 1 && var.governor_shards <= 64 && floor(var.governor_shards) == var.governor_shards
    error_message = "governor_shards must be a whole number from 1 to 64."
  }
}

variable "lease_seconds" {
  description = "A dead validator's slot and unused tokens come back after this; must exceed openai_timeout_seconds."
  type        = number
  default     = 90
}

variable "config_cache_seconds" {
  description = "How long Lambdas and the API keep SSM values."
  type        = number
  default     = 5
}

variable "map_concurrency_ceiling" {
  description = "Raising max-parallelism live reaches up to this on running validations (at most 40, the inline Map limit)."
  type        = number
  default     = 10
}

variable "inline_map_max_items" {
  description = "Items the inline parts' Map may have: an item spending every retry writes ~100 of an execution's 25,000 history events (docs/architecture/state-machine.md). A validation with more is validated by a Distributed Map over part ranges in S3."
  type        = number
  default     = 100

  validation {
    condition     = var.inline_map_max_items >= 1 && var.inline_map_max_items <= 1000
    error_message = "inline_map_max_items must be between 1 and 1000."
  }
}

variable "plan_range_bytes" {
  description = "The plan step reads an uploaded text, JSON Lines, CSV or TSV file in ranges of this many bytes: the plan function's memory holds about one range."
  type        = number
  default     = 8388608 # 8 MiB
}

variable "plan_invocation_bytes" {
  description = "Bytes one plan step invocation reads before it hands its cursor to the next (it also stops when its time runs short)."
  type        = number
  default     = 2147483648 # 2 GiB
}

variable "plan_max_line_bytes" {
  description = "The longest line an uploaded line-oriented file may hold; a longer one refuses the file (line_too_long)."
  type        = number
  default     = 16777216 # 16 MiB
}

variable "plan_whole_file_max_bytes" {
  description = "JSON and Markdown uploads are planned whole in the plan function's memory (3,008 MB), up to this many bytes; a bigger one is refused (too_large)."
  type        = number
  default     = 268435456 # 256 MiB
}

variable "parts_per_item" {
  description = "Parts of one Map item per call it runs at once: rounds of ~3 s calls that end within validate_part's 120 s. Inline items holding more send the validation to the Distributed Map, whose items hold this many per call a child runs at once."
  type        = number
  default     = 8
}

# ---- the API on ECS Fargate (optional) -----------------------------------------------------

variable "deploy_api" {
  description = "Run the API on ECS Fargate behind an HTTPS application load balancer."
  type        = bool
  default     = false
}

variable "api_image" {
  description = "Image of the Dockerfile, pushed to a registry the tasks can pull from (e.g. <account>.dkr.ecr.<region>.amazonaws.com/validation:1)."
  type        = string
  default     = ""
}

variable "vpc_id" {
  description = "VPC of the load balancer and the tasks (deploy_api)."
  type        = string
  default     = ""
}

variable "public_subnet_ids" {
  description = "Subnets of the internet-facing load balancer, in two or more zones (deploy_api)."
  type        = list(string)
  default     = []
}

variable "private_subnet_ids" {
  description = "Subnets of the tasks, with a NAT or VPC endpoints to reach AWS APIs (deploy_api)."
  type        = list(string)
  default     = []
}

variable "certificate_arn" {
  description = "ACM certificate of the HTTPS listener (deploy_api)."
  type        = string
  default     = ""
}

variable "api_ingress_cidrs" {
  description = "Who may reach the load balancer."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "api_trusted_proxy_cidrs" {
  description = "Addresses of the load balancer's nodes (the VPC's ranges): the API trusts X-Forwarded-For only from these. The task's security group admits only the balancer."
  type        = list(string)
  default     = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
}

variable "api_desired_count" {
  description = "Number of API tasks; the API is stateless, so any number works."
  type        = number
  default     = 2
}

variable "api_cpu" {
  description = "CPU units per API task (1024 = 1 vCPU)."
  type        = number
  default     = 512
}

variable "api_memory" {
  description = "Memory in MiB per API task."
  type        = number
  default     = 1024
}

variable "admin_api_key" {
  description = "Bootstrap admin key of the API on ECS, stored as an SSM SecureString (deploy_api)."
  type        = string
  default     = ""
  sensitive   = true
}

# ---- webhooks (statemachine/notify.asl.json, lambdas/notify) ----

variable "webhook_allow_private" {
  description = "Let webhooks target loopback, private, link-local, multicast and reserved addresses (WEBHOOK_ALLOW_PRIVATE). Off: SSRF protection."
  type        = bool
  default     = false
}

variable "webhook_allow_http" {
  description = "Let webhooks target plain http:// URLs (WEBHOOK_ALLOW_HTTP). Off: https only."
  type        = bool
  default     = false
}

variable "webhook_timeout_seconds" {
  description = "HTTP timeout of one delivery attempt (WEBHOOK_TIMEOUT_SECONDS)."
  type        = number
  default     = 10
}

variable "webhook_retry_interval_seconds" {
  description = "First wait of the notify Task's Retry; it doubles up to webhook_retry_max_delay_seconds."
  type        = number
  default     = 60
}

variable "webhook_retry_max_attempts" {
  description = "Retries after the first delivery attempt (15 with the defaults: 16 attempts over about 25 hours)."
  type        = number
  default     = 15
}

variable "webhook_retry_max_delay_seconds" {
  description = "Ceiling of the notify Task's backoff."
  type        = number
  default     = 10800
}

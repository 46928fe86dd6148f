# The lanes (docs: Cost, "Lanes"). Flex: what the validator Lambdas read as FLEX_* (lambda.tf).
# Batch: what the batch Lambda reads as BATCH_* (lambda.tf), the poll spacing templated into the
# ASL (stepfunctions.tf), and the API's grant to invoke the batch Lambda when it cancels.

variable "flex_timeout_seconds" {
  description = "A flex call's timeout (flex answers slower); null: openai_timeout_seconds. lease_seconds must exceed it."
  type        = number
  default     = null
  validation {
    condition     = var.flex_timeout_seconds == null ? true : var.flex_timeout_seconds > 0
    error_message = "flex_timeout_seconds must be positive."
  }
}

variable "flex_retry_base_seconds" {
  description = "The first wait after a flex \"resource unavailable\"; doubles (jittered) up to flex_retry_max_seconds."
  type        = number
  default     = 2
}

variable "flex_retry_max_seconds" {
  description = "The longest wait between flex retries."
  type        = number
  default     = 60
}

check "flex_timeout_within_lease" {
  assert {
    condition     = var.flex_timeout_seconds == null ? true : var.lease_seconds > var.flex_timeout_seconds
    error_message = "lease_seconds must exceed flex_timeout_seconds: a lease shorter than a call would hand its slot to another."
  }
}

variable "batch_max_requests" {
  description = "Requests per batch at most (OpenAI: 50,000); a validation with more is split into several batches."
  type        = number
  default     = 50000
  validation {
    condition     = var.batch_max_requests >= 1 && var.batch_max_requests <= 50000
    error_message = "batch_max_requests must be 1-50,000."
  }
}

variable "batch_max_bytes" {
  description = "Bytes per batch input file at most (OpenAI: 200 MB); a validation with more is split."
  type        = number
  default     = 200000000
  validation {
    condition     = var.batch_max_bytes >= 1000 && var.batch_max_bytes <= 200000000
    error_message = "batch_max_bytes must be 1,000-200,000,000."
  }
}

variable "batch_queue_limit_tokens" {
  description = "Each model's batch queue limit: prompt tokens in batches not ended (your organization's enqueued-token limit); a submission past it waits."
  type        = number
  default     = 2000000
}

variable "batch_poll_first_seconds" {
  description = "The first wait before a batch lane's poll (a Wait state: no Lambda runs); it doubles up to batch_poll_max_seconds."
  type        = number
  default     = 30
  validation {
    condition     = var.batch_poll_first_seconds >= 1 && floor(var.batch_poll_first_seconds) == var.batch_poll_first_seconds
    error_message = "batch_poll_first_seconds must be a whole number of seconds, 1 or more."
  }
}

variable "batch_poll_max_seconds" {
  description = "The longest wait between two polls of a batch lane."
  type        = number
  default     = 600
  validation {
    condition     = var.batch_poll_max_seconds >= 1 && floor(var.batch_poll_max_seconds) == var.batch_poll_max_seconds
    error_message = "batch_poll_max_seconds must be a whole number of seconds, 1 or more."
  }
}

variable "batch_cancel_wait_seconds" {
  description = "How long a cancel waits for its cancelled batches to end, to keep what they answered (within the batch Lambda's timeout)."
  type        = number
  default     = 30
}

# A cancel (DELETE /validations/{id}) stops the execution, then invokes the batch Lambda to cancel
# the validation's open batches and collect what they answered before the run is settled.
data "aws_iam_policy_document" "api_batch_cancel" {
  count = local.api_count

  statement {
    sid       = "CancelBatches"
    actions   = ["lambda:InvokeFunction"]
    resources = [aws_lambda_function.this["batch"].arn]
  }
}

resource "aws_iam_role_policy" "api_batch_cancel" {
  count  = local.api_count
  name   = "cancel-batches"
  role   = aws_iam_role.api_task[0].id
  policy = data.aws_iam_policy_document.api_batch_cancel[0].json
}

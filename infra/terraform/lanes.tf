# The flex lane (docs: Cost, "Lanes"): what the validator Lambdas read as FLEX_* (lambda.tf).

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

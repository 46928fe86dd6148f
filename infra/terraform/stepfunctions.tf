# The shared ASL (also rendered by local/aws/provision.py). Every function in
# resources.json becomes a `${<function>_arn}` template variable.

locals {
  asl_template  = file("${path.module}/statemachine/validation.asl.json")
  asl_reads_ssm = strcontains(local.asl_template, "aws-sdk:ssm:")

  definition = templatefile("${path.module}/statemachine/validation.asl.json", merge(
    { for name, f in aws_lambda_function.this : "${name}_arn" => f.arn },
    {
      ssm_prefix              = var.ssm_prefix
      retry_interval_seconds  = var.retry_interval_seconds
      retry_max_attempts      = var.retry_max_attempts
      retry_max_delay_seconds = var.retry_max_delay_seconds
      # The batch lane's poll spacing (lanes.tf): first wait, doubling up to the cap.
      batch_poll_first_seconds = var.batch_poll_first_seconds
      batch_poll_max_seconds   = var.batch_poll_max_seconds
    },
  ))
}

resource "aws_cloudwatch_log_group" "state_machine" {
  #checkov:skip=CKV_AWS_158:Execution logs hold ids and errors, no file content; CloudWatch encrypts them with its own key.
  #checkov:skip=CKV_AWS_338:Operational logs; retention is a variable (log_retention_days), 30 days by default to bound cost.
  name              = "/aws/vendedlogs/states/${var.name_prefix}-validation"
  retention_in_days = var.log_retention_days
}

resource "aws_sfn_state_machine" "validation" {
  #checkov:skip=CKV_AWS_284:X-Ray is a switch (xray_tracing, off by default): traces cost per execution and the execution history already records every state.
  name     = "${var.name_prefix}-validation"
  type     = "STANDARD"
  role_arn = aws_iam_role.state_machine.arn

  definition = local.definition

  logging_configuration {
    log_destination        = "${aws_cloudwatch_log_group.state_machine.arn}:*"
    include_execution_data = var.sfn_log_execution_data
    level                  = var.sfn_log_level
  }

  tracing_configuration {
    enabled = var.xray_tracing
  }

  depends_on = [aws_iam_role_policy.state_machine]
}

# ---- webhook notifications: a second, small state machine ------------------------------
# One execution per (validation, run, terminal status), started by whoever wrote that status
# (Finalize, the reconciler, the API's cancel): statemachine/notify.asl.json, its Retry spanning
# about a day. Its ARN is spelled out for the functions that start it (the machine refers to
# the functions, which cannot refer back to it).

locals {
  notify_machine_name = "${var.name_prefix}-notify"
  notify_machine_arn  = "arn:${data.aws_partition.current.partition}:states:${var.region}:${data.aws_caller_identity.current.account_id}:stateMachine:${local.notify_machine_name}"

  notify_definition = templatefile("${path.module}/statemachine/notify.asl.json", {
    notify_arn                      = aws_lambda_function.this["notify"].arn
    webhook_retry_interval_seconds  = var.webhook_retry_interval_seconds
    webhook_retry_max_attempts      = var.webhook_retry_max_attempts
    webhook_retry_max_delay_seconds = var.webhook_retry_max_delay_seconds
  })
}

resource "aws_cloudwatch_log_group" "notify" {
  #checkov:skip=CKV_AWS_158:Execution logs hold ids and errors, no file content; CloudWatch encrypts them with its own key.
  #checkov:skip=CKV_AWS_338:Operational logs; retention is a variable (log_retention_days), 30 days by default to bound cost.
  name              = "/aws/vendedlogs/states/${local.notify_machine_name}"
  retention_in_days = var.log_retention_days
}

resource "aws_sfn_state_machine" "notify" {
  #checkov:skip=CKV_AWS_284:X-Ray is a switch (xray_tracing, off by default), as for the validation state machine.
  name     = local.notify_machine_name
  type     = "STANDARD" # retries span a day: Express workflows end after 5 minutes
  role_arn = aws_iam_role.state_machine.arn

  definition = local.notify_definition

  # Execution data as for the validation state machine: the input is the event (ids, counts,
  # the run's error message); the webhook's URL shows only in a failed attempt's error, which
  # the notify function's own log holds already; its secret never leaves the Lambda.
  logging_configuration {
    log_destination        = "${aws_cloudwatch_log_group.notify.arn}:*"
    include_execution_data = var.sfn_log_execution_data
    level                  = var.sfn_log_level
  }

  tracing_configuration {
    enabled = var.xray_tracing
  }

  depends_on = [aws_iam_role_policy.state_machine]
}

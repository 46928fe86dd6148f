# Operating it (README "Operating it"): one dashboard, and alarms sent to an SNS topic.
#
# The Lambdas write their metrics as CloudWatch embedded metric format (EMF) in their logs
# (lambdas/common/observability.py): namespace var.metrics_namespace, dimension
# service = name_prefix; no PutMetricData call and no IAM permission for it. The API's own
# metrics are Prometheus families on METRICS_PORT, not CloudWatch metrics.
# The reconciler's alarm (issue 13) is not here: the reconciler is not built yet.

variable "alarm_topic_arn" {
  description = "SNS topic the alarms notify (alarm and OK); empty creates <prefix>-alarms, to which you subscribe yourself."
  type        = string
  default     = ""
}

variable "metrics_namespace" {
  description = "CloudWatch namespace of the Lambdas' EMF metrics (POWERTOOLS_METRICS_NAMESPACE)."
  type        = string
  default     = "ValidationService"
}

variable "alarm_queue_age_seconds" {
  description = "Alarm when a queued validation has waited longer than this."
  type        = number
  default     = 900
}

variable "alarm_rate_limited_percent" {
  description = "Alarm when more than this share (percent) of model requests in 5 minutes were answered 429."
  type        = number
  default     = 5
}

locals {
  alarm_topic_arn = var.alarm_topic_arn != "" ? var.alarm_topic_arn : aws_sns_topic.alarms[0].arn
  emf_dimension   = { service = var.name_prefix }
  state_machine   = { StateMachineArn = aws_sfn_state_machine.validation.arn }

  # Dashboard widgets: [namespace, metric, dimension name, value, ...] rows; one widget per concern.
  dashboard_widgets = [
    {
      title = "Validations (Step Functions executions; validations ended)"
      stat  = "Sum"
      metrics = concat(
        [for name in ["ExecutionsStarted", "ExecutionsSucceeded", "ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted"] :
        ["AWS/States", name, "StateMachineArn", aws_sfn_state_machine.validation.arn]],
        [for name in ["ValidationsSucceeded", "ValidationsFailed"] : [var.metrics_namespace, name, "service", var.name_prefix]],
      )
    },
    {
      title   = "Model calls: answered, 429, failed, cut"
      stat    = "Sum"
      metrics = [for name in ["ModelCalls", "RateLimited", "UpstreamFailures", "AnswersCut"] : [var.metrics_namespace, name, "service", var.name_prefix]]
    },
    {
      title   = "Tokens sent (prompt, completion)"
      stat    = "Sum"
      metrics = [for name in ["PromptTokens", "CompletionTokens"] : [var.metrics_namespace, name, "service", var.name_prefix]]
    },
    {
      # One budget per model (the `model` dimension): the configured model's here; the others'
      # under the same metric names with their own `model`.
      title   = "Governor: budget per window and tokens used, ${var.openai_model} (as each plan saw them)"
      stat    = "Maximum"
      metrics = [for name in ["BudgetTokensPerWindow", "TokensUsedLastWindow"] : [var.metrics_namespace, name, "service", var.name_prefix, "model", var.openai_model]]
    },
    {
      title   = "Governor: waits for a slot or tokens, CapacityUnavailable, task retries"
      stat    = "Sum"
      metrics = [for name in ["LeaseWaits", "LeaseWaitSeconds", "CapacityUnavailable", "Retries", "UnexpectedErrors"] : [var.metrics_namespace, name, "service", var.name_prefix]]
    },
    {
      title   = "Queue: longest wait seen by Admit (seconds)"
      stat    = "Maximum"
      metrics = [[var.metrics_namespace, "QueuedSeconds", "service", var.name_prefix]]
    },
    {
      title   = "Lambda invocations, errors (retried signals included), throttles"
      stat    = "Sum"
      metrics = [for p in setproduct(values(local.function_names), ["Invocations", "Errors", "Throttles"]) : ["AWS/Lambda", p[1], "FunctionName", p[0]]]
    },
    {
      title   = "Lambda duration p95"
      stat    = "p95"
      metrics = [for name, fn in local.function_names : ["AWS/Lambda", "Duration", "FunctionName", fn]]
    },
    {
      title   = "DynamoDB consumed capacity"
      stat    = "Sum"
      metrics = [for p in setproduct([for t in aws_dynamodb_table.this : t.name], ["ConsumedReadCapacityUnits", "ConsumedWriteCapacityUnits"]) : ["AWS/DynamoDB", p[1], "TableName", p[0]]]
    },
    {
      title   = "DynamoDB throttled requests"
      stat    = "Sum"
      metrics = [for p in setproduct([for t in aws_dynamodb_table.this : t.name], ["ReadThrottleEvents", "WriteThrottleEvents"]) : ["AWS/DynamoDB", p[1], "TableName", p[0]]]
    },
  ]
}

resource "aws_sns_topic" "alarms" {
  #checkov:skip=CKV_AWS_26:Alarm notifications carry alarm names and metric values, no customer data; CloudWatch cannot publish to a topic under the AWS-managed SNS key, so it is encrypted only with kms_key_arn (whose policy must allow cloudwatch.amazonaws.com).
  count             = var.alarm_topic_arn == "" ? 1 : 0
  name              = "${var.name_prefix}-alarms"
  kms_master_key_id = var.kms_key_arn
}

resource "aws_cloudwatch_dashboard" "main" {
  dashboard_name = var.name_prefix
  dashboard_body = jsonencode({
    widgets = [for i, w in local.dashboard_widgets : {
      type   = "metric"
      x      = (i % 2) * 12
      y      = floor(i / 2) * 6
      width  = 12
      height = 6
      properties = {
        title   = w.title
        region  = var.region
        stat    = w.stat
        period  = 300
        view    = "timeSeries"
        metrics = w.metrics
      }
    }]
  })
}

# The API on Fargate (deploy_api): its load balancer and service, on a dashboard of its own
# so that switching deploy_api on only adds resources.
resource "aws_cloudwatch_dashboard" "api" {
  count          = local.api_count
  dashboard_name = "${var.name_prefix}-api"
  dashboard_body = jsonencode({
    widgets = [for i, w in [
      {
        title   = "API requests, 4xx and 5xx (load balancer)"
        stat    = "Sum"
        metrics = [for m in ["RequestCount", "HTTPCode_Target_5XX_Count", "HTTPCode_ELB_5XX_Count", "HTTPCode_Target_4XX_Count"] : ["AWS/ApplicationELB", m, "LoadBalancer", aws_lb.api[0].arn_suffix]]
      },
      {
        title   = "API response time p95 (load balancer)"
        stat    = "p95"
        metrics = [["AWS/ApplicationELB", "TargetResponseTime", "LoadBalancer", aws_lb.api[0].arn_suffix]]
      },
      {
        title   = "API tasks CPU and memory"
        stat    = "Average"
        metrics = [for m in ["CPUUtilization", "MemoryUtilization"] : ["AWS/ECS", m, "ClusterName", aws_ecs_cluster.api[0].name, "ServiceName", aws_ecs_service.api[0].name]]
      },
      ] : {
      type       = "metric"
      x          = (i % 2) * 12
      y          = floor(i / 2) * 6
      width      = 12
      height     = 6
      properties = { title = w.title, region = var.region, stat = w.stat, period = 300, view = "timeSeries", metrics = w.metrics }
    }]
  })
}

# ---- alarms: each says what happened; README "Operating it" says what to do ----------------

locals {
  # AWS/States alarms on the state machine: an execution that failed or timed out is a
  # validation the Lambdas could not finish (FAILED with execution_failed).
  execution_alarms = {
    executions-failed    = { metric = "ExecutionsFailed", what = "A validation's execution failed (the validation ends FAILED, execution_failed)." }
    executions-timed-out = { metric = "ExecutionsTimedOut", what = "A validation's execution timed out." }
  }
}

resource "aws_cloudwatch_metric_alarm" "execution" {
  for_each            = local.execution_alarms
  alarm_name          = "${var.name_prefix}-${each.key}"
  alarm_description   = "${each.value.what} See README, Operating it."
  namespace           = "AWS/States"
  metric_name         = each.value.metric
  dimensions          = local.state_machine
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = [local.alarm_topic_arn]
  ok_actions          = [local.alarm_topic_arn]
}

resource "aws_cloudwatch_metric_alarm" "rate_limited" {
  alarm_name          = "${var.name_prefix}-model-429-rate"
  alarm_description   = "More than ${var.alarm_rate_limited_percent}% of model requests were answered 429 in 5 minutes: the governor's target is above the real limit. See README, Operating it."
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.alarm_rate_limited_percent
  treat_missing_data  = "notBreaching"
  alarm_actions       = [local.alarm_topic_arn]
  ok_actions          = [local.alarm_topic_arn]

  metric_query {
    id          = "rate"
    expression  = "100 * limited / (limited + answered)"
    label       = "429s, % of model requests"
    return_data = true
  }

  metric_query {
    id = "limited"
    metric {
      namespace   = var.metrics_namespace
      metric_name = "RateLimited"
      dimensions  = local.emf_dimension
      period      = 300
      stat        = "Sum"
    }
  }

  metric_query {
    id = "answered"
    metric {
      namespace   = var.metrics_namespace
      metric_name = "ModelCalls"
      dimensions  = local.emf_dimension
      period      = 300
      stat        = "Sum"
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "queue_age" {
  alarm_name          = "${var.name_prefix}-queue-age"
  alarm_description   = "A queued validation has waited more than ${var.alarm_queue_age_seconds} s (seen by the Admit step). See README, Operating it."
  namespace           = var.metrics_namespace
  metric_name         = "QueuedSeconds"
  dimensions          = local.emf_dimension
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.alarm_queue_age_seconds
  treat_missing_data  = "notBreaching"
  alarm_actions       = [local.alarm_topic_arn]
  ok_actions          = [local.alarm_topic_arn]
}

# The reconciler (lambdas/reconcile) fixed something: a crash or a lost write happened somewhere.
resource "aws_cloudwatch_metric_alarm" "reconciler_fixes" {
  alarm_name          = "${var.name_prefix}-reconciler-fixes"
  alarm_description   = "The reconciler ended or stopped validations whose execution was gone or ended without a final status. See README, Operating it."
  namespace           = var.metrics_namespace
  metric_name         = "ReconcilerFixes"
  dimensions          = local.emf_dimension
  statistic           = "Sum"
  period              = 3600
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = [local.alarm_topic_arn]
  ok_actions          = [local.alarm_topic_arn]
}

# Not AWS/Lambda Errors: that counts every error a handler raises, CapacityUnavailable and
# the other retried signals included. UnexpectedErrors counts only what is logged with a traceback.
resource "aws_cloudwatch_metric_alarm" "lambda_errors" {
  alarm_name          = "${var.name_prefix}-lambda-errors"
  alarm_description   = "A Lambda ended with an unexpected error (logged with its traceback). See README, Operating it."
  namespace           = var.metrics_namespace
  metric_name         = "UnexpectedErrors"
  dimensions          = local.emf_dimension
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = [local.alarm_topic_arn]
  ok_actions          = [local.alarm_topic_arn]
}

# One alarm over every function (metric math), not one per function.
resource "aws_cloudwatch_metric_alarm" "lambda_throttles" {
  alarm_name          = "${var.name_prefix}-lambda-throttles"
  alarm_description   = "Lambda throttled one of the functions (account concurrency or its reserved concurrency). See README, Operating it."
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = [local.alarm_topic_arn]
  ok_actions          = [local.alarm_topic_arn]

  metric_query {
    id          = "throttles"
    expression  = "SUM(METRICS())"
    label       = "Throttles, all functions"
    return_data = true
  }

  dynamic "metric_query" {
    for_each = local.functions
    content {
      id = "f_${metric_query.key}"
      metric {
        namespace   = "AWS/Lambda"
        metric_name = "Throttles"
        dimensions  = { FunctionName = aws_lambda_function.this[metric_query.key].function_name }
        period      = 300
        stat        = "Sum"
      }
    }
  }
}

output "alarm_topic_arn" {
  description = "The SNS topic the alarms notify (subscribe to it when Terraform created it)."
  value       = local.alarm_topic_arn
}

output "dashboard_name" {
  description = "The CloudWatch dashboard of the deployment."
  value       = aws_cloudwatch_dashboard.main.dashboard_name
}

# Least privilege from resources.json: each function gets exactly the tables (in their modes),
# bucket and SSM access its `uses` entry names; the state machine may invoke the functions
# and, when the ASL reads SSM itself, read the parameters.

locals {
  # A table's mode in resources.json is a string of these letters ("_modes" there). DeleteItem
  # and BatchWriteItem come only with d and b, given where the code deletes or batch-writes:
  # TransactWriteItems needs the action of each of its items (Put, Update, Delete, ConditionCheck).
  table_access = {
    r = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:ConditionCheckItem"]
    a = ["dynamodb:PutItem"]
    w = ["dynamodb:PutItem", "dynamodb:UpdateItem"]
    d = ["dynamodb:DeleteItem"]
    b = ["dynamodb:BatchWriteItem"]
    s = ["dynamodb:Scan"] # the API's admin list of users (GET /admin/users)
  }
  # Every mode resources.json gives, to a function or to the API; split("", mode) is its letters.
  table_modes = distinct(flatten([
    for uses in concat([for f in local.functions : f.uses], [local.resources.api.uses]) : values(uses.tables)
  ]))
  table_actions = {
    for mode in local.table_modes : mode => distinct(flatten([for letter in split("", mode) : local.table_access[letter]]))
  }
  bucket_actions = {
    r  = ["s3:GetObject"]
    w  = ["s3:PutObject"] # the controller's Distributed Map manifests (core/part_ranges.py)
    rw = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
  }
  ssm_actions = {
    r  = ["ssm:GetParameter", "ssm:GetParameters"]
    rw = ["ssm:GetParameter", "ssm:GetParameters", "ssm:PutParameter"]
  }
  parameter_arns = [for p in aws_ssm_parameter.this : p.arn]

  # Built from its name: the functions' policies cannot refer to the state machine itself,
  # whose definition refers to the functions.
  state_machine_arn = "arn:${data.aws_partition.current.partition}:states:${var.region}:${data.aws_caller_identity.current.account_id}:stateMachine:${var.name_prefix}-validation"

  # One statement per (function, mode): the tables it uses that way, with their indexes.
  function_table_statements = {
    for name, f in local.functions : name => {
      for mode in distinct(values(f.uses.tables)) : mode => flatten([
        for table, m in f.uses.tables : concat(
          [aws_dynamodb_table.this[table].arn],
          length(local.tables[table].indexes) > 0 ? ["${aws_dynamodb_table.this[table].arn}/index/*"] : [],
        ) if m == mode
      ])
    }
  }
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

# Who may assume each kind of role: one trust policy per AWS service that runs our code.
data "aws_iam_policy_document" "assume" {
  for_each = toset(["lambda", "states", "ecs-tasks", "scheduler"])

  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["${each.key}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "function" {
  for_each = local.functions

  name               = "${local.function_names[each.key]}-lambda"
  assume_role_policy = data.aws_iam_policy_document.assume["lambda"].json
}

data "aws_iam_policy_document" "function" {
  for_each = local.functions

  statement {
    sid       = "OwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.function[each.key].arn}:*"]
  }

  dynamic "statement" {
    for_each = local.function_table_statements[each.key]
    content {
      sid       = "Tables${upper(statement.key)}"
      actions   = local.table_actions[statement.key]
      resources = statement.value
    }
  }

  dynamic "statement" {
    for_each = each.value.uses.bucket == "none" ? [] : [each.value.uses.bucket]
    content {
      sid       = "Uploads${upper(statement.value)}"
      actions   = local.bucket_actions[statement.value]
      resources = ["${aws_s3_bucket.uploads.arn}/*"]
    }
  }

  dynamic "statement" {
    for_each = each.value.uses.ssm == "none" ? [] : [each.value.uses.ssm]
    content {
      sid       = "Parameters${upper(statement.value)}"
      actions   = local.ssm_actions[statement.value]
      resources = local.parameter_arns
    }
  }

  # Finalize and the reconciler start webhook notifications (resources.json `notify`).
  dynamic "statement" {
    for_each = lookup(each.value.uses, "notify", "none") == "none" ? [] : [each.value.uses.notify]
    content {
      sid       = "StartNotifications"
      actions   = ["states:StartExecution"]
      resources = [local.notify_machine_arn]
    }
  }

  # The reconciler reads and stops executions of this state machine (resources.json `executions`).
  dynamic "statement" {
    for_each = lookup(each.value.uses, "executions", "none") == "none" ? [] : [each.value.uses.executions]
    content {
      sid       = "Executions"
      actions   = ["states:DescribeExecution", "states:StopExecution"]
      resources = [local.execution_arns]
    }
  }

  # The model key (secrets.tf): only the functions that call the model.
  dynamic "statement" {
    for_each = lookup(each.value.uses, "model", false) ? aws_ssm_parameter.openai_api_key : []
    content {
      sid       = "OpenAIKey"
      actions   = ["ssm:GetParameter"]
      resources = [statement.value.arn]
    }
  }

  dynamic "statement" {
    for_each = lookup(each.value.uses, "model", false) ? aws_ssm_parameter.openai_api_key : []
    content {
      sid       = "OpenAIKeyDecrypt"
      actions   = ["kms:Decrypt"]
      resources = local.openai_key_kms_keys
      # Only to decrypt this parameter, through SSM (SSM's encryption context names the parameter).
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["ssm.${var.region}.amazonaws.com"]
      }
      condition {
        test     = "StringEquals"
        variable = "kms:EncryptionContext:PARAMETER_ARN"
        values   = [statement.value.arn]
      }
    }
  }

  # The queue (core/queue.py): functions with "task_tokens": "send" wake parked executions.
  dynamic "statement" {
    for_each = try(each.value.uses.task_tokens, "none") == "send" ? [1] : []
    content {
      sid       = "WakeQueuedValidations"
      actions   = ["states:SendTaskSuccess"]
      resources = [local.state_machine_arn]
    }
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "CustomerKey"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = var.xray_tracing ? [1] : []
    content {
      sid = "XRay"
      # X-Ray's write actions support no resource-level permissions.
      actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
      resources = ["*"]
    }
  }
}

resource "aws_iam_role_policy" "function" {
  for_each = local.functions

  name   = "least-privilege"
  role   = aws_iam_role.function[each.key].id
  policy = data.aws_iam_policy_document.function[each.key].json
}

# ---- state machine ---------------------------------------------------------------------

resource "aws_iam_role" "state_machine" {
  name               = "${var.name_prefix}-state-machine"
  assume_role_policy = data.aws_iam_policy_document.assume["states"].json
}

data "aws_iam_policy_document" "state_machine" {
  statement {
    sid       = "InvokeFunctions"
    actions   = ["lambda:InvokeFunction"]
    resources = flatten([for f in aws_lambda_function.this : [f.arn, "${f.arn}:*"]])
  }

  # The parts' Distributed Map (ValidatePartRanges): its ItemReader reads the controller's
  # manifest, and each item runs as a child execution of this state machine, which Step
  # Functions starts, describes and stops (on a cancel) as this role.
  statement {
    sid       = "ReadMapItems"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.uploads.arn}/validations/*/map-items/*"]
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "ReadMapItemsKey" # the manifest is encrypted with the bucket's key
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }

  statement {
    sid       = "StartMapChildren"
    actions   = ["states:StartExecution"]
    resources = [local.state_machine_arn]
  }

  statement {
    sid       = "ManageMapChildren"
    actions   = ["states:DescribeExecution", "states:StopExecution"]
    resources = ["arn:${data.aws_partition.current.partition}:states:${var.region}:${data.aws_caller_identity.current.account_id}:execution:${var.name_prefix}-validation/*"]
  }

  dynamic "statement" {
    for_each = local.asl_reads_ssm ? [1] : []
    content {
      sid       = "ReadParameters"
      actions   = ["ssm:GetParameter"]
      resources = local.parameter_arns
    }
  }

  statement {
    sid = "LogDelivery"
    # CloudWatch Logs delivery for Step Functions supports no resource-level permissions
    # (AWS docs, "IAM policies for logging to CloudWatch Logs").
    actions = [
      "logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery",
      "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies", "logs:DescribeLogGroups",
    ]
    resources = ["*"]
  }

  dynamic "statement" {
    for_each = var.xray_tracing ? [1] : []
    content {
      sid       = "XRay"
      actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets"]
      resources = ["*"]
    }
  }
}

resource "aws_iam_role_policy" "state_machine" {
  name   = "least-privilege"
  role   = aws_iam_role.state_machine.id
  policy = data.aws_iam_policy_document.state_machine.json
}

# Executions of the state machine, spelled out: the functions' policies cannot refer to the
# state machine itself (it refers to the functions, which wait for their policies).

locals {
  execution_arns = "arn:${data.aws_partition.current.partition}:states:${var.region}:${data.aws_caller_identity.current.account_id}:execution:${var.name_prefix}-validation:*"
}

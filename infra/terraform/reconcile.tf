# The reconciler (lambdas/reconcile) on a schedule: EventBridge Scheduler invokes its Lambda
# (a function of resources.json like the others) every `reconcile_schedule`.

locals {
  reconcile_schedule_name = "${var.name_prefix}-reconcile"
  # Spelled out (the default schedule group): the key's policy names the schedule, which
  # refers to the key. Scheduler binds each encryption of the payload to this ARN.
  reconcile_schedule_arn = "arn:${data.aws_partition.current.partition}:scheduler:${var.region}:${data.aws_caller_identity.current.account_id}:schedule/default/${local.reconcile_schedule_name}"
}

resource "aws_iam_role" "reconcile_schedule" {
  name               = "${var.name_prefix}-reconcile-schedule"
  assume_role_policy = data.aws_iam_policy_document.assume["scheduler"].json
}

data "aws_iam_policy_document" "reconcile_schedule" {
  statement {
    sid       = "InvokeReconciler"
    actions   = ["lambda:InvokeFunction"]
    resources = [aws_lambda_function.this["reconcile"].arn]
  }

  # Scheduler decrypts the payload as this role at each run: only this schedule's.
  statement {
    sid       = "DecryptPayload"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.reconcile_schedule.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:EncryptionContext:aws:scheduler:schedule:arn"
      values   = [local.reconcile_schedule_arn]
    }
  }
}

resource "aws_iam_role_policy" "reconcile_schedule" {
  name   = "invoke-reconciler"
  role   = aws_iam_role.reconcile_schedule.id
  policy = data.aws_iam_policy_document.reconcile_schedule.json
}

# The schedule's payload (its target input) under a key of our own rather than Scheduler's
# AWS-owned key: its use is in CloudTrail and its policy limits it to this one schedule.
# Scheduler encrypts the payload with the permissions of whoever creates, updates or reads
# the schedule (Terraform's principal), and decrypts it as the schedule's role at each run.
resource "aws_kms_key" "reconcile_schedule" {
  description         = "${local.reconcile_schedule_name}: the schedule's payload (EventBridge Scheduler)"
  enable_key_rotation = true
  # The payload is a constant Terraform writes again on apply: a lost key costs nothing, so
  # the shortest window.
  deletion_window_in_days = 7
  policy                  = data.aws_iam_policy_document.reconcile_schedule_key.json
}

data "aws_iam_policy_document" "reconcile_schedule_key" {
  #checkov:skip=CKV_AWS_109:A key policy, whose Resource "*" is this key alone (it cannot name the key it belongs to); PutKeyPolicy goes to this account's IAM policies.
  #checkov:skip=CKV_AWS_111:A key policy, whose Resource "*" is this key alone (it cannot name the key it belongs to); its uses are bound to the schedule's ARN.
  #checkov:skip=CKV_AWS_356:A key policy, whose Resource "*" is this key alone (it cannot name the key it belongs to, whose ARN is not known before).


  # The account's IAM policies decide who manages the key (what Terraform does to it), not
  # who uses it: no encrypt or decrypt here.
  statement {
    sid = "AccountAdministers"
    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
    actions = [
      "kms:DescribeKey", "kms:GetKeyPolicy", "kms:GetKeyRotationStatus", "kms:ListResourceTags",
      "kms:ListKeyPolicies", "kms:ListGrants", "kms:PutKeyPolicy", "kms:UpdateKeyDescription",
      "kms:EnableKey", "kms:DisableKey", "kms:EnableKeyRotation", "kms:DisableKeyRotation",
      "kms:TagResource", "kms:UntagResource", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion",
    ]
    resources = ["*"]
  }

  # Creating, updating or reading the schedule: Scheduler encrypts and decrypts the payload
  # with the caller's permissions (granted by its IAM policies), through Scheduler only and
  # for this schedule only.
  statement {
    sid = "AccountUsesThroughScheduler"
    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["scheduler.${var.region}.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "kms:EncryptionContext:aws:scheduler:schedule:arn"
      values   = [local.reconcile_schedule_arn]
    }
  }

  # Each run: Scheduler decrypts the payload as the schedule's role (its policy above).
  statement {
    sid = "ScheduleRoleDecrypts"
    principals {
      type        = "AWS"
      identifiers = [aws_iam_role.reconcile_schedule.arn]
    }
    actions   = ["kms:Decrypt"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "kms:EncryptionContext:aws:scheduler:schedule:arn"
      values   = [local.reconcile_schedule_arn]
    }
  }
}

resource "aws_scheduler_schedule" "reconcile" {
  name                = local.reconcile_schedule_name
  description         = "Ends validations whose execution is gone, settles stuck cancels, reclaims dead leases."
  schedule_expression = var.reconcile_schedule
  kms_key_arn         = aws_kms_key.reconcile_schedule.arn

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = aws_lambda_function.this["reconcile"].arn
    role_arn = aws_iam_role.reconcile_schedule.arn
    input    = jsonencode({ source = "schedule" })

    retry_policy {
      maximum_retry_attempts = 0 # the next run comes soon; a pass is safe to repeat
    }
  }
}

# The reconciler (lambdas/reconcile) on a schedule: EventBridge Scheduler invokes its Lambda
# (a function of resources.json like the others) every `reconcile_schedule`.

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
}

resource "aws_iam_role_policy" "reconcile_schedule" {
  name   = "invoke-reconciler"
  role   = aws_iam_role.reconcile_schedule.id
  policy = data.aws_iam_policy_document.reconcile_schedule.json
}

resource "aws_scheduler_schedule" "reconcile" {
  name                = "${var.name_prefix}-reconcile"
  description         = "Ends validations whose execution is gone, settles stuck cancels, reclaims dead leases."
  schedule_expression = var.reconcile_schedule

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

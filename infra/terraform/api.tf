# Optional (deploy_api): the API from the Dockerfile's image on ECS Fargate, in private
# subnets, behind an internet-facing HTTPS load balancer. Configured with the same
# api_environment this module outputs for running the API anywhere else.

locals {
  api_count = var.deploy_api ? 1 : 0
  api_port  = 8000
  api_name  = "${var.name_prefix}-api"

  # One statement per mode, as for the functions (iam.tf): the tables the API uses that way.
  api_table_statements = {
    for mode in distinct(values(local.resources.api.uses.tables)) : mode => flatten([
      for table, m in local.resources.api.uses.tables : concat(
        [aws_dynamodb_table.this[table].arn],
        length(local.tables[table].indexes) > 0 ? ["${aws_dynamodb_table.this[table].arn}/index/*"] : [],
      ) if m == mode
    ])
  }
}

resource "aws_ecs_cluster" "api" {
  count = local.api_count
  name  = local.api_name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_cloudwatch_log_group" "api" {
  #checkov:skip=CKV_AWS_158:Access and error logs, no file content; CloudWatch encrypts them with its own key.
  #checkov:skip=CKV_AWS_338:Operational logs; retention is a variable (log_retention_days), 30 days by default to bound cost.
  count             = local.api_count
  name              = "/ecs/${local.api_name}"
  retention_in_days = var.log_retention_days
}

resource "aws_ssm_parameter" "admin_api_key" {
  count  = local.api_count
  name   = "${var.ssm_prefix}/secrets/admin-api-key"
  type   = "SecureString"
  key_id = var.kms_key_arn
  value  = var.admin_api_key
}

# Pulls the image, writes the container's logs, reads the admin key for the container.
resource "aws_iam_role" "api_execution" {
  count              = local.api_count
  name               = "${local.api_name}-execution"
  assume_role_policy = data.aws_iam_policy_document.assume["ecs-tasks"].json
}

data "aws_iam_policy_document" "api_execution" {
  count = local.api_count
  statement {
    sid = "PullImage"
    # The image may live in any ECR repository; GetAuthorizationToken has no resource-level permissions.
    actions   = ["ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"]
    resources = ["*"]
  }
  statement {
    sid       = "ContainerLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.api[0].arn}:*"]
  }
  statement {
    sid       = "AdminKey"
    actions   = ["ssm:GetParameters"]
    resources = [aws_ssm_parameter.admin_api_key[0].arn]
  }
  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "CustomerKey"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "api_execution" {
  count  = local.api_count
  name   = "least-privilege"
  role   = aws_iam_role.api_execution[0].id
  policy = data.aws_iam_policy_document.api_execution[0].json
}

# What the API itself calls: every table, the uploads, the parameters (PATCH
# /admin/parallelism writes them) and the executions of its state machine.
resource "aws_iam_role" "api_task" {
  count              = local.api_count
  name               = "${local.api_name}-task"
  assume_role_policy = data.aws_iam_policy_document.assume["ecs-tasks"].json
}

data "aws_iam_policy_document" "api_task" {
  count = local.api_count

  # Each table as resources.json "api" says: DeleteItem only where the API deletes, none on
  # the audit trail (append only), BatchWriteItem only on parts.
  dynamic "statement" {
    for_each = local.api_table_statements
    content {
      sid       = "Tables${upper(statement.key)}"
      actions   = local.table_actions[statement.key]
      resources = statement.value
    }
  }
  statement {
    sid       = "DescribeTables" # /readyz
    actions   = ["dynamodb:DescribeTable"]
    resources = [for name, t in aws_dynamodb_table.this : t.arn]
  }
  statement {
    sid = "Uploads"
    # PutObject also covers CreateMultipartUpload, UploadPart and CompleteMultipartUpload, and
    # GetObject HeadObject. The presigned URLs of POST /uploads act with these permissions, and
    # tag what they write (upload=pending, for the bucket's lifecycle): PutObjectTagging.
    actions   = concat(local.bucket_actions.rw, ["s3:AbortMultipartUpload", "s3:PutObjectTagging"])
    resources = ["${aws_s3_bucket.uploads.arn}/*"]
  }
  statement {
    sid       = "UploadsBucket"
    actions   = ["s3:ListBucket"] # HeadBucket in /readyz
    resources = [aws_s3_bucket.uploads.arn]
  }
  statement {
    sid       = "Parameters"
    actions   = local.ssm_actions.rw
    resources = local.parameter_arns
  }
  statement {
    sid       = "StateMachine"
    actions   = ["states:StartExecution", "states:DescribeStateMachine"]
    resources = [aws_sfn_state_machine.validation.arn, aws_sfn_state_machine.notify.arn] # notify: cancelled validations
  }
  statement {
    sid       = "WakeQueuedValidations" # a cancel or a quota change hands the queue on (core/queue.py)
    actions   = ["states:SendTaskSuccess"]
    resources = [aws_sfn_state_machine.validation.arn]
  }
  statement {
    sid       = "Executions"
    actions   = ["states:StopExecution", "states:DescribeExecution", "states:GetExecutionHistory"]
    resources = ["${replace(aws_sfn_state_machine.validation.arn, ":stateMachine:", ":execution:")}:*"]
  }
  statement {
    sid       = "Reconciler" # POST /admin/reconcile runs one pass now
    actions   = ["lambda:InvokeFunction"]
    resources = [aws_lambda_function.this["reconcile"].arn]
  }
  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "CustomerKey"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "api_task" {
  count  = local.api_count
  name   = "least-privilege"
  role   = aws_iam_role.api_task[0].id
  policy = data.aws_iam_policy_document.api_task[0].json
}

resource "aws_security_group" "api_lb" {
  count       = local.api_count
  name        = "${local.api_name}-lb"
  description = "HTTPS from the allowed networks to the API load balancer"
  vpc_id      = var.vpc_id

  ingress {
    description = "HTTPS"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = var.api_ingress_cidrs
  }
  ingress {
    description = "HTTP, redirected to HTTPS"
    from_port   = 80
    to_port     = 80
    protocol    = "tcp"
    cidr_blocks = var.api_ingress_cidrs
  }
  egress {
    description = "To the API tasks"
    from_port   = local.api_port
    to_port     = local.api_port
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_security_group" "api_tasks" {
  count       = local.api_count
  name        = "${local.api_name}-tasks"
  description = "The API tasks: traffic only from the load balancer"
  vpc_id      = var.vpc_id

  ingress {
    description     = "From the load balancer"
    from_port       = local.api_port
    to_port         = local.api_port
    protocol        = "tcp"
    security_groups = [aws_security_group.api_lb[0].id]
  }
  egress {
    description = "AWS APIs over HTTPS"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_lb" "api" {
  #checkov:skip=CKV_AWS_91:Access logs need a log bucket with an ELB-account policy; enable per deployment if required.
  #checkov:skip=CKV2_AWS_28:A WAF web ACL is a per-organisation choice (and cost); the API authenticates every request but health.
  #checkov:skip=CKV2_AWS_20:The port 80 listener only redirects to HTTPS.
  count                      = local.api_count
  name                       = local.api_name
  load_balancer_type         = "application"
  internal                   = false
  security_groups            = [aws_security_group.api_lb[0].id]
  subnets                    = var.public_subnet_ids
  drop_invalid_header_fields = true
  enable_deletion_protection = var.deletion_protection
  # Server-sent events stay open: keep idle connections longer than the 15 s heartbeat.
  idle_timeout = 120
}

resource "aws_lb_target_group" "api" {
  count       = local.api_count
  name        = local.api_name
  port        = local.api_port
  protocol    = "HTTP"
  target_type = "ip"
  vpc_id      = var.vpc_id

  # Ready means DynamoDB, S3, Step Functions and SSM answer with the configured resources.
  health_check {
    path                = "/readyz"
    matcher             = "200"
    interval            = 15
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

resource "aws_lb_listener" "api_https" {
  count             = local.api_count
  load_balancer_arn = aws_lb.api[0].arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.api[0].arn
  }
}

resource "aws_lb_listener" "api_http" {
  count             = local.api_count
  load_balancer_arn = aws_lb.api[0].arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type = "redirect"
    redirect {
      port        = "443"
      protocol    = "HTTPS"
      status_code = "HTTP_301"
    }
  }
}

resource "aws_ecs_task_definition" "api" {
  count                    = local.api_count
  family                   = local.api_name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.api_cpu
  memory                   = var.api_memory
  execution_role_arn       = aws_iam_role.api_execution[0].arn
  task_role_arn            = aws_iam_role.api_task[0].arn

  # /tmp of the container (mountPoints below): task ephemeral storage.
  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([{
    name                   = "api"
    image                  = var.api_image
    essential              = true
    readonlyRootFilesystem = true
    # The one writable place: multipart parts over 1 MiB spill to /tmp (Starlette's
    # SpooledTemporaryFile). Fargate has no tmpfs (linuxParameters.tmpfs is EC2 only), so
    # /tmp is a volume on the task's ephemeral storage, gone with the task.
    mountPoints  = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]
    portMappings = [{ containerPort = local.api_port, protocol = "tcp" }]
    # FORWARDED_ALLOW_IPS: uvicorn takes the client's address from X-Forwarded-For only from
    # these peers (the load balancer's nodes in the VPC); otherwise every client shares the
    # balancer's address, and one client's bad keys would throttle everyone (app/auth/throttle.py).
    environment = [for key, value in merge(local.api_environment, {
      HOST                = "0.0.0.0"
      PORT                = tostring(local.api_port)
      FORWARDED_ALLOW_IPS = join(",", var.api_trusted_proxy_cidrs)
      }) :
    { name = key, value = value }]
    # By name (same region): known at plan time, so the plan shows the whole definition.
    secrets = [{ name = "ADMIN_API_KEY", valueFrom = aws_ssm_parameter.admin_api_key[0].name }]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.api[0].name
        awslogs-region        = var.region
        awslogs-stream-prefix = "api"
      }
    }
  }])
}

resource "aws_ecs_service" "api" {
  count           = local.api_count
  name            = local.api_name
  cluster         = aws_ecs_cluster.api[0].id
  task_definition = aws_ecs_task_definition.api[0].arn
  desired_count   = var.api_desired_count
  launch_type     = "FARGATE"

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.api_tasks[0].id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.api[0].arn
    container_name   = "api"
    container_port   = local.api_port
  }

  depends_on = [aws_lb_listener.api_https]
}

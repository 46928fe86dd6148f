output "api_environment" {
  description = "Every environment variable the API needs in aws mode (MODE=aws, table names, bucket, state machine, SSM prefix, shared tuning). Add ADMIN_API_KEY yourself."
  value       = local.api_environment
}

output "state_machine_arn" {
  description = "The validation state machine (STATE_MACHINE_ARN)."
  value       = aws_sfn_state_machine.validation.arn
}

output "notify_state_machine_arn" {
  description = "The webhook notification state machine (NOTIFY_STATE_MACHINE_ARN)."
  value       = aws_sfn_state_machine.notify.arn
}

output "uploads_bucket" {
  description = "The uploads bucket (UPLOADS_BUCKET)."
  value       = aws_s3_bucket.uploads.id
}

output "table_names" {
  description = "DynamoDB table name per logical table of resources.json."
  value       = { for name, table in aws_dynamodb_table.this : name => table.name }
}

output "function_arns" {
  description = "Lambda function ARN per function of resources.json."
  value       = { for name, f in aws_lambda_function.this : name => f.arn }
}

output "function_role_arns" {
  description = "The least-privilege role of each function."
  value       = { for name, role in aws_iam_role.function : name => role.arn }
}

output "dependencies_layer_arn" {
  description = "The layer with the Lambdas' pinned dependencies."
  value       = aws_lambda_layer_version.dependencies.arn
}

output "api_url" {
  description = "HTTPS address of the API's load balancer when deploy_api is on, else null."
  value       = var.deploy_api ? "https://${aws_lb.api[0].dns_name}" : null
}

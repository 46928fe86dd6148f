# The model server's key: an SSM SecureString that only the functions calling the model
# (resources.json `"model": true`) may read; the Lambdas fetch it at run time
# (lambdas/common/secrets.py, cached), so it is in no function's environment. Terraform
# state still holds it (var.openai_api_key): keep state in an encrypted remote backend.
# No key (an OpenAI-compatible server without authentication): no parameter.

locals {
  # Whether a key is set is not the secret; count cannot take a sensitive value.
  openai_key_count = nonsensitive(var.openai_api_key != "") ? 1 : 0
  # The name is what the Lambdas get (OPENAI_API_KEY_PARAMETER); local provisioning uses the same path.
  openai_key_parameter_name = "${var.ssm_prefix}/secrets/openai-api-key"
  openai_key_parameter_arn  = local.openai_key_count == 1 ? aws_ssm_parameter.openai_api_key[0].arn : ""
  # The key that encrypts it: the customer key if given, else the account's aws/ssm key
  # (arn:<partition>:ssm:<region>:<account>:parameter/... gives partition, region and account).
  openai_key_arn_parts = split(":", local.openai_key_parameter_arn)
  openai_key_kms_keys = var.kms_key_arn != null ? [var.kms_key_arn] : (
    local.openai_key_count == 1 ? ["arn:${local.openai_key_arn_parts[1]}:kms:${local.openai_key_arn_parts[3]}:${local.openai_key_arn_parts[4]}:key/*"] : []
  )
}

resource "aws_ssm_parameter" "openai_api_key" {
  count       = local.openai_key_count
  name        = local.openai_key_parameter_name
  description = "Key of the model server; read by the model-calling Lambdas only"
  type        = "SecureString"
  key_id      = var.kms_key_arn
  value       = var.openai_api_key
}

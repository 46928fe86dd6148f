# Tables, bucket and run-time parameters, all from resources.json (shared with
# local/aws/provision.py): an entry added there is deployed without editing this file.

locals {
  resources = jsondecode(file("${path.module}/resources.json"))
  tables    = local.resources.tables
  functions = local.resources.functions
}

resource "aws_dynamodb_table" "this" {
  #checkov:skip=CKV_AWS_119:Encrypted with the AWS-managed key by default; set kms_key_arn for a customer-managed key (KMS adds a per-request cost).
  #checkov:skip=CKV2_AWS_16:On-demand billing; auto scaling applies to provisioned capacity only.
  for_each = local.tables

  name                        = "${var.name_prefix}-${each.key}"
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = each.value.hash_key
  range_key                   = each.value.range_key
  deletion_protection_enabled = var.deletion_protection

  dynamic "attribute" {
    for_each = each.value.attributes
    content {
      name = attribute.key
      type = attribute.value
    }
  }

  dynamic "global_secondary_index" {
    for_each = each.value.indexes
    content {
      name            = global_secondary_index.key
      hash_key        = global_secondary_index.value.hash_key
      range_key       = global_secondary_index.value.range_key
      projection_type = length(try(global_secondary_index.value.include, [])) > 0 ? "INCLUDE" : "ALL"

      # Every attribute, unless resources.json names the few the index includes.
      non_key_attributes = try(global_secondary_index.value.include, null)
    }
  }

  # Records that expire (idempotency claims, governor leases) are deleted by DynamoDB.
  dynamic "ttl" {
    for_each = each.value.ttl_attribute == null ? [] : [each.value.ttl_attribute]
    content {
      attribute_name = ttl.value
      enabled        = true
    }
  }

  point_in_time_recovery {
    enabled = var.point_in_time_recovery
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = var.kms_key_arn
  }
}

resource "aws_s3_bucket" "uploads" {
  #checkov:skip=CKV_AWS_18:Access logging needs a second bucket; every object access comes from our own roles (CloudTrail data events can be enabled account-wide).
  #checkov:skip=CKV_AWS_144:Uploads are transient inputs, expired after upload_expiration_days; cross-region replication would double storage for no recovery need.
  #checkov:skip=CKV2_AWS_62:Nothing reacts to uploads: the API starts the execution itself.
  #checkov:skip=CKV_AWS_21:Objects are written once per validation and never overwritten; versioning would only keep deleted uploads longer.
  bucket        = var.uploads_bucket_name
  bucket_prefix = var.uploads_bucket_name == null ? "${var.name_prefix}-uploads-" : null
  force_destroy = true
}

resource "aws_s3_bucket_public_access_block" "uploads" {
  bucket                  = aws_s3_bucket.uploads.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "uploads" {
  bucket = aws_s3_bucket.uploads.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "uploads" {
  bucket = aws_s3_bucket.uploads.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    # One data key per bucket instead of one KMS request per object.
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "uploads" {
  bucket = aws_s3_bucket.uploads.id

  rule {
    id     = "expire-uploads"
    status = "Enabled"
    # Every object: an empty filter (the provider's form for "whole bucket").
    filter {}
    expiration {
      days = var.upload_expiration_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  # Direct uploads (app/uploads) no validation took: tagged pending until one does.
  rule {
    id     = "expire-unused-uploads"
    status = "Enabled"
    filter {
      and {
        prefix = "uploads/"
        tags   = { upload = "pending" }
      }
    }
    expiration {
      days = 1
    }
  }
}

# Only TLS: uploads carry customer files. Not against an AWS look-alike on loopback
# (aws_endpoint_url), which speaks plain HTTP and would refuse every request under it.
resource "aws_s3_bucket_policy" "uploads" {
  count      = local.local_endpoint ? 0 : 1
  bucket     = aws_s3_bucket.uploads.id
  policy     = data.aws_iam_policy_document.uploads_tls_only.json
  depends_on = [aws_s3_bucket_public_access_block.uploads]
}

data "aws_iam_policy_document" "uploads_tls_only" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.uploads.arn, "${aws_s3_bucket.uploads.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

# Defaults only: the admin API (PATCH /admin/parallelism) changes the values at run time,
# so Terraform creates them and then leaves the value alone.
resource "aws_ssm_parameter" "this" {
  #checkov:skip=CKV2_AWS_34:Tuning numbers (parallelism, target TPM), not secrets; String keeps them readable in the console and the audit log.
  for_each = local.resources.parameters

  name  = "${var.ssm_prefix}/${each.key}"
  type  = "String"
  value = each.value

  lifecycle {
    ignore_changes = [value]
  }
}

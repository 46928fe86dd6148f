terraform {
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # The python3.13 runtime of the functions and the layer: accepted by providers from 5.77 on.
      version = ">= 5.77, < 6.0"
    }
  }
}

locals {
  # Set only to test against an AWS look-alike (the embedded AWS, LocalStack); empty on AWS.
  local_endpoint = var.aws_endpoint_url != ""
}

provider "aws" {
  region = var.region

  # An endpoint that is not AWS has no real credentials, account lookup or instance metadata.
  access_key                  = local.local_endpoint ? "local" : null
  secret_key                  = local.local_endpoint ? "local" : null
  skip_credentials_validation = local.local_endpoint
  skip_requesting_account_id  = local.local_endpoint
  skip_metadata_api_check     = local.local_endpoint
  s3_use_path_style           = local.local_endpoint

  dynamic "endpoints" {
    for_each = local.local_endpoint ? [var.aws_endpoint_url] : []
    content {
      cloudwatch     = endpoints.value
      cloudwatchlogs = endpoints.value
      dynamodb       = endpoints.value
      ec2            = endpoints.value
      ecs            = endpoints.value
      elbv2          = endpoints.value
      iam            = endpoints.value
      kms            = endpoints.value
      lambda         = endpoints.value
      s3             = endpoints.value
      scheduler      = endpoints.value
      sfn            = endpoints.value
      sns            = endpoints.value
      ssm            = endpoints.value
      sts            = endpoints.value
    }
  }

  default_tags {
    tags = merge({ Application = var.name_prefix }, var.tags)
  }
}

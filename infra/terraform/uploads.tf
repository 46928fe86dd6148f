# Uploads straight to S3 (POST /uploads): a browser on the API's page PUTs files to presigned
# URLs of the uploads bucket, so the bucket answers CORS for that one origin, and nothing else.

variable "api_origin" {
  description = "The origin the API's web page is served from (scheme://host[:port], e.g. https://validation.example.com): the one origin the uploads bucket lets PUT presigned uploads from a browser. null: no CORS rule (the CLI and other non-browser clients upload without one)."
  type        = string
  default     = null

  validation {
    condition     = var.api_origin == null || can(regex("^https?://[A-Za-z0-9.-]+(:[0-9]+)?$", var.api_origin))
    error_message = "api_origin is scheme://host[:port] with no path, wildcard or trailing slash, e.g. https://validation.example.com."
  }
}

resource "aws_s3_bucket_cors_configuration" "uploads" {
  count  = var.api_origin == null ? 0 : 1
  bucket = aws_s3_bucket.uploads.id

  cors_rule {
    id              = "presigned-uploads"
    allowed_methods = ["PUT"]
    allowed_origins = [var.api_origin]
    # What app/uploads signs into its URLs (the page sends them as given), and the body's type.
    allowed_headers = ["content-type", "x-amz-checksum-sha256", "x-amz-tagging"]
    # A multipart upload's complete call lists each part's ETag, which the page reads from the PUT's answer.
    expose_headers  = ["ETag"]
    max_age_seconds = 3600
  }
}

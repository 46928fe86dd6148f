"""Uploads straight to S3: the file's bytes go from the client to the bucket, never through the API.

`POST /uploads` declares files (name, size, optional SHA-256) and answers, per file, a presigned
PUT or, above `UPLOAD_MULTIPART_THRESHOLD_BYTES`, a multipart upload with a presigned URL per
part; `POST /uploads/{id}/complete` completes it. Each upload belongs to its caller, expires
after `UPLOAD_TTL_SECONDS`, and is confirmed against what S3 holds (size, and SHA-256 where S3
checked it). `UploadService.completed` is what a validation built from uploads asks for.
"""

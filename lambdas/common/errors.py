"""Errors the state machine tells apart by class name (ASL Retry/Catch `ErrorEquals`)."""


class RateLimited(Exception):
    """The model API answered 429. Retried with backoff and jitter."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamTimeout(Exception):
    """The model API did not answer in time. Retried."""


class UpstreamError(Exception):
    """The model API failed (5xx, connection, unreadable answer). Retried."""


class BatchIncomplete(Exception):
    """The invocation ran low on time; chunks left are done by the retry (done ones are skipped)."""


class ModelRejected(Exception):
    """The model API refused the request (4xx other than 429). Not retried: the chunk fails."""


class CapacityUnavailable(Exception):
    """No call slot or no tokens in the global budget within the wait. Retried with backoff."""


class StoreUnavailable(Exception):
    """DynamoDB/S3 throttled, timed out or failed on their side. Retried with backoff."""

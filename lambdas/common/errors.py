"""Errors the state machine tells apart by class name (ASL Retry/Catch `ErrorEquals`)."""


class RateLimited(Exception):
    """The model API answered 429. Retried with backoff and jitter."""


class UpstreamTimeout(Exception):
    """The model API did not answer in time. Retried."""


class UpstreamError(Exception):
    """The model API failed (5xx, connection, unreadable answer). Retried."""


class BatchIncomplete(Exception):
    """The invocation ran low on time; chunks left are done by the retry (done ones are skipped)."""


class ModelRejected(Exception):
    """The model API refused the request (4xx other than 429). Not retried: the chunk fails."""

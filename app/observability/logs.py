"""The API's log lines: JSON lines (Powertools' formatter, the same shape as the Lambdas'
lines) or readable text for a terminal, each carrying the ids of the request it belongs to.

`bind(request_id=..., validation_id=...)` adds keys to every line logged for the current
request. They live in a context variable (Powertools' own, which the formatter reads), so
each asyncio task, hence each request, has its own; in local mode the Lambdas, which run
on the embedded AWS's threads, set theirs the same way (lambdas/common/observability.py).
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Literal

from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter, clear_context_keys, set_context_keys

LogFormat = Literal["auto", "json", "text"]
SERVICE = "api"

# uvicorn's access log passes these as the record's arguments (uvicorn.protocols.http).
_ACCESS_FIELDS = ("client", "http_method", "path", "http_version", "status")
# A stream token (app/stream_tokens) travels in the events URL's query: it never reaches a log line.
_SECRET_QUERY = re.compile(r"(?i)((?:^|[?&;])token=)[^&;#\s]*")
REDACTED = "REDACTED"


def redact(path: str) -> str:
    """A request path with its query's `token=` values replaced by REDACTED."""
    return _SECRET_QUERY.sub(r"\g<1>" + REDACTED, path)


def bind(**keys: Any) -> None:
    """Add keys to every log line of the current request (or task)."""
    set_context_keys(**keys)


def clear() -> None:
    clear_context_keys()


def bound() -> dict[str, Any]:
    """The keys bound for the current request."""
    return dict(_JSON.thread_safe_get_current_keys())


class JsonFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON line: level, location, message, timestamp (RFC 3339), service,
    the bound keys, an exception's traceback under `exception`, and a record's extras."""

    def __init__(self, service: str = SERVICE) -> None:
        super().__init__(use_rfc3339=True, utc=True, serialize_stacktrace=False, service=service, name="%(name)s")


class TextFormatter(logging.Formatter):
    """One readable line: time, level, logger, message, then the bound keys as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        keys = " ".join(f"{k}={v}" for k, v in bound().items() if v is not None)
        return f"{line} [{keys}]" if keys else line


_JSON = LambdaPowertoolsFormatter()  # only to read the bound keys through Powertools' public method


class AccessFields(logging.Filter):
    """uvicorn's access line as fields (method, path, status, ...) besides its message, its path's
    stream token redacted in both; drops uvicorn's `color_message` duplicate."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("color_message", None)
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            if isinstance(record.args[2], str):
                record.args = (*record.args[:2], redact(record.args[2]), *record.args[3:])
            for name, value in zip(_ACCESS_FIELDS, record.args, strict=True):
                setattr(record, name, value)
        return True


def resolve(log_format: LogFormat, stream: Any = None) -> Literal["json", "text"]:
    """`auto`: text on a terminal, JSON lines anywhere else (a file, a pipe, a log shipper)."""
    if log_format != "auto":
        return log_format
    stream = stream or sys.stderr
    return "text" if hasattr(stream, "isatty") and stream.isatty() else "json"


def logging_config(log_format: LogFormat, level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` for the API and uvicorn (its server and access logs)
    on stderr in one format; passed to uvicorn as `log_config`."""
    formatter = JsonFormatter if resolve(log_format) == "json" else TextFormatter
    handler = {
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
        "formatter": "api",
        "filters": ["fields"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"fields": {"()": AccessFields}},
        "formatters": {"api": {"()": formatter}},
        "handlers": {"stderr": handler},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            # uvicorn's own handlers would print a second, differently formatted line.
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": level, "propagate": True},
            # One INFO line per model call from the HTTP client under the openai SDK: noise.
            "httpx": {"level": "WARNING"},
            "httpx2": {"level": "WARNING"},
        },
    }

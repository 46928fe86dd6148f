"""The Lambda Invoke route of the embedded AWS.

moto's own `Invoke` either runs the function in Docker (we have none) or echoes the
payload back. Here the function is looked up in moto's Lambda backend (created by
local provisioning or by `terraform apply`), and its `Handler` setting
(e.g. `lambdas.validate_part.handler.lambda_handler`) is imported and run in this process,
with the function's environment variables visible through `core.lambda_env`.
The answer has Lambda's shape: the handler's JSON result, or for an exception
`X-Amz-Function-Error: Unhandled` and `{"errorType": <class name>, ...}`, which is
what Step Functions' Retry/Catch match on.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import threading
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from core import lambda_env

log = logging.getLogger(__name__)

INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations/?$")
# Function names may come as name, name:qualifier, partial or full ARN.
_ARN = re.compile(
    r"^(?:arn:[^:]+:lambda:[^:]+:\d{12}:function:|\d{12}:function:)?(?P<name>[^:]+)(?::(?P<qualifier>[^:]+))?$"
)


@dataclass(frozen=True)
class Function:
    name: str
    handler: Callable[[Any, Any], Any]
    environment: dict[str, str]
    timeout_seconds: int


class LambdaContext:
    """The attributes of the real Lambda context object that our handlers use."""

    def __init__(self, function: Function) -> None:
        self.function_name = function.name
        self.aws_request_id = str(uuid.uuid4())
        self.memory_limit_in_mb = 128
        self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{function.name}"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


_invocations: Counter[str] = Counter()
_invocations_lock = threading.Lock()


def invocations() -> dict[str, int]:
    """How many times each function has been invoked through this route (by function name),
    since the process started: tests and benchmarks count Lambda calls with it, as Lambda's
    `Invocations` metric would."""
    with _invocations_lock:
        return dict(_invocations)


def function_name_from(raw: str) -> str:
    match = _ARN.match(unquote(raw))
    if not match:
        raise LookupError(raw)
    return match.group("name")


def _import_handler(dotted: str) -> Callable[[Any, Any], Any]:
    module_name, _, attribute = dotted.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


def lookup(name: str, account_id: str, region: str) -> Function:
    """The function as moto stores it; LookupError when it does not exist."""
    from moto.awslambda.models import lambda_backends

    try:
        stored = lambda_backends[account_id][region].get_function(name)
    except Exception as exc:  # moto raises its own UnknownFunctionException
        raise LookupError(name) from exc
    handler_path = str(stored.handler)
    try:
        handler = _import_handler(handler_path)
    except (ImportError, AttributeError, ValueError) as exc:
        raise LookupError(f"{name}: handler {handler_path!r} cannot be imported ({exc})") from exc
    return Function(
        name=stored.function_name,
        handler=handler,
        environment=dict(stored.environment_vars or {}),
        timeout_seconds=int(stored.timeout or 3),
    )


def invoke(function: Function, payload: bytes) -> tuple[int, dict[str, str], bytes]:
    """Run the handler; answer as Lambda's Invoke does (status, headers, body)."""
    with _invocations_lock:
        _invocations[function.name] += 1
    event = json.loads(payload) if payload else {}
    # As Lambda's runtime does, the function's own name beside its variables.
    token = lambda_env.use({**function.environment, "AWS_LAMBDA_FUNCTION_NAME": function.name})
    try:
        result = function.handler(event, LambdaContext(function))
    except Exception as exc:  # noqa: BLE001 - every handler error becomes a function error, like Lambda
        body = {
            "errorType": type(exc).__name__,
            "errorMessage": str(exc),
            "stackTrace": traceback.format_exception(exc)[-5:],
        }
        # The handler logged it (lambdas/common/observability.py: one line, a traceback only
        # for an unexpected error); here only for debugging the embedded AWS itself.
        log.debug("lambda %s raised %s: %s", function.name, type(exc).__name__, exc, exc_info=exc)
        return 200, {"X-Amz-Function-Error": "Unhandled"}, json.dumps(body).encode()
    finally:
        lambda_env.reset(token)
    return 200, {}, json.dumps(result).encode()


def run_in_background(function: Function, payload: bytes) -> None:
    """`InvocationType: Event`: accepted at once, run on its own thread."""
    threading.Thread(target=invoke, args=(function, payload), daemon=True, name=f"lambda-{function.name}").start()

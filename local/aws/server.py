"""The embedded AWS: moto's server app on a loopback port, with state machines really
executing, behind a thin WSGI layer that adds what moto lacks (Lambda handlers run
in-process, two Step Functions actions Terraform needs).

One per process: moto keeps its backends in module globals. Connections are kept
(HTTP/1.1, `keepalive.py`), and every call is counted by operation (`traffic()`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from local.aws import lambda_router, moto_patches, sfn_extras, upload_patches

if TYPE_CHECKING:
    from local.aws.keepalive import TrackingServer

log = logging.getLogger(__name__)

# SigV4's credential scope: <key>/<date>/<region>/<service>/aws4_request
_SCOPE_IN_AUTH = re.compile(r"Credential=[^/]+/\d{8}/(?P<region>[^/]+)/(?P<service>[^/]+)/")
StartResponse = Callable[..., Any]


def _region(environ: dict[str, Any], default: str) -> str:
    match = _SCOPE_IN_AUTH.search(environ.get("HTTP_AUTHORIZATION", ""))
    return match.group("region") if match else default


def operation_of(environ: dict[str, Any]) -> str:
    """`<service>.<action>` of a call, e.g. `dynamodb.GetItem`, `lambda.Invoke`, `s3.PUT`."""
    match = _SCOPE_IN_AUTH.search(environ.get("HTTP_AUTHORIZATION", ""))
    service = match.group("service") if match else "unsigned"
    target = environ.get("HTTP_X_AMZ_TARGET", "")  # JSON protocols: DynamoDB_20120810.GetItem
    if target:
        return f"{service}.{target.rpartition('.')[2]}"
    if lambda_router.INVOKE_PATH.match(environ.get("PATH_INFO", "")):
        return f"{service}.Invoke"
    return f"{service}.{environ.get('REQUEST_METHOD', '')}"


@dataclass(frozen=True)
class Traffic:
    """What the embedded AWS served since it started: calls by operation, and TCP connections."""

    calls: Counter[str] = field(default_factory=Counter)
    connections: int = 0

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def _read_body(environ: dict[str, Any]) -> bytes:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    return environ["wsgi.input"].read(length) if length else b""


def _json_response(
    start_response: StartResponse, status: int, body: bytes, headers: dict[str, str] | None = None
) -> Iterable[bytes]:
    reason = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found"}[status]
    all_headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}
    start_response(f"{status} {reason}", list(all_headers.items()))
    return [body]


def _error(start_response: StartResponse, status: int, code: str, message: str) -> Iterable[bytes]:
    body = json.dumps({"__type": code, "Type": "User", "message": message, "Message": message}).encode()
    return _json_response(start_response, status, body, {"X-Amzn-ErrorType": code})


class EmbeddedApp:
    """WSGI app: our routes first, everything else to moto."""

    def __init__(self, moto_app: Any, region: str) -> None:
        self._moto = moto_app
        self._region = region
        self._calls: Counter[str] = Counter()
        self._calls_lock = threading.Lock()

    def calls(self) -> Counter[str]:
        with self._calls_lock:
            return Counter(self._calls)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        operation = operation_of(environ)
        with self._calls_lock:
            self._calls[operation] += 1
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") == "POST" and (match := lambda_router.INVOKE_PATH.match(path)):
            return self._invoke(environ, start_response, match.group("name"))
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target in sfn_extras.ACTIONS:
            request = json.loads(_read_body(environ) or b"{}")
            try:
                answer = sfn_extras.answer(target, request, _account_id(), _region(environ, self._region))
            except Exception as exc:  # noqa: BLE001 - moto's not-found errors
                return _error(start_response, 400, "StateMachineDoesNotExist", str(exc))
            return _json_response(start_response, 200, json.dumps(answer, default=str).encode())
        return self._moto(environ, start_response)

    def _invoke(self, environ: dict[str, Any], start_response: StartResponse, raw_name: str) -> Iterable[bytes]:
        payload = _read_body(environ)
        try:
            name = lambda_router.function_name_from(raw_name)
            function = lambda_router.lookup(name, _account_id(), _region(environ, self._region))
        except LookupError as exc:
            return _error(start_response, 404, "ResourceNotFoundException", f"Function not found: {exc}")
        if environ.get("HTTP_X_AMZ_INVOCATION_TYPE") == "Event":
            lambda_router.run_in_background(function, payload)
            return _json_response(start_response, 202, b"")
        status, headers, body = lambda_router.invoke(function, payload)
        headers["X-Amz-Executed-Version"] = "$LATEST"
        return _json_response(start_response, status, body, headers)


def _account_id() -> str:
    from moto.core import DEFAULT_ACCOUNT_ID

    return DEFAULT_ACCOUNT_ID


class EmbeddedAWS:
    """Start/stop the embedded AWS on a loopback port in a background thread.

    `keep_alive=False` serves as werkzeug's development server does (a connection and a
    thread per call): the baseline of `bench/local_stack.py`.
    """

    def __init__(
        self, port: int = 0, host: str = "127.0.0.1", region: str = "us-east-1", keep_alive: bool = True
    ) -> None:
        self._host = host
        self._requested_port = port
        self._region = region
        self._keep_alive = keep_alive
        self._server: TrackingServer | None = None
        self._app: EmbeddedApp | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return self._server.server_port

    @property
    def endpoint_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def start(self) -> EmbeddedAWS:
        from moto.core.config import default_user_config
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )

        from local.aws.keepalive import KeepAliveRequestHandler, TrackingServer

        moto_patches.apply()
        upload_patches.apply()
        # One access-log line per AWS call drowns everything else; errors still show.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        # The interpreter logs every caught state error (retries, aborted Map iterations) at
        # ERROR with a repr of the whole state tree; the execution history has the same facts.
        logging.getLogger("moto.stepfunctions.parser.asl.component.eval_component").setLevel(logging.CRITICAL)
        # The interpreter runs ASL for real only with this switch.
        default_user_config["stepfunctions"] = {"execute_state_machine": True}
        app = self._app = EmbeddedApp(DomainDispatcherApplication(create_backend_app), self._region)
        handler = KeepAliveRequestHandler if self._keep_alive else MotoRequestHandler
        self._server = TrackingServer(self._host, self._requested_port, app, handler)
        # The interpreter calls other services at http://localhost:$MOTO_PORT.
        os.environ["MOTO_PORT"] = str(self.port)
        self._thread = threading.Thread(target=self._server.serve_forever, name="embedded-aws", daemon=True)
        self._thread.start()
        log.info("embedded AWS listening on %s", self.endpoint_url)
        return self

    def serve_forever(self) -> None:
        """Run in the foreground (the `python -m local.aws` process)."""
        if self._server is None:
            self.start()
        assert self._thread is not None
        try:
            self._thread.join()
        except KeyboardInterrupt:
            self.stop()

    def traffic(self) -> Traffic:
        """Calls by operation and connections accepted since start (tests and benchmarks read it)."""
        assert self._app is not None and self._server is not None, "start() first"
        return Traffic(self._app.calls(), self._server.connections)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> EmbeddedAWS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

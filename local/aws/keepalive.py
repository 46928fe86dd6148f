"""The embedded AWS's HTTP server with persistent connections (HTTP/1.1 keep-alive).

werkzeug's development server answers every request with `Connection: close`, so each AWS
call of the API, the Lambdas and the Step Functions interpreter opened a TCP connection and
the server started a thread for it. Here a connection, and its thread, serve request after
request for as long as the client keeps it: the clients' pools (botocore's urllib3, the
API's aiohttp) already reuse connections that stay open.

The WSGI runner is ours because werkzeug's cannot keep a connection: after each response it
reads whatever else the socket holds for 10 ms and discards it (what would be the next
request on a kept connection). Here a request's body ends at its Content-Length (or its last
chunk), what the application left unread of it is read after the response, and the next
request starts where it should.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from typing import IO, Any, cast

from moto.moto_server.werkzeug_app import MotoRequestHandler
from werkzeug.exceptions import ClientDisconnected
from werkzeug.serving import ThreadedWSGIServer
from werkzeug.wsgi import LimitedStream

log = logging.getLogger(__name__)

# An idle kept connection's thread ends after this; clients reconnect transparently (urllib3
# checks a pooled connection before reuse, aiohttp closes its own idle ones after 15 s).
IDLE_SECONDS = 300.0
_DRAIN_CHUNK = 64 * 1024
_NO_BODY_STATUSES = {204, 304}


class KeepAliveRequestHandler(MotoRequestHandler):
    """moto's request handler (its header handling kept), HTTP/1.1 with persistent connections."""

    protocol_version = "HTTP/1.1"
    # Headers and body are two writes: with Nagle's algorithm on, the second waits for the
    # client's delayed ACK of the first (40 ms per call on Linux) once the connection is kept.
    disable_nagle_algorithm = True
    timeout = IDLE_SECONDS

    def run_wsgi(self) -> None:
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.environ = environ = self.make_environ()  # werkzeug's address_string reads it
        if not environ.get("wsgi.input_terminated"):  # chunked bodies end at their last chunk already
            length = int(environ.get("CONTENT_LENGTH") or 0)
            environ["wsgi.input"] = LimitedStream(cast(IO[bytes], self.rfile), length)
        body = environ["wsgi.input"]
        response = _Response(self)
        try:
            chunks = self.server.app(environ, response.start)
            try:
                for data in chunks:
                    response.write(data)
                response.end()
            finally:
                if hasattr(chunks, "close"):
                    chunks.close()
            while body.read(_DRAIN_CHUNK):  # the rest of the body, so the next request line comes next
                pass
        except (ConnectionError, TimeoutError, ClientDisconnected):  # the client went away
            self.close_connection = True
        except Exception:
            self.close_connection = True
            log.exception("embedded AWS: error on %s %s", self.command, self.path)
            if not response.started:
                response.start("500 Internal Server Error", [("Content-Length", "0")])
                response.end()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # werkzeug formats an access-log line (path, colours, date) for every call even when its
        # logger drops it; server.py keeps that logger at WARNING.
        if logging.getLogger("werkzeug").isEnabledFor(logging.INFO):
            super().log_request(code, size)

    def log_error(self, format: str, *args: Any) -> None:
        if args and isinstance(args[0], TimeoutError):
            return  # an idle kept connection timing out is routine
        super().log_error(format, *args)


class _Response:
    """One response on a kept connection: Content-Length or chunked, `Connection: close` only
    when the connection ends with it."""

    def __init__(self, handler: KeepAliveRequestHandler) -> None:
        self._handler = handler
        self._status = ""
        self._headers: list[tuple[str, str]] = []
        self.started = False
        self._chunked = False

    def start(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if exc_info is not None and self.started:
            raise exc_info[1].with_traceback(exc_info[2])
        self._status, self._headers = status, headers
        return self.write

    def write(self, data: bytes) -> None:
        handler = self._handler
        if not self.started:
            self.started = True
            code_text, _, reason = self._status.partition(" ")
            code = int(code_text)
            handler.send_response(code, reason)
            names = set()
            for name, value in self._headers:
                if name.lower() != "connection":
                    handler.send_header(name, value)
                names.add(name.lower())
            delimited = (
                "content-length" in names or handler.command == "HEAD" or 100 <= code < 200 or code in _NO_BODY_STATUSES
            )
            if not delimited:
                if handler.request_version == "HTTP/1.1":
                    self._chunked = True
                    handler.send_header("Transfer-Encoding", "chunked")
                else:
                    handler.close_connection = True  # an HTTP/1.0 client reads the body until the close
            if handler.close_connection:
                handler.send_header("Connection", "close")
            handler.end_headers()
        if data:
            handler.wfile.write(b"%x\r\n%b\r\n" % (len(data), data) if self._chunked else data)

    def end(self) -> None:
        if not self.started:
            self.write(b"")
        if self._chunked:
            self._handler.wfile.write(b"0\r\n\r\n")


class TrackingServer(ThreadedWSGIServer):
    """werkzeug's threaded server (a thread per connection) that counts the connections it
    accepts and can end the open ones: a kept idle connection's thread waits in a read until
    its client or `close_connections` ends it."""

    def __init__(self, host: str, port: int, app: Any, handler: type[MotoRequestHandler]) -> None:
        super().__init__(host, port, app, handler)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self.connections = 0  # accepted since start

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
            self.connections += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            open_now = list(self._open)
        for sock in open_now:
            with contextlib.suppress(OSError):  # already closed by the client
                sock.shutdown(socket.SHUT_RDWR)

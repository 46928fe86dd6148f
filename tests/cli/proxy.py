"""A TCP proxy in front of the API that can drop an event stream mid-way, as a flaky network would.

It forwards bytes both ways untouched. For each request for `/events` it records the
`Last-Event-ID` header; once a stream has carried the `cut_after` marker and the block just
forwarded ends an event (a blank line), it ends that connection: the client reads everything
forwarded so far, then EOF in the middle of the chunked body.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

_EVENTS_REQUEST = re.compile(rb"^GET /validations/[^ ]+/events[ ?]", re.MULTILINE)
_LAST_EVENT_ID = re.compile(rb"^last-event-id: *(\S*)\r$", re.MULTILINE | re.IGNORECASE)
_EVENT_ID = re.compile(rb"^id: (\d+)\r?$", re.MULTILINE)


@dataclass
class _Connection:
    is_events: bool = False  # it carried a request for /events
    forwarded: bytearray = field(default_factory=bytearray)  # bytes sent to the client, once it is a stream


class CuttingProxy:
    def __init__(self, upstream_port: int, cut_after: bytes) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self.stream_requests: list[str | None] = []  # Last-Event-ID of each /events request, None without
        self.cuts: list[bytes] = []  # what each cut stream had forwarded
        self._sockets: list[socket.socket] = []
        self._cut_done = False
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> CuttingProxy:
        self._spawn(self._accept)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        # shutdown() wakes a thread blocked in accept() or recv() on Linux; close() alone does not.
        with self._lock:
            sockets = [self._listener, *self._sockets]
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in list(self._threads):
            thread.join(timeout=5)

    def last_id_before_cut(self) -> str | None:
        """The id of the last event the cut stream forwarded (what a resuming client must send back)."""
        ids = _EVENT_ID.findall(self.cuts[0]) if self.cuts else []
        return ids[-1].decode() if ids else None

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed: the proxy is stopping
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._sockets += [client, upstream]
            connection = _Connection()
            self._spawn(self._to_upstream, client, upstream, connection)
            self._spawn(self._to_client, upstream, client, connection)

    def _to_upstream(self, client: socket.socket, upstream: socket.socket, connection: _Connection) -> None:
        while data := _recv(client):
            if _EVENTS_REQUEST.search(data):
                header = _LAST_EVENT_ID.search(data)
                with self._lock:
                    self.stream_requests.append(header.group(1).decode() if header else None)
                connection.is_events = True
            if not _send(upstream, data):
                break
        upstream.close()

    def _to_client(self, upstream: socket.socket, client: socket.socket, connection: _Connection) -> None:
        while data := _recv(upstream):
            if not _send(client, data):
                break
            if not connection.is_events:
                continue
            connection.forwarded += data
            with self._lock:
                # sse-starlette writes an event as one part, ending with its blank line.
                due = self.cut_after in connection.forwarded and connection.forwarded.endswith(b"\r\n\r\n")
                if due and not self._cut_done:
                    self._cut_done = True
                    self.cuts.append(bytes(connection.forwarded))
                    client.shutdown(socket.SHUT_WR)  # EOF after what was forwarded: nothing is lost in flight
                    upstream.close()
                    return
        client.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True

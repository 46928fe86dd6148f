"""The embedded AWS keeps connections (local/aws/keepalive.py)."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from local.aws.server import EmbeddedAWS
from tests.support.stack import Aws

DASHBOARD = "/moto-api/"  # answers without reading the request's body


def _connection(endpoint_url: str) -> http.client.HTTPConnection:
    address = urlsplit(endpoint_url)
    return http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=30)


def _get(connection: http.client.HTTPConnection, path: str = DASHBOARD, **kwargs: object) -> http.client.HTTPResponse:
    connection.request("GET", path, **kwargs)  # type: ignore[arg-type]  # body, headers, encode_chunked
    response = connection.getresponse()
    response.read()
    return response


def test_one_connection_serves_call_after_call(embedded_aws: EmbeddedAWS) -> None:
    connection = _connection(embedded_aws.endpoint_url)
    first = _get(connection)
    kept = connection.sock
    answers = [_get(connection).status for _ in range(5)]

    assert first.status == 200 and first.getheader("Connection") is None
    assert kept is not None and connection.sock is kept  # http.client reconnects when a response closes
    assert answers == [200] * 5
    connection.close()


def test_a_boto3_client_reuses_its_connection(aws: Aws) -> None:
    client = aws.new_client("dynamodb")
    for _ in range(20):
        client.list_tables(Limit=1)

    manager = client._endpoint.http_session._manager  # botocore's urllib3 PoolManager
    pool = manager.connection_from_url(aws.endpoint_url)
    assert pool.num_connections == 1  # with a connection per call: 20


def _body_shaped_like_a_request() -> Iterator[bytes]:
    # Were it read as the next request, its answer (404) would be taken for the next call's.
    yield b"GET /no-such-path HTTP/1.1\r\nHost: x\r\n\r\n"
    yield b"GET /no-such-path HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_left_unread_never_becomes_the_next_request(embedded_aws: EmbeddedAWS, framing: str) -> None:
    connection = _connection(embedded_aws.endpoint_url)
    if framing == "chunked":
        first = _get(connection, body=_body_shaped_like_a_request(), encode_chunked=True)
    else:
        first = _get(connection, body=b"".join(_body_shaped_like_a_request()))
    kept = connection.sock
    second = _get(connection)

    assert (first.status, second.status) == (200, 200)
    assert connection.sock is kept
    connection.close()


def test_a_client_that_asks_to_close_gets_its_connection_closed(embedded_aws: EmbeddedAWS) -> None:
    connection = _connection(embedded_aws.endpoint_url)
    answer = _get(connection, headers={"Connection": "close"})

    assert answer.status == 200 and answer.getheader("Connection") == "close"
    assert connection.sock is None  # http.client closed it, as the answer said


def test_stopping_ends_the_kept_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOTO_PORT", "0")  # start() points the interpreter at this server; restored after
    server = EmbeddedAWS().start()
    endpoint = urlsplit(server.endpoint_url)
    try:
        connection = _connection(server.endpoint_url)
        assert _get(connection).status == 200
        sock = connection.sock
        assert sock is not None
    finally:
        server.stop()

    sock.settimeout(10)
    try:
        assert sock.recv(1) == b""  # the server ended the idle connection (its thread with it)
    except ConnectionResetError:
        pass  # ended as well
    finally:
        sock.close()
    with pytest.raises(OSError):  # and listens no more
        socket.create_connection((endpoint.hostname, endpoint.port), timeout=2).close()

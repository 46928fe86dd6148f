"""Start and stop our own processes for tests (the embedded AWS alone, the API)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import IO, Any

import httpx

from app.settings import PROJECT_ROOT
from tests.support.stack import wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


@contextmanager
def process(
    args: list[str],
    ready_url: str,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    output: IO[bytes] | None = None,
    stderr_to: IO[bytes] | None = None,
) -> Iterator[subprocess.Popen[Any]]:
    """Run `python <args>` from the project root until the block ends; always reaped.
    With `output`, the process's stdout and stderr both go there (its whole log); with
    `stderr_to`, its stderr (the logs) only."""
    # stderr to a file, not a pipe: a pipe nobody reads blocks a chatty process once its buffer fills.
    chosen = output or stderr_to
    with nullcontext(chosen) if chosen is not None else tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=PROJECT_ROOT,
            env={**os.environ, **(env or {})},
            stdout=output or subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            wait_for(
                lambda: proc.poll() is not None or _answers(ready_url), timeout=timeout, interval=0.2, what=ready_url
            )
            if proc.poll() is not None:
                stderr.seek(0)
                raise AssertionError(f"{args} exited: {stderr.read().decode(errors='replace')[-2000:]}")
            yield proc
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """Terminate a process and reap it; killed if it has not ended within `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def embedded_aws_process() -> Iterator[str]:
    """`python -m local.aws` on a free port; yields its endpoint URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process(["-m", "local.aws", "--port", str(port)], f"{url}/moto-api/"):
        yield url

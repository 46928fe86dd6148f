"""The installed `validate` console script, run as a subprocess, and the API served over HTTP for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.main import create_app
from app.settings import Settings
from cli.main import main
from local.serving import ThreadedServer
from tests.support.stack import ADMIN_KEY

# `make install` puts it beside the venv's python (pyproject's [project.scripts]).
VALIDATE = Path(sys.executable).with_name("validate")


def json_answer(out: str) -> Any:
    """The indented JSON document `--json` printed, whatever else this process printed meanwhile (the
    embedded Lambdas print their metric documents, one compact line each, to stdout)."""
    document, _ = json.JSONDecoder().raw_decode(out, out.index("{\n"))
    return document


def json_lines(out: str, key: str) -> list[dict[str, Any]]:
    """The JSON Lines rows holding `key` (the embedded Lambdas' metric lines are JSON too)."""
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [row for row in rows if key in row]


def cli_env(url: str, key: str = ADMIN_KEY) -> dict[str, str]:
    """The environment of a `validate` run: the test's own, the service's URL and key, a wide terminal."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("VALIDATE_")}
    return {**inherited, "VALIDATE_URL": url, "VALIDATE_API_KEY": key, "COLUMNS": "160"}


def run_cli(*args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 120) -> Any:
    """`validate ARGS` to its end: the CompletedProcess (text stdout and stderr)."""
    assert VALIDATE.exists(), f"{VALIDATE} is missing: `make install` installs the project's console script"
    return subprocess.run(
        [str(VALIDATE), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def served(settings: Settings) -> Iterator[str]:
    """The API over real HTTP (the CLI is another process); its URL until the test ends.

    Streams poll every 0.2 s and ask clients to reconnect after 0.1 s, so a resumed stream
    costs the test no two-second pause; a DELETE answers at once (CANCELLING while calls are held).
    """
    overrides = {"sse_poll_seconds": 0.2, "sse_retry_millis": 100, "cancel_settle_seconds": 0}
    app = create_app(settings.model_copy(update=overrides))
    server = ThreadedServer(app, lifespan="on").start()
    try:
        yield server.url
    finally:
        server.stop()


Invoke = Callable[..., tuple[int, str, str]]


@pytest.fixture
def invoke(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """`validate ARGS` in this process (cli.main.main: the console script's entry point): (code, out, err).
    The cheap way to run short commands; the flows themselves run the installed script (`run_cli`)."""
    for name in ("VALIDATE_URL", "VALIDATE_API_KEY"):
        monkeypatch.delenv(name, raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as ended:
            main(list(args))
        captured = capsys.readouterr()
        return int(ended.value.code or 0), captured.out, captured.err

    return run

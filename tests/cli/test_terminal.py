"""`validate submit --wait` in a real terminal (tmux): the live progress bars, read with capture-pane.

`.ci/run` installs tmux, so CI always runs this; on a machine without it the test says so and skips.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import VALIDATE, cli_env
from tests.support.stack import HeldCalls, wait_for

pytestmark = pytest.mark.stack  # drives the CLI in tmux against a live API

WIDTH, HEIGHT = 120, 40


class Terminal:
    """One tmux server of its own (its own socket), one window of WIDTH × HEIGHT."""

    def __init__(self) -> None:
        self.socket = f"validate-test-{uuid.uuid4().hex[:8]}"

    def tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self, command: str, env: dict[str, str]) -> None:
        # The server takes its environment from the client that starts it: this one's.
        # -u: UTF-8 whatever the locale (a CI's may be C), so the bars are drawn as in a user's terminal.
        subprocess.run(
            ["tmux", "-u", "-L", self.socket, "new-session", "-d", "-x", str(WIDTH), "-y", str(HEIGHT), command],
            env={**env, "TERM": "xterm-256color"},
            check=True,
            timeout=30,
        )

    def screen(self) -> str:
        """What the window shows now (plain text, no colours)."""
        return self.tmux("capture-pane", "-p", "-J")

    def wait_for_screen(self, pattern: str) -> str:
        """The screen, once it shows `pattern` (a regular expression)."""
        screen: str = wait_for(
            lambda: (text := self.screen()) and re.search(pattern, text) and text, timeout=60, what=pattern
        )
        return screen

    def stop(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (.ci/run installs it): the terminal display cannot be checked here")
    window = Terminal()
    try:
        yield window
    finally:
        window.stop()


@pytest.mark.slow(6)
def test_submit_wait_draws_a_bar_per_validation_and_per_running_file_in_a_terminal(
    served: str, hold_calls: Callable[[int], HeldCalls], terminal: Terminal, tmp_path: Path
) -> None:
    batch = tmp_path / "batch"
    batch.mkdir()
    for name, text in {"alpha.txt": "row 1\n", "beta.txt": "row 2\n", "gamma.txt": "the secret\n"}.items():
        (batch / name).write_text(text)
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps(['The file must not contain "secret".']))
    held = hold_calls(1)  # one file is decided; the others' calls wait at the model until release()
    command = f"{shlex.quote(str(VALIDATE))} submit {batch} --rules {rules} --wait; echo EXIT=$?; sleep 600"

    terminal.start(command, cli_env(served))
    # The first file's line (its result event) above the validation's bar at 1/3 (its progress event).
    during = terminal.wait_for_screen(r"(?ms)^(PASS|FAIL) .*^validation \w{8} .* 1/3 RUNNING")
    held.release()
    after = terminal.wait_for_screen(r"EXIT=\d")
    (tmp_path / "during.txt").write_text(during)  # the captures, for a reader of a failed run
    (tmp_path / "after.txt").write_text(after)

    # Mid-run: the decided file as a line; a bar per file still waiting, at 0 of its 1 part.
    decided = re.findall(r"^(PASS|FAIL)\s+(\w+\.txt)", during, re.MULTILINE)
    waiting = re.findall(r"^\s+(\w+\.txt)\s+\S*\s*0/1\s+waiting", during, re.MULTILINE)
    assert len(decided) == 1 and len(waiting) == 2, during
    assert sorted([decided[0][1], *waiting]) == ["alpha.txt", "beta.txt", "gamma.txt"]
    # At the end: the bar full and SUCCEEDED, every file's line, the table, exit 1 (gamma.txt failed).
    assert re.search(r"validation \w{8} .* 3/3 SUCCEEDED", after), after
    lines = sorted(re.findall(r"^(PASS|FAIL)\s+(\w+\.txt)", after, re.MULTILINE), key=lambda m: m[1])
    assert lines == [("PASS", "alpha.txt"), ("PASS", "beta.txt"), ("FAIL", "gamma.txt")], after
    assert "EXIT=1" in after and "2 passed, 1 failed" in after

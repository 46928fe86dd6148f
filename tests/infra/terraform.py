"""Find terraform and an offline AWS provider, and run terraform in a scratch copy of
infra/terraform (state, lock file and .terraform stay out of the repository)."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.settings import PROJECT_ROOT
from tests.servers import stop

TERRAFORM_DIR = PROJECT_ROOT / "infra" / "terraform"
PROVIDER = Path("registry.terraform.io") / "hashicorp" / "aws"


def _os_arch() -> str:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)
    return f"{sys.platform}_{arch}"


def _has_aws_provider(root: Path) -> bool:
    """`root` is a -plugin-dir: <root>/registry.terraform.io/hashicorp/aws/5.x/<os_arch>/terraform-provider-aws*."""
    return any((root / PROVIDER).glob(f"5.*/{_os_arch()}/terraform-provider-aws*"))


def plugin_dir_candidates() -> list[Path]:
    home = Path.home()
    data_home = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    roots = [
        home / ".terraform.d" / "plugins",
        data_home / "terraform" / "plugins",
        Path("/usr/local/share/terraform/plugins"),
        Path("/usr/share/terraform/plugins"),
    ]
    # Mirrors unpacked anywhere one level under /opt (e.g. /opt/<mirror>/registry.terraform.io/...).
    roots += sorted(p.parent for p in Path("/opt").glob(f"*/{PROVIDER.parts[0]}"))
    return roots


def find_plugin_dir() -> Path | None:
    """TF_PLUGIN_DIR if set, else the first likely root holding hashicorp/aws 5.x for this platform."""
    configured = os.environ.get("TF_PLUGIN_DIR")
    if configured:
        return Path(configured) if _has_aws_provider(Path(configured)) else None
    return next((root for root in plugin_dir_candidates() if _has_aws_provider(root)), None)


def missing_tools() -> str | None:
    """Why the proof cannot run here, or None."""
    if shutil.which("terraform") is None:
        return "terraform is not on PATH"
    if find_plugin_dir() is None:
        return f"no hashicorp/aws 5.x provider for {_os_arch()} (set TF_PLUGIN_DIR to a -plugin-dir)"
    return None


@dataclass
class Terraform:
    """terraform in a scratch copy of the module; every run is timed and logged."""

    workdir: Path
    plugin_dir: Path
    log: Any  # callable(str)
    # TF_REATTACH_PROVIDERS while `serving_the_provider()` runs: every command uses that one provider process.
    reattach: str | None = field(default=None, init=False)

    @classmethod
    def copy_module(cls, scratch: Path, plugin_dir: Path, log: Any) -> Terraform:
        workdir = scratch / "terraform"
        shutil.copytree(TERRAFORM_DIR, workdir, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*", "*.tfvars*"))
        (scratch / "terraformrc").write_text("")  # no user CLI config: no network installs
        return cls(workdir, plugin_dir, log)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "TF_CLI_CONFIG_FILE": str(self.workdir.parent / "terraformrc"),
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "CHECKPOINT_DISABLE": "1",
            **({"TF_REATTACH_PROVIDERS": self.reattach} if self.reattach else {}),
        }

    def run(self, *args: str, ok_codes: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        result = subprocess.run(
            ["terraform", *args, "-no-color"],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        self.log(f"terraform {args[0]}: exit {result.returncode} in {time.monotonic() - started:.1f} s")
        if result.returncode not in ok_codes:
            command = " ".join(args)
            raise AssertionError(
                f"terraform {command} exited {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        return result

    def init(self) -> None:
        self.run("init", f"-plugin-dir={self.plugin_dir}")

    @contextmanager
    def serving_the_provider(self) -> Iterator[None]:
        """One AWS provider process for every command in the block, attached to through
        TF_REATTACH_PROVIDERS, as the provider's own acceptance tests run it (terraform-plugin-testing
        attaches each command to a provider it serves): the binary `init` installed, in its debug mode.

        Otherwise each command starts the 700 MB provider again, two or three times (schemas, plan,
        apply), ~3 s of CPU each before it makes a call: ~35 s of CPU over the proof's commands.
        """
        (binary,) = (self.workdir / ".terraform" / "providers" / PROVIDER).glob(
            f"*/{_os_arch()}/terraform-provider-aws*"
        )
        output = self.workdir.parent / "provider.log"
        # Without AWS_CA_BUNDLE (set on some machines): the provider wraps its HTTP client for a bundle
        # once per process, and a second configuration in one process fails ("unable to add custom
        # RootCAs HTTPClient"). The proof speaks plain HTTP to loopback: no certificate is read.
        env = {name: value for name, value in os.environ.items() if name != "AWS_CA_BUNDLE"}
        with open(output, "wb") as log_file:
            provider = subprocess.Popen(
                [str(binary), "-debug"], stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=self.workdir
            )
        try:
            deadline = time.monotonic() + 120
            while not (found := re.search(r"TF_REATTACH_PROVIDERS='(\{.*\})'", output.read_text(errors="replace"))):
                if provider.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the provider did not start:\n{output.read_text(errors='replace')[-4000:]}")
                time.sleep(0.1)
            self.reattach = found.group(1)
            json.loads(self.reattach)  # what terraform will parse
            self.log(f"provider {binary.name} serving (pid {provider.pid})")
            yield
        finally:
            self.reattach = None
            stop(provider)

    def outputs(self) -> dict[str, Any]:
        return {name: o["value"] for name, o in json.loads(self.run("output", "-json").stdout).items()}

"""Finding the AWS provider for an offline `terraform init` (never a hard-coded path)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra import terraform


def _provider_dir(root: Path, version: str = "5.100.0") -> Path:
    platform_dir = root / "registry.terraform.io" / "hashicorp" / "aws" / version / terraform._os_arch()
    platform_dir.mkdir(parents=True)
    (platform_dir / f"terraform-provider-aws_v{version}_x5").write_text("")
    return root


def test_tf_plugin_dir_wins_when_it_holds_the_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_PLUGIN_DIR", str(_provider_dir(tmp_path / "mirror")))

    assert terraform.find_plugin_dir() == tmp_path / "mirror"


def test_tf_plugin_dir_without_a_5x_provider_is_reported_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TF_PLUGIN_DIR", str(_provider_dir(tmp_path / "old", version="4.67.0")))

    assert terraform.find_plugin_dir() is None
    assert terraform.missing_tools() is not None


def test_the_user_plugin_directory_is_searched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_PLUGIN_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    expected = _provider_dir(tmp_path / ".terraform.d" / "plugins")

    assert terraform.plugin_dir_candidates()[0] == expected
    assert terraform.find_plugin_dir() == expected

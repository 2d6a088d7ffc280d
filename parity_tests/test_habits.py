"""The project's habits: one version everywhere, the licence pyproject declares, typed packages."""

from __future__ import annotations

import hashlib
import importlib
from importlib import metadata
from pathlib import Path

import pytest

from seres_cli.main import main

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("seres", "seres_jax", "seres_torch", "seres_cli")


@pytest.mark.parametrize(
    "package",
    [
        pytest.param(p, marks=pytest.mark.requires_torch) if p == "seres_torch" else p
        for p in PACKAGES
    ],
)
def test_package_version_is_the_distribution_version(package):
    assert importlib.import_module(package).__version__ == metadata.version("seres")


def test_seres_version_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"seres {metadata.version('seres')}\n"


def test_license_is_the_apache_2_text():
    # The SHA-256 of https://www.apache.org/licenses/LICENSE-2.0.txt, byte for byte.
    digest = hashlib.sha256((ROOT / "LICENSE").read_bytes()).hexdigest()
    assert digest == "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
    assert metadata.metadata("seres")["License"] == "Apache-2.0"


@pytest.mark.parametrize("package", PACKAGES)
def test_package_is_marked_typed(package):
    assert (ROOT / package / "py.typed").is_file()

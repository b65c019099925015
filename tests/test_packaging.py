"""pyproject's dependencies are compatible ranges, the lock pins a version inside each, and installing the
package into this (locked) environment changes nothing: no setup of ours pulls a newer torch."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==", 1)
            pins[canonicalize_name(name)] = version.split(";")[0].strip()
    return pins


def test_dependencies_are_ranges_that_hold_the_locked_versions():
    lock = _lock()
    for text in _project()["dependencies"]:
        req = Requirement(text)
        assert not any(s.operator == "==" for s in req.specifier), f"{text}: an exact pin (the lock pins)"
        assert req.specifier, f"{text}: no range at all"
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is not in requirements/lock.txt"
        assert req.specifier.contains(lock[name]), f"lock pins {req.name}=={lock[name]}, outside {text}"


def test_torch_range_holds_the_version_setup_installs_and_python_matches_the_lock():
    torch = next(Requirement(d) for d in _project()["dependencies"] if d.startswith("torch"))
    assert torch.specifier.contains("2.13.0") and _lock()["torch"] == "2.13.0"
    assert "2.13.0" in (ROOT / "Makefile").read_text()  # installed first, before the lock and the package
    assert _project()["requires-python"] == ">=3.11"


def test_installing_the_package_with_its_dependencies_installs_nothing_else():
    """``pip install .`` (dependencies included) in the set-up environment: every range is satisfied by what
    ``make setup`` installed, so pip would install vlpeft alone (no newer torch, nothing from a registry)."""
    report = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-build-isolation",
         "--no-index", "--report", "-", str(ROOT)],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    installs = [item["metadata"]["name"] for item in json.loads(report.stdout)["install"]]
    assert installs == ["vlpeft"]

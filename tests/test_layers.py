"""The layer contract of docs/DESIGN.md, checked by import-linter (`[tool.importlinter]` in
pyproject.toml): arrows point down, sibling modules form no cycles."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_imports_point_down_and_siblings_form_no_cycles() -> None:
    linter = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    done = subprocess.run([linter, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Arrows point down KEPT" in done.stdout and "Sibling modules form no cycles KEPT" in done.stdout


def test_the_contract_names_every_package() -> None:
    """`exhaustive = true` makes a new top-level module without a layer fail the contract; this checks
    that the contract itself still lists the layers docs/DESIGN.md draws."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")
    assert layers["exhaustive"] is True
    assert layers["layers"][:3] == ["cli", "methods", "search"]


def test_the_code_lints_clean_including_the_sandbox_programs() -> None:
    """pyflakes over src/, tests/, bench/ and examples/ (`[tool.ruff]`): undefined names and unused imports. The
    sandbox's child program and test harness are real files, so they are linted too."""
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    done = subprocess.run([ruff, "check", "src", "tests", "bench", "examples"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_sandbox_programs_import_without_running() -> None:
    """`child.py` and `harness.py` are what the sandbox runs; importing them runs nothing."""
    from selfimprove.sandbox import child, harness

    assert callable(child.main) and callable(harness._si_run)
    assert child.SETUP_FAILED == 121

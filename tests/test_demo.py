"""`python -m opdsl.demo` runs from any directory (its example is package data); the package
declares its license file."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_outside_the_repository(tmp_path):
    pytest.importorskip("torch")
    r = subprocess.run([sys.executable, "-m", "opdsl.demo"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    err = float(re.search(r"max abs error\s+(\S+)", r.stdout).group(1))
    assert err < 1e-4
    assert "def apply(" in r.stdout and (tmp_path / "out" / "kron_torch.py").is_file()


def test_demo_example_is_examples_kron():
    """The shipped copy is the example the README and the demo's output name."""
    assert (ROOT / "opdsl" / "demo.op").read_bytes() == (ROOT / "examples" / "kron.op").read_bytes()


def test_package_ships_the_demo_example_and_its_license():
    tomllib = pytest.importorskip("tomllib")        # Python 3.11+
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "demo.op" in meta["tool"]["setuptools"]["package-data"]["opdsl"]
    project = meta["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("Copyright 2026 the opdsl authors\n")
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and "9. Accepting Warranty or Additional Liability." in text

"""`make gpu-check` (benchmarks/gpu_check.py) where there is no GPU: it says so and exits 0; its
CPU dry run goes through every step; opdsl imports from the source tree without an install; a
missing dependency is named with its remedy."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# a Python that does not see the editable install of opdsl (as on a GPU machine where nothing is installed)
NO_INSTALL = ("import sys; sys.meta_path = [f for f in sys.meta_path "
              "if not getattr(f, '__module__', '').startswith('__editable__')]; ")


def run(code: str, **env):
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})


def test_without_a_gpu_it_says_so_and_exits_0():
    r = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stderr
    assert "no CUDA GPU here" in r.stdout and "make gpu-check DRY=1" in r.stdout


def test_opdsl_imports_from_the_source_tree_without_an_install(tmp_path):
    r = run(NO_INSTALL + "from benchmarks.gpu_check import bring_up; assert bring_up() == []; import opdsl; "
            "p = opdsl.compile('input x : [2, 2]\\nexport y = x @ x\\n', backend='numpy'); "
            "print(opdsl.__file__); print(p.y(x=__import__('numpy').eye(2, dtype='float32')).sum())",
            OPDSL_CACHE_DIR=str(tmp_path))
    assert r.returncode == 0, r.stderr
    path, total = r.stdout.split()
    assert "opdsl-src-" in path and float(total) == 2.0


def test_a_missing_dependency_is_named_with_its_remedy():
    r = run(NO_INSTALL + "sys.modules['lark'] = None; from benchmarks.gpu_check import bring_up; print(bring_up())")
    assert r.returncode == 0, r.stderr
    assert "lark: not installed" in r.stdout and "pip download lark --no-deps -d wheels/" in r.stdout


def test_the_cpu_dry_run_goes_through_every_step(tmp_path):
    out = tmp_path / "gpu.md"
    r = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--dry-run", "--sample", "--output", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# GPU check (CPU dry run: not GPU figures)")
    for line in ("| torch | float32 |", "| torch | float64 |", "| torch | bfloat16 |", "| jax | float32 |"):
        assert line in text
    assert "| torch | float32 | 0 |" not in text and "; 0 catalogue failure(s)" in r.stdout
    for row in ("kron (small)", "Monarch (small)", "causal linear attention", "gated DeltaNet", "kron on TVM"):
        assert row in text, row
    assert "not run" not in text.split("kron on TVM")[0]          # every torch row ran
    assert "not implemented for 'BFloat16'" in text              # torch's own bfloat16 gaps, listed


def test_make_target_exists():
    text = (ROOT / "Makefile").read_text()
    assert "gpu-check:" in text and "benchmarks.gpu_check" in text

"""The compile cache (opdsl/cache.py) as the TVM backend uses it: keys, hits, damage, two processes at once.

(tests/test_determinism.py covers the cache primitives on their own: every kind of damage,
a build that dies, key order.)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import opdsl
from opdsl import backends, cache

pytestmark = pytest.mark.skipif("tvm" not in backends.available(), reason="TVM is not installed")

SRC = "dim n = 8\ndim k\ninput A : [n, n]\ninput x : [n, k]\nexport y = (A + A.T) @ x\n"


def _entries(root: Path):
    return sorted(p for p in root.iterdir() if p.is_dir())


def _check(p):
    a = np.arange(64, dtype=np.float32).reshape(8, 8) / 64
    x = np.ones((8, 3), np.float32)
    np.testing.assert_allclose(p.y(A=a, x=x), (a + a.T) @ x, rtol=1e-6)


def test_default_directory_is_the_user_cache_dir(monkeypatch):
    import platformdirs
    monkeypatch.delenv("OPDSL_CACHE_DIR", raising=False)
    assert cache.cache_dir() == Path(platformdirs.user_cache_dir("opdsl"))
    monkeypatch.setenv("OPDSL_CACHE_DIR", "/some/where")
    assert cache.cache_dir() == Path("/some/where")


def test_hit_after_miss_and_keys_per_dims_dtype_target(tmp_path, monkeypatch):
    monkeypatch.setenv("OPDSL_CACHE_DIR", str(tmp_path))
    first = opdsl.compile(SRC, backend="tvm")
    second = opdsl.compile(SRC, backend="tvm")
    assert (first._backend.cache_hit, second._backend.cache_hit) == (False, True)
    assert first.source == second.source
    _check(second)
    assert len(_entries(tmp_path)) == 1
    opdsl.compile(SRC, backend="tvm", dims={"n": 8, "k": 3})           # dims are part of the key
    opdsl.compile(SRC, backend="tvm", dtype="float64")                 # and the dtype
    opdsl.compile(SRC, backend="tvm", target="cuda")                   # and the target
    assert len(_entries(tmp_path)) == 4
    parts = json.loads((_entries(tmp_path)[0] / cache.CHECKSUMS).read_text())["parts"]
    assert parts["backend"] == "tvm"


def test_no_cache_option_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("OPDSL_CACHE_DIR", str(tmp_path))
    p = opdsl.compile(SRC, backend="tvm", cache=False)
    _check(p)
    assert not tmp_path.exists() or not _entries(tmp_path)


@pytest.mark.parametrize("damage", ["flip a byte", "missing checksums", "missing manifest"])
def test_damaged_entry_is_detected_and_rebuilt(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("OPDSL_CACHE_DIR", str(tmp_path))
    opdsl.compile(SRC, backend="tvm")
    (entry,) = _entries(tmp_path)
    if damage == "flip a byte":
        src = entry / "source.py"
        text = src.read_text()
        src.write_text(text.replace("def y(", "def Y(", 1))            # same length, other bytes
    elif damage == "missing checksums":
        (entry / cache.CHECKSUMS).unlink()                             # as if killed before the rename
    else:
        (entry / "manifest.json").unlink()
    assert not cache.is_valid(entry)
    p = opdsl.compile(SRC, backend="tvm")
    assert p._backend.cache_hit is False and cache.is_valid(entry)
    _check(p)


CHILD = """
import os, sys, json
os.environ["OPDSL_CACHE_DIR"] = sys.argv[1]
import numpy as np
import opdsl
p = opdsl.compile(open(sys.argv[2]).read(), backend="tvm")
a = np.arange(64, dtype=np.float32).reshape(8, 8) / 64
out = p.y(A=a, x=np.ones((8, 3), np.float32))
print(json.dumps({"hit": p._backend.cache_hit, "ok": bool(np.allclose(out, (a + a.T) @ np.ones((8, 3))))}))
"""


def test_two_processes_compiling_the_same_program_at_once(tmp_path):
    src = tmp_path / "prog.op"
    src.write_text(SRC)
    root = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(src)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = []
    for pr in procs:
        out, err = pr.communicate(timeout=300)
        assert pr.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["ok"] for r in results)
    assert sorted(r["hit"] for r in results) == [False, True]          # one built, the other reused it
    (entry,) = _entries(root)
    assert cache.is_valid(entry) and not list(root.glob("*.tmp-*"))


def test_entry_holds_library_source_and_manifest(tmp_path, monkeypatch):
    monkeypatch.setenv("OPDSL_CACHE_DIR", str(tmp_path))
    opdsl.compile(SRC, backend="tvm")
    (entry,) = _entries(tmp_path)
    names = {p.name for p in entry.iterdir()}
    assert {"kernels.so", "source.py", "manifest.json", cache.CHECKSUMS} <= names
    assert os.path.getsize(entry / "kernels.so") > 0

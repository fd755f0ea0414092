"""Determinism and the cache (docs/reliability.md, "Determinism" and "Cache").

- The same source gives byte-identical generated code across runs and processes (different
  PYTHONHASHSEED values), for every example and every kind's catalogue programs.
- Concurrent compiles of the same program from several processes all succeed, and the cache
  entry is built once.
- A truncated or tampered cache entry is detected (SHA-256 of every file) and rebuilt, never
  loaded; so is a missing or corrupt checksum file, and a build that died half-way.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import opdsl
from opdsl import cache

from .harness import BACKENDS, CATALOGUE, PY_BACKENDS

ROOT = Path(__file__).resolve().parent.parent
LONG = os.environ.get("OPDSL_FUZZ_LONG", "") not in ("", "0")

# The programs: every example file on every Python backend, and every kind's catalogue programs
# (on numpy; on every backend in the long mode, OPDSL_FUZZ_LONG=1).
EXAMPLES = {p.name: p.read_text() for p in sorted((ROOT / "examples").glob("*.op"))}
KIND_PROGRAMS = {f"{k}[{i}]": src for k, i, src in CATALOGUE}
JOBS = [(name, src, b) for name, src in EXAMPLES.items() for b in PY_BACKENDS]
JOBS += [(name, src, b) for name, src in KIND_PROGRAMS.items() for b in (PY_BACKENDS if LONG else ["numpy"])]

DIGESTS = """
import hashlib, json, sys
import opdsl
out = {}
for name, src, backend in json.loads(sys.stdin.read()):
    try:
        text = opdsl.compile(src, backend=backend, filename=name).source
    except opdsl.OpdslError as e:
        text = "error: " + str(e)
    out[name + " " + backend] = hashlib.sha256(text.encode()).hexdigest()
print(json.dumps(out, sort_keys=True))
"""


def digests_here() -> dict:
    out = {}
    for name, src, backend in JOBS:
        try:
            text = opdsl.compile(src, backend=backend, filename=name).source
        except opdsl.OpdslError as e:
            text = "error: " + str(e)
        out[f"{name} {backend}"] = hashlib.sha256(text.encode()).hexdigest()
    return out


def digests_in_process(hash_seed: str) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    r = subprocess.run([sys.executable, "-c", DIGESTS], input=json.dumps(JOBS), capture_output=True,
                       text=True, cwd=ROOT, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def here():
    return digests_here()


def test_same_source_same_bytes_in_one_process(here):
    assert len(here) == len(JOBS)
    again = {}
    for name, src, backend in JOBS[:: 1 if LONG else 4]:     # compiled again, after everything else
        text = opdsl.compile(src, backend=backend, filename=name).source
        again[f"{name} {backend}"] = hashlib.sha256(text.encode()).hexdigest()
    assert all(here[k] == v for k, v in again.items())


@pytest.mark.parametrize("seed", ["1", "12345"] if LONG else ["12345"])   # this process: a random seed
def test_same_source_same_bytes_across_processes(here, seed):
    there = digests_in_process(seed)
    diff = sorted(k for k in here if here[k] != there.get(k))
    assert not diff, f"generated code differs between processes for: {diff[:10]}"


# ---- the compile cache ----------------------------------------------------------------------

# A compile in another process, with only opdsl/cache.py loaded (by path: no torch, no sympy),
# so that the processes really overlap: a slow build that records that it ran.
BUILD = """
import importlib.util, os, sys, time
from pathlib import Path
spec = importlib.util.spec_from_file_location("opdsl_cache", {cache!r})
cache = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cache)
root, key, log = Path(sys.argv[1]), sys.argv[2], sys.argv[3]

def build(tmp):
    with open(log, "a") as f:
        f.write(str(os.getpid()) + "\\n")
    time.sleep(1.0)
    (tmp / "kernel.bin").write_bytes(b"\\x7fELF" + bytes(range(256)) * 64)
    (tmp / "source.py").write_text("def f():\\n    return 42\\n")

entry, hit = cache.get_or_build(key, build, root=root)
print(entry, hit, (entry / "source.py").read_text() == "def f():\\n    return 42\\n")
""".format(cache=str(ROOT / "opdsl" / "cache.py"))


def test_concurrent_compiles_from_several_processes(tmp_path):
    log = tmp_path / "builds.log"
    key = cache.make_key(source="concurrent", backend="test")
    procs = [subprocess.Popen([sys.executable, "-c", BUILD, str(tmp_path / "c"), key, str(log)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1][-2000:] for r in results]
    lines = [r[0].split() for r in results]
    assert len({line[0] for line in lines}) == 1                # one entry
    assert all(line[2] == "True" for line in lines)             # complete for every process
    assert sum(line[1] == "False" for line in lines) == 1       # built once, the others waited and reused it
    assert len(log.read_text().split()) == 1
    assert cache.is_valid(Path(lines[0][0]))
    assert not list((tmp_path / "c").glob("*.tmp-*"))            # no half-built directory left behind


def _entry(tmp_path, payload=b"kernel bytes " * 100):
    built = []

    def build(tmp: Path):
        built.append(1)
        (tmp / "kernel.so").write_bytes(payload)
        (tmp / "manifest.json").write_text('{"functions": []}')

    key = cache.make_key(source="x", backend="test")
    return key, build, built


@pytest.mark.parametrize("damage", ["truncate", "tamper", "delete file", "delete checksums", "corrupt checksums",
                                    "empty checksums", "extra byte"])
def test_damaged_entry_is_rebuilt_never_loaded(tmp_path, damage):
    key, build, built = _entry(tmp_path)
    entry, hit = cache.get_or_build(key, build, root=tmp_path)
    assert not hit and built == [1]
    good = (entry / "kernel.so").read_bytes()
    entry2, hit = cache.get_or_build(key, build, root=tmp_path)
    assert hit and entry2 == entry and built == [1]
    so, sums = entry / "kernel.so", entry / cache.CHECKSUMS
    if damage == "truncate":
        so.write_bytes(good[: len(good) // 2])
    elif damage == "tamper":
        so.write_bytes(good[:10] + b"X" + good[11:])             # same length, one byte changed
    elif damage == "delete file":
        so.unlink()
    elif damage == "delete checksums":
        sums.unlink()
    elif damage == "corrupt checksums":
        sums.write_text(sums.read_text()[:-5])
    elif damage == "empty checksums":
        sums.write_text('{"files": {}}')
    else:
        so.write_bytes(good + b"\0")
    assert not cache.is_valid(entry)
    entry3, hit = cache.get_or_build(key, build, root=tmp_path)
    assert not hit and built == [1, 1]                          # rebuilt, not loaded
    assert (entry3 / "kernel.so").read_bytes() == good and cache.is_valid(entry3)


def test_a_build_that_dies_leaves_nothing_loadable(tmp_path):
    key = cache.make_key(source="dies", backend="test")

    def dies(tmp: Path):
        (tmp / "kernel.so").write_bytes(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cache.get_or_build(key, dies, root=tmp_path)
    assert not (tmp_path / key).exists() and not list(tmp_path.glob("*.tmp-*"))
    stale = tmp_path / f"{key}.tmp-left-by-a-dead-process"     # as if the process was killed -9
    stale.mkdir()
    (stale / "kernel.so").write_bytes(b"half")
    entry, hit = cache.get_or_build(key, lambda tmp: (tmp / "kernel.so").write_bytes(b"whole"), root=tmp_path)
    assert not hit and (entry / "kernel.so").read_bytes() == b"whole" and not stale.exists()


def test_keys_depend_on_what_made_the_entry():
    a = cache.make_key(source="x", backend="tvm", dims={"n": "4"})
    assert a == cache.make_key(backend="tvm", dims={"n": "4"}, source="x")      # order does not matter
    assert a != cache.make_key(source="x", backend="tvm", dims={"n": "8"})
    assert a != cache.make_key(source="x ", backend="tvm", dims={"n": "4"})
    assert cache.fingerprint().startswith(opdsl.__version__ + "+")


# ---- the TVM backend through the cache --------------------------------------------------------

TVM_SRC = "dim n = 8\ninput A : [n, n]\ninput x : [n, 3]\nexport y = A @ x\nexport z = (A + A.T) @ x\n"


def _tvm_compile(cache_dir: str):
    os.environ["OPDSL_CACHE_DIR"] = cache_dir
    import numpy as np
    import opdsl
    p = opdsl.compile(TVM_SRC, backend="tvm")
    a = np.arange(64, dtype=np.float32).reshape(8, 8) / 64
    x = np.ones((8, 3), np.float32)
    return bool(p._backend.cache_hit), np.asarray(p.y(A=a, x=x)).tolist(), p.source


@pytest.mark.skipif("tvm" not in BACKENDS, reason="TVM is not installed")
def test_tvm_damaged_library_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("OPDSL_CACHE_DIR", str(tmp_path))
    first = _tvm_compile(str(tmp_path))
    second = _tvm_compile(str(tmp_path))
    a = np.arange(64, dtype=np.float32).reshape(8, 8) / 64
    want = (a @ np.ones((8, 3), np.float32)).tolist()
    assert (first[0], second[0]) == (False, True)                # built, then loaded from the cache
    assert np.allclose(first[1], want) and np.allclose(second[1], want) and first[2] == second[2]
    (entry,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    lib = next(p for p in entry.iterdir() if p.suffix == ".so")
    # a truncated shared library, written as a new file: this process has the old one mapped
    # (truncating a mapped file in place kills the process with SIGBUS when it touches the pages)
    cut = lib.with_name("cut.tmp")
    cut.write_bytes(lib.read_bytes()[:1000])
    os.replace(cut, lib)
    third = _tvm_compile(str(tmp_path))
    assert third[0] is False                                     # detected and rebuilt, not loaded
    assert np.allclose(third[1], want) and third[2] == first[2]


@pytest.mark.skipif("tvm" not in BACKENDS or not LONG, reason="TVM, long mode (OPDSL_FUZZ_LONG=1)")
def test_tvm_concurrent_compiles(tmp_path):
    ctx = mp.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.map(_tvm_compile, [str(tmp_path)] * 4)
    a = np.arange(64, dtype=np.float32).reshape(8, 8) / 64
    want = (a @ np.ones((8, 3), np.float32)).tolist()
    assert all(np.allclose(r[1], want) for r in results)
    assert len({r[2] for r in results}) == 1                     # the same source from every process
    assert sum(not r[0] for r in results) == 1                   # one built, the others reused it

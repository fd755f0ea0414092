"""Exported artifacts, each loaded in a fresh Python process where opdsl is NOT importable.

* tvm: kernels.so + kernels.json, loaded with tvm.runtime.load_module and called as the
  manifest says (destination-passing, args in order, then constants, then the output);
* torch / jax / numpy: the standalone source file, imported by path.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import opdsl
from opdsl import backends
from opdsl.reference import dense_eval, random_inputs

SRC = """dim n = 8
dim k
input d : [n]
input U : [n, 2]
input V : [n, 2]
input W : [2, 4, 4]
input x : [n, k]
export y = (diag(d) + lowrank(U, V)) @ x
export z = blockdiag(W) @ x
"""

# Runs first in the child: drop everything that could find opdsl (the editable install's finder,
# the repository on the path), and prove it is gone.
NO_OPDSL = """
import sys, importlib.util
sys.meta_path = [f for f in sys.meta_path if "opdsl" not in repr(f).lower() and "editable" not in repr(f).lower()]
sys.path = [p for p in sys.path if p not in ("", ".") and not p.rstrip("/").endswith(REPO)]
for name in [m for m in sys.modules if m == "opdsl" or m.startswith("opdsl.")]:
    del sys.modules[name]
assert importlib.util.find_spec("opdsl") is None, "opdsl is still importable"
"""

TVM_CHILD = """
import json, sys
import numpy as np
import tvm
lib_path, data = sys.argv[1], np.load(sys.argv[2])
manifest = json.load(open(lib_path[:-3] + ".json"))
lib = tvm.runtime.load_module(lib_path)
dims = {"k": int(sys.argv[3])}
def size(d):
    return d if isinstance(d, int) else dims[d]
out = {}
for f in manifest["functions"]:
    args = [data[a["name"]] for a in f["args"]]
    args += [np.asarray(c["data"], c["dtype"]).reshape(c["shape"]) for c in f["constants"]]
    o = f["output"]
    # tvm.runtime tensors are 64-byte aligned; the kernel writes the output buffer (buffer_shape,
    # when the result is a reshape of it: the same row-major memory)
    targs = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in args]
    tout = tvm.runtime.empty(tuple(size(d) for d in o.get("buffer_shape", o["shape"])), o["dtype"])
    lib[f["symbol"]](*targs, tout)
    out[f["name"]] = tout.numpy().reshape([size(d) for d in o["shape"]])
np.savez(sys.argv[4], **out)
print("ok", sorted(out))
"""

PY_CHILD = """
import importlib.util, sys
import numpy as np
spec = importlib.util.spec_from_file_location("kernels", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
data = np.load(sys.argv[2])
wrap = {"jax": lambda a: __import__("jax.numpy").numpy.asarray(a),
        "torch": lambda a: __import__("torch").from_numpy(a)}.get(sys.argv[3], lambda a: a)
out = {}
for name, params in [("y", ["d", "U", "V", "x"]), ("z", ["W", "x"])]:
    r = getattr(mod, name)(**{p: wrap(data[p]) for p in params})
    out[name] = np.asarray(r.numpy() if hasattr(r, "numpy") and not hasattr(r, "block_until_ready") else r)
assert "opdsl" not in sys.modules
np.savez(sys.argv[4], **out)
print("ok", sorted(out))
"""

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_child(code, args, tmp_path):
    env = dict(os.environ, PYTHONNOUSERSITE="1")
    env.pop("PYTHONPATH", None)
    script = f"REPO = {os.path.basename(REPO)!r}\n" + NO_OPDSL + code
    r = subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("ok")


def _inputs(p, k):
    inp = {}
    for name in p.functions:
        inp.update(random_inputs(p.graph, name, free={"k": k}))
    return inp


@pytest.mark.skipif("tvm" not in backends.available(), reason="TVM is not installed")
def test_tvm_shared_library_and_manifest(tmp_path, monkeypatch):
    monkeypatch.setenv("OPDSL_CACHE_DIR", str(tmp_path / "cache"))
    p = opdsl.compile(SRC, backend="tvm")
    written = p.save(tmp_path / "kernels.so")
    assert written == [str(tmp_path / "kernels.so"), str(tmp_path / "kernels.json")]
    manifest = json.loads((tmp_path / "kernels.json").read_text())
    assert [f["name"] for f in manifest["functions"]] == ["y", "z"]
    y = manifest["functions"][0]
    assert [a["name"] for a in y["args"]] == ["d", "U", "V", "x"]
    assert y["args"][3] == {"name": "x", "shape": [8, "k"], "dtype": "float32"}
    assert y["free_dims"] == ["k"] and manifest["library"] == "kernels.so"
    inp = _inputs(p, 5)
    np.savez(tmp_path / "in.npz", **inp)
    _run_child(TVM_CHILD, [tmp_path / "kernels.so", tmp_path / "in.npz", 5, tmp_path / "out.npz"], tmp_path)
    got = np.load(tmp_path / "out.npz")
    for name in p.functions:
        np.testing.assert_allclose(got[name], dense_eval(p.graph, p.graph.exports[name], inp), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "jax", "numpy"])
def test_python_source_artifacts(backend, tmp_path):
    if backend not in backends.available():
        pytest.skip(f"{backend} is not installed")
    p = opdsl.compile(SRC, backend=backend)
    written = p.save(tmp_path / "kernels.py")
    assert written == [str(tmp_path / "kernels.py")]
    inp = _inputs(p, 3)
    np.savez(tmp_path / "in.npz", **inp)
    _run_child(PY_CHILD, [tmp_path / "kernels.py", tmp_path / "in.npz", backend, tmp_path / "out.npz"], tmp_path)
    got = np.load(tmp_path / "out.npz")
    for name in p.functions:
        np.testing.assert_allclose(got[name], dense_eval(p.graph, p.graph.exports[name], inp), rtol=1e-5, atol=1e-5)


def test_tvm_refuses_a_python_file_name(tmp_path):
    if "tvm" not in backends.available():
        pytest.skip("TVM is not installed")
    p = opdsl.compile(SRC, backend="tvm", cache=False)
    with pytest.raises(opdsl.OpdslError, match="shared library"):
        p.save(tmp_path / "kernels.py")

"""Standalone layers: `opdsl compile --backend torch -o layer.py` gives an nn.Module class and the
functional form; `--backend jax` gives init / apply.  Imported and trained in a subprocess where opdsl
cannot be imported.  Also: every initializer, in both emitted forms, and its checks in the frontend.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import opdsl
from opdsl.cli import main as cli

ROOT = Path(__file__).resolve().parent.parent
LAYER = str(ROOT / "examples" / "layer.op")

# A process where opdsl cannot be imported (as in test_pycodegen.py).
NO_OPDSL = """
import sys, importlib.util
sys.meta_path = [f for f in sys.meta_path if 'opdsl' not in repr(f).lower() and '__editable__' not in repr(f)]
sys.path = [p for p in sys.path if p not in ('', {root!r}) and '__editable__' not in p]
assert importlib.util.find_spec('opdsl') is None, 'opdsl is importable'
sys.path.insert(0, {tmp!r})
"""


def run_without_opdsl(tmp_path, body: str) -> str:
    script = NO_OPDSL.format(root=str(ROOT), tmp=str(tmp_path)) + body
    r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_torch_layer_file_imports_and_trains_without_opdsl(tmp_path, capsys):
    assert cli(["compile", LAYER, "--backend", "torch", "--dim", "b=4", "-o", str(tmp_path / "layer.py")]) == 0
    out = run_without_opdsl(tmp_path, """
import torch, layer
torch.manual_seed(0)
m = layer.Apply(generator=0)
assert isinstance(m, torch.nn.Module) and [n for n, _ in m.named_parameters()] == ['L', 'R']
x = torch.randn(32, 16)
y = m(x)
assert torch.equal(y, layer.apply(x=x, L=m.L, R=m.R))          # the functional form
p = layer.init_params(0)
assert torch.equal(p['L'], m.L.detach()) and abs(p['L'].std().item() - 0.25) < 0.06
model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Tanh(), m)
target = torch.sin(x)
opt = torch.optim.Adam(model.parameters(), lr=0.02)
losses = []
for _ in range(60):
    loss = torch.nn.functional.mse_loss(model(x), target)
    opt.zero_grad(); loss.backward(); opt.step(); losses.append(loss.item())
m2 = layer.Apply()
m2.load_state_dict(m.state_dict())
assert torch.equal(m2(x), m(x))
print(losses[0], losses[-1])
""")
    first, last = map(float, out.split())
    assert last < 0.5 * first


def test_jax_layer_file_imports_and_trains_without_opdsl(tmp_path):
    pytest.importorskip("jax")
    assert cli(["compile", LAYER, "--backend", "jax", "--dim", "b=4", "-o", str(tmp_path / "jlayer.py")]) == 0
    out = run_without_opdsl(tmp_path, """
import jax, jax.numpy as jnp, jlayer
params = jlayer.init(jax.random.PRNGKey(0))
assert sorted(params) == ['L', 'R'] and params['L'].shape == (4, 4, 4)
x = jax.random.normal(jax.random.PRNGKey(1), (32, 16), jnp.float32)
y = jlayer.apply(params, x=x)
assert jnp.array_equal(y, jlayer.apply(x=x, L=params['L'], R=params['R']))
target = jnp.sin(x)
loss = lambda p: jnp.mean((jlayer.apply(p, x=x) - target) ** 2)
step = jax.jit(lambda p: jax.tree_util.tree_map(lambda a, g: a - 0.5 * g, p, jax.grad(loss)(p)))
first = float(loss(params))
for _ in range(40):
    params = step(params)
ys = jax.vmap(lambda xi: jlayer.apply(params, x=xi))(x.reshape(4, 8, 16))
assert jnp.allclose(ys.reshape(32, 16), jlayer.apply(params, x=x), atol=1e-5)
print(first, float(loss(params)))
""")
    first, last = map(float, out.split())
    assert last < 0.6 * first


def test_layer_classes_in_the_generated_source():
    src = opdsl.compile_file("examples/diag_lowrank.op").source
    assert "class Apply(torch.nn.Module):" in src and "class ApplyT(torch.nn.Module):" in src
    assert "def init_params(generator=None, *, names=PARAMS, device=None):" in src
    assert "    def forward(self, x):\n        return apply(x=x, d=self.d, U=self.U, V=self.V)" in src
    jsrc = opdsl.compile_file("examples/diag_lowrank.op", backend="jax").source
    assert "def init_params(key=0):" in jsrc and "init = init_params" in jsrc
    assert "apply = _with_params(apply, ('d', 'U', 'V'))" in jsrc
    # no params: no layer code
    plain = opdsl.compile("input W : [2, 2]\ninput x : [2]\nexport y = W @ x").source
    assert "torch.nn.Module" not in plain and "init_params" not in plain


def test_free_dims_of_params_are_constructor_arguments(tmp_path):
    src = "dim n\ndim m = 2 * n\ninput x : [m, 3]\nparam W : [n, m] = uniform(-1, 1)\nexport y = W @ x"
    prog = opdsl.compile(src)
    assert "def init_params(generator=None, *, n, names=PARAMS, device=None):" in prog.source
    layer = prog.module.Y(n=3)
    assert layer.W.shape == (3, 6) and layer.W.abs().max() <= 1
    assert layer(torch.randn(6, 3)).shape == (3, 3)
    jprog = opdsl.compile(src, backend="jax")
    assert jprog.init(0, n=2)["W"].shape == (2, 4)


# ---- initializers -----------------------------------------------------------------------

INITS = """
param a : [200, 300] = normal(1.5, 0.5)
param b : [200, 300] = uniform(-2, 3)
param c : [4, 5] = zeros
param d : [7] = ones
param e : [3, 5, 5] = eye
param f : [30, 20] = orthogonal
param g : [2, 10, 40] = orthogonal
param h : [400, 100]
param i : [400, 100] = uniform
"""


def _all_params_program(backend):
    """INITS, each param used by an export (so that it is in the signatures)."""
    exports = "\n".join(f"export u{k} = {k}.T @ {k}" if k != "d" else "export ud = diag(d) @ d" for k in "abcdefghi")
    return opdsl.compile(INITS + exports, backend=backend)


def check_inits(p):
    p = {k: np.asarray(v, dtype=np.float64) for k, v in p.items()}
    assert abs(p["a"].mean() - 1.5) < 0.01 and abs(p["a"].std() - 0.5) < 0.01
    assert p["b"].min() >= -2 and p["b"].max() <= 3 and abs(p["b"].mean() - 0.5) < 0.03
    assert np.array_equal(p["c"], np.zeros((4, 5))) and np.array_equal(p["d"], np.ones(7))
    assert np.array_equal(p["e"], np.broadcast_to(np.eye(5), (3, 5, 5)))
    np.testing.assert_allclose(p["f"].T @ p["f"], np.eye(20), atol=1e-5)            # tall: orthonormal columns
    np.testing.assert_allclose(p["g"] @ np.swapaxes(p["g"], -1, -2), np.broadcast_to(np.eye(10), (2, 10, 10)),
                               atol=1e-5)                                           # wide, batched: rows
    assert not np.allclose(p["g"][0], p["g"][1])
    assert abs(p["h"].std() - 0.1) < 0.005 and abs(p["h"].mean()) < 0.005           # default: 1/sqrt(last dim)
    assert p["i"].min() >= -0.1 and p["i"].max() <= 0.1 and p["i"].max() > 0.099   # default bound 1/sqrt(100)


def test_torch_initializers():
    prog = _all_params_program("torch")
    p = prog.init(0)
    assert all(v.dtype == torch.float32 for v in p.values())
    check_inits(p)
    assert torch.equal(prog.init(0)["a"], p["a"]) and not torch.equal(prog.init(1)["a"], p["a"])


def test_jax_initializers():
    pytest.importorskip("jax")
    check_inits(_all_params_program("jax").init(0))


@pytest.mark.parametrize("decl,message", [
    ("param W : [3, 3] = normal(0, 1, 2)", "normal takes 0 or 1 or 2 arguments, got 3"),
    ("param W : [3, 3] = uniform(1)", "uniform takes 0 or 2 arguments, got 1"),
    ("param W : [3, 3] = uniform(1, 0)", "needs low < high"),
    ("param W : [3, 3] = normal(0, -1)", "needs std >= 0"),
    ("param W : [3, 3] = zeros(1)", "zeros takes 0 arguments"),
    ("param W : [3] = eye", "eye needs a matrix"),
    ("param W : [3] = orthogonal", "orthogonal needs a matrix"),
])
def test_initializer_errors(decl, message):
    with pytest.raises(opdsl.OpdslError, match=message.replace("(", r"\(")) as e:
        opdsl.compile(decl + "\ninput x : [3]\nexport y = W.T @ x" if "[3, 3]" in decl else
                      decl + "\ninput x : [3]\nexport y = diag(W) @ x")
    assert "<string>:1:" in str(e.value)

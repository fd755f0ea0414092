"""The JAX backend: jit, float64 without touching the user's x64 setting, argument errors, source."""
from __future__ import annotations

import ast

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import opdsl  # noqa: E402
from opdsl.errors import CallError  # noqa: E402
from opdsl.reference import dense_eval, random_inputs  # noqa: E402

KRON = """dim a = 3
dim b = 4
dim k
input A : [a, a]
input B : [b, b]
input x : [a * b, k]
export y = kron(A, B) @ x
"""

LOWRANK = """dim n = 6
input d : [n]
input U : [n, 2]
input V : [n, 2]
input x : [n, 3]
export y = (diag(d) + lowrank(U, V)) @ x
export z = lowrank(U, V).T @ x
"""


def _check(p, dtype, tol):
    for name in p.functions:
        inp = random_inputs(p.graph, name)
        out = p[name](**inp)
        assert out.dtype == np.dtype(dtype)
        np.testing.assert_allclose(np.asarray(out), dense_eval(p.graph, p.graph.exports[name], inp),
                                   rtol=tol, atol=tol)


@pytest.mark.parametrize("src", [KRON, LOWRANK])
def test_matches_dense_reference_in_both_precisions(src):
    _check(opdsl.compile(src, backend="jax"), "float32", 1e-5)
    _check(opdsl.compile(src, backend="jax", dtype="float64"), "float64", 1e-12)


def test_float64_program_leaves_the_global_x64_setting_alone():
    before = jax.config.jax_enable_x64
    p = opdsl.compile(KRON, backend="jax", dtype="float64")
    inp = random_inputs(p.graph, "y")
    out = p.y(**inp)
    assert out.dtype == np.float64                  # computed in float64 ...
    assert jax.config.jax_enable_x64 == before      # ... without flipping the user's config
    assert "X64 = True" in p.source
    assert "X64 = False" in opdsl.compile(KRON, backend="jax").source


def test_exports_are_jitted_and_traced_once_per_shape():
    p = opdsl.compile(KRON, backend="jax")
    traced = p.module.y.traced
    assert hasattr(traced, "lower")                 # a jax.jit function
    inp = random_inputs(p.graph, "y")
    p.y(**inp)
    p.y(**inp)
    assert traced._cache_size() == 1
    inp5 = random_inputs(p.graph, "y", free={"k": 5})
    out = p.y(**inp5)
    assert out.shape == (12, 5)
    assert traced._cache_size() == 2


def test_wrong_dtype_is_an_argument_error_even_with_x64_off():
    # jax.jit alone would silently turn this float64 array into float32
    p = opdsl.compile(KRON, backend="jax")
    inp = random_inputs(p.graph, "y")
    inp["x"] = inp["x"].astype(np.float64)
    with pytest.raises(CallError, match=r"y\(\): argument 'x' has dtype float64, expected float32"):
        p.y(**inp)


def test_wrong_shape_and_missing_argument():
    p = opdsl.compile(KRON, backend="jax")
    inp = random_inputs(p.graph, "y")
    bad = dict(inp, A=inp["A"][:2])
    with pytest.raises(CallError, match=r"argument 'A' has shape \[2, 3\], expected \[a, a\]"):
        p.y(**bad)
    with pytest.raises(CallError, match="missing x"):
        p.y(A=inp["A"], B=inp["B"])
    bad = dict(inp, x=inp["x"][:5])
    with pytest.raises(CallError, match=r"argument 'x' has shape \[5, 3\]"):
        p.y(**bad)


def test_source_imports_only_jax_and_numpy():
    src = opdsl.compile(LOWRANK, backend="jax").source
    mods = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mods.add(node.module.split(".")[0])
    assert mods <= {"jax", "numpy", "functools", "warnings"}
    assert "opdsl" not in src.split('"""', 2)[2]    # no import of opdsl below the docstring


def test_singular_solve_raises_the_modules_singular_error():
    src = "dim n = 3\ninput W : [n, n]\ninput b : [n]\nexport y = inv(3 * eye(n) + W) @ b"
    p = opdsl.compile(src, backend="jax", dtype="float64")
    b = np.ones(3)
    ok = p.y(W=np.eye(3), b=b)
    np.testing.assert_allclose(np.asarray(ok), b / 4)
    from opdsl.api import SingularError
    with pytest.raises(SingularError, match="singular"):
        p.y(W=-3 * np.eye(3), b=b)


def test_conjugate_gradients_run_op_by_op():
    src = "dim n = 4\ninput W : [n, n]\ninput x : [n, 2]\nexport y = inv(W, method=cg, tol=1e-10, maxiter=50) @ x"
    p = opdsl.compile(src, backend="jax", dtype="float64")
    assert "jit=False" in p.source
    rng = np.random.default_rng(0)
    m = rng.standard_normal((4, 4))
    w = m @ m.T + 4 * np.eye(4)                    # symmetric positive definite
    x = rng.standard_normal((4, 2))
    np.testing.assert_allclose(np.asarray(p.y(W=w, x=x)), np.linalg.solve(w, x), rtol=1e-7, atol=1e-8)


def test_batched_matmuls_use_xla_kernels_not_ynnpack():
    """XLA:CPU's YNNPACK fusions run a batched matmul on one thread (jaxlib 0.10); the generated
    module turns them off for its own top-level jits, and a user's jit around it still works."""
    p = opdsl.compile("input W : [4, 8, 8]\ninput x : [32, 16]\nexport y = blockdiag(W) @ x", backend="jax")
    inp = random_inputs(p.graph, "y")
    if p.module._XLA_OPTIONS is None:
        pytest.skip("this jaxlib has no xla_cpu_experimental_ynn_fusion_type option")
    hlo = p.module.y.traced.lower(**inp).compile().as_text()
    assert "dot" in hlo and "ynn_fusion" not in hlo
    outer = jax.jit(lambda W, x: p.y(W=W, x=x) * 2)
    np.testing.assert_allclose(np.asarray(outer(**inp)), 2 * np.asarray(p.y(**inp)), rtol=1e-4, atol=1e-6)

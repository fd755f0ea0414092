"""kronsum(A, B, ...) = A ⊗ I + I ⊗ B (+ ...) (issue 18, opdsl/kinds/kronsum.py): applied factor by
factor, solved and log-determined through the factors' eigendecompositions (the fast Poisson
solver) when they are symmetric; against numpy's kron sums and scipy's sparse solver."""
from __future__ import annotations

from functools import reduce

import numpy as np
import pytest

import opdsl
from tests.harness import assert_error_at, call

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def _kronsum(*mats):
    sizes = [m.shape[0] for m in mats]
    out = 0
    for i, a in enumerate(mats):
        out = out + reduce(np.kron, [np.eye(s) for s in sizes[:i]] + [a] + [np.eye(s) for s in sizes[i + 1:]])
    return out


def _spd(n, seed):
    w = np.random.default_rng(seed).standard_normal((n, n))
    return w @ w.T / n + np.eye(n)


SRC = """input A : [{a}, {a}]
input B : [{b}, {b}]
input C : [{c}, {c}]
input x : [{n}, 3]
let K = kronsum(assume(A, symmetric), assume(B, symmetric), assume(C, symmetric))
export y = K @ x
export s = inv(K) @ x
export d = logdet(K)
export t = kronsum(A, B, C).T @ x
"""


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
def test_three_factors_apply_solve_logdet(backend):
    a, b, c = 3, 4, 2
    prog = opdsl.compile(SRC.format(a=a, b=b, c=c, n=a * b * c), backend=backend, dtype="float64")
    mats = {"A": _spd(a, 0), "B": _spd(b, 1), "C": _spd(c, 2)}
    x = np.random.default_rng(3).standard_normal((a * b * c, 3))
    k = _kronsum(mats["A"], mats["B"], mats["C"])
    args = {**mats, "x": x}
    np.testing.assert_allclose(np.asarray(call(prog, "y", args)), k @ x, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(call(prog, "s", args)), np.linalg.solve(k, x), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(float(np.asarray(call(prog, "d", {k_: v for k_, v in args.items() if k_ != "x"}))),
                               np.linalg.slogdet(k)[1], rtol=1e-10)
    np.testing.assert_allclose(np.asarray(call(prog, "t", args)), k.T @ x, rtol=1e-10, atol=1e-10)


def test_the_solve_never_forms_the_n_by_n_matrix():
    """m = 24: N = 576; no primitive holds N x N values, and explain names the fast solver."""
    src = ("dim m = 24\ninput c : [m]\ninput f : [m * m, 1]\nlet T = assume(toeplitz(c, c), symmetric)\n"
           "export u = inv(kronsum(T, T)) @ f\n")      # toeplitz: a symmetric factor by assumption
    prog = opdsl.compile(src, backend="numpy", dtype="float64")
    g = prog.primitive
    sizes = [int(np.prod([g.dims.value(d) for d in g.type(v).shape])) for v in g.live()]
    assert max(sizes) < 576 * 576 / 10
    assert "fast Poisson solver" in prog.explain()


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
def test_pow_and_log_through_the_factors_eigendecompositions(backend):
    """pow(K, p), sqrt and log of K = kronsum(A, B) with psd factors: f(λᵢ + μⱼ) between the factors'
    eigenvectors, against scipy's dense matrix functions; at m = 24 (N = 576) no primitive holds
    N x N values."""
    import scipy.linalg
    src = ("dim a = {a}\ndim b = {b}\ninput A : [a, a] psd\ninput B : [b, b] psd\ninput x : [a * b, 2]\n"
           "let K = kronsum(A, B)\nexport p = pow(K, -0.5) @ x\nexport r = sqrt(K) @ x\nexport l = log(K) @ x\n")
    a, b = _spd(5, 1), _spd(4, 2)
    x = np.random.default_rng(3).standard_normal((20, 2))
    prog = opdsl.compile(src.format(a=5, b=4), backend=backend, dtype="float64")
    k = _kronsum(a, b)
    want = {"p": scipy.linalg.fractional_matrix_power(k, -0.5) @ x, "r": scipy.linalg.sqrtm(k) @ x,
            "l": scipy.linalg.logm(k) @ x}
    for name, ref in want.items():
        np.testing.assert_allclose(call(prog, name, {"A": a, "B": b, "x": x}), np.real(ref), rtol=1e-9, atol=1e-10)
    big = opdsl.compile(src.format(a=24, b=24), backend=backend, dtype="float64")
    g = big.primitive
    assert max(int(np.prod([g.dims.value(d) for d in g.type(v).shape])) for v in g.live()) < 576 * 576 / 10
    assert "f(kronsum(...))" in big.explain()


def test_non_symmetric_factors_fall_back_to_the_matrix():
    src = "input A : [3, 3]\ninput B : [2, 2]\ninput x : [6, 1]\nexport y = inv(kronsum(A, B) + 5 * eye(6)) @ x\n" \
          "export z = inv(kronsum(A, B)) @ x\n"
    prog = opdsl.compile(src, backend="numpy", dtype="float64")
    rng = np.random.default_rng(4)
    a, b, x = rng.standard_normal((3, 3)) + 4 * np.eye(3), rng.standard_normal((2, 2)) + 4 * np.eye(2), rng.standard_normal((6, 1))
    np.testing.assert_allclose(call(prog, "z", {"A": a, "B": b, "x": x}), np.linalg.solve(_kronsum(a, b), x), rtol=1e-9)
    assert "not known symmetric" in prog.explain()


def test_poisson_example_matches_scipy_sparse():
    """examples/poisson.op: the five-point Laplacian solve equals scipy.sparse.linalg.spsolve's."""
    sparse = pytest.importorskip("scipy.sparse")
    from scipy.sparse.linalg import spsolve
    m = 32
    h = 1.0 / (m + 1)
    prog = opdsl.compile_file(str(ROOT / "examples" / "poisson.op"), backend="numpy", dtype="float64")
    main, off = np.full(m, 2 / h ** 2), np.full(m - 1, -1 / h ** 2)
    g = np.linspace(h, 1 - h, m)
    f = (np.sin(np.pi * g)[:, None] * np.sin(2 * np.pi * g)[None, :]).reshape(-1, 1)
    t = sparse.diags([off, main, off], [-1, 0, 1])
    lap = sparse.kronsum(t, t, format="csc")        # scipy's kronsum(A, B) = B ⊗ I + I ⊗ A: T ⊕ T is the same
    u = call(prog, "u", {"main": main, "off": off, "f": f})
    np.testing.assert_allclose(u[:, 0], spsolve(lap, f[:, 0]), rtol=1e-9)
    exact = f / (5 * np.pi ** 2)                     # sin(πx) sin(2πy) is an eigenfunction of −Δ
    assert np.abs(u - exact).max() < 5e-3 * np.abs(exact).max()     # the stencil's O(h²) error
    np.testing.assert_allclose(call(prog, "logdet_laplacian", {"main": main, "off": off}),
                               np.linalg.slogdet(lap.toarray())[1], rtol=1e-10)
    one = np.sin(3 * np.pi * g)[:, None]
    np.testing.assert_allclose(call(prog, "u1", {"main": main, "off": off, "g": one}),
                               spsolve(t.tocsc(), one[:, 0])[:, None], rtol=1e-9, atol=1e-12)


ERRORS = [
    ("kronsum(W, v) @ x", "kronsum operands must be square", "kronsum("),
    ("kronsum(B) @ x", "takes at least 2 arguments", "kronsum("),
    ("kronsum(A, A) @ x", "cannot apply an operator [9, 9]", "kronsum("),
]


@pytest.mark.parametrize("expr,message,at", ERRORS, ids=[e[1][:24] for e in ERRORS])
def test_errors_are_located(expr, message, at):
    src = f"input A : [3, 3]\ninput B : [2, 2]\ninput W : [3, 2]\ninput v : [2, 2]\ninput x : [6, 1]\nexport y = {expr}\n"
    assert_error_at(src, message, at)

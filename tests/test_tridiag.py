"""tridiag(lower, main, upper) (issue 18, opdsl/kinds/tridiag.py): applied in O(n), solved and
log-determined by cyclic reduction (numpy, torch) or lax's tridiagonal solve (JAX), against scipy's
banded solvers; the n x n matrix is never formed."""
from __future__ import annotations

import numpy as np
import pytest

import opdsl
from tests.harness import assert_error_at, call

linalg = pytest.importorskip("scipy.linalg")

SRC = """dim n = {n}
input l : [n - 1]
input d : [n]
input u : [n - 1]
input x : [n, 2]
let T = tridiag(l, d, u)
export y = inv(T) @ x
export z = logdet(tridiag(l, d, l))
export w = T @ x
"""


def _system(n, seed=0):
    rng = np.random.default_rng(seed)
    # |off-diagonal| ≤ 0.3 · 4.5 σ < 2 ≤ main / 2: diagonally dominant, and tridiag(l, d, l) positive definite
    return (0.3 * rng.standard_normal(n - 1), 4 + rng.uniform(0, 1, n), 0.3 * rng.standard_normal(n - 1),
            rng.standard_normal((n, 2)))


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
def test_a_hundred_thousand_unknowns_against_solve_banded(backend):
    """n = 100,001 (odd: cyclic reduction's uneven halves) in float64, never an n x n value."""
    n = 100_001
    lo, d, up, x = _system(n)
    prog = opdsl.compile(SRC.format(n=n), backend=backend, dtype="float64")
    g = prog.primitive
    assert max(int(np.prod([g.dims.value(s) for s in g.type(v).shape])) for v in g.live()) <= 4 * n
    args = {"l": lo, "d": d, "u": up, "x": x}
    banded = np.zeros((3, n))
    banded[0, 1:], banded[1], banded[2, :-1] = up, d, lo
    np.testing.assert_allclose(np.asarray(call(prog, "y", args)), linalg.solve_banded((1, 1), banded, x),
                               rtol=1e-10, atol=1e-12)
    sym = np.zeros((2, n))
    sym[0, 1:], sym[1] = lo, d                       # upper form of tridiag(l, d, l) for cholesky_banded
    chol = linalg.cholesky_banded(sym)
    np.testing.assert_allclose(float(np.asarray(call(prog, "z", {"l": lo, "d": d}))), 2 * np.log(chol[1]).sum(),
                               rtol=1e-10)
    w = d[:, None] * x
    w[:-1] += up[:, None] * x[1:]
    w[1:] += lo[:, None] * x[:-1]
    np.testing.assert_allclose(np.asarray(call(prog, "w", args)), w, rtol=1e-12, atol=1e-12)


def test_explain_names_the_solver_and_symmetry_is_known():
    prog = opdsl.compile(SRC.format(n=10), backend="numpy")
    text = prog.explain()
    assert "inv(tridiag(...)): a tridiagonal solve in O(n)" in text and "cyclic reduction" in text
    g = prog.graph           # tridiag(l, d, l) is known symmetric, tridiag(l, d, u) is not
    props = {g[v].operands[0] == g[v].operands[2]: g.type(v).props for v in g.live() if g[v].kind == "tridiag"}
    assert "symmetric" in props[True] and "symmetric" not in props[False]


ERRORS = [
    ("tridiag(d, d, d) @ x", "tridiag's lower must have n − 1", "tridiag("),
    ("tridiag(l, d, d) @ x", "tridiag's upper must have n − 1", "tridiag("),
    ("tridiag(l, d) @ x", "takes 3 arguments, got 2", "tridiag("),
    ("tridiag(l, W, l) @ x", "tridiag's main must have rank 1", "W"),
]


@pytest.mark.parametrize("expr,message,at", ERRORS, ids=[e[1][:24] for e in ERRORS])
def test_errors_are_located(expr, message, at):
    src = f"input l : [4]\ninput d : [5]\ninput W : [5, 5]\ninput x : [5, 1]\nexport y = {expr}\n"
    assert_error_at(src, message, at)

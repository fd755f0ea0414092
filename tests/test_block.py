"""block([[A, B], [C, D]]), hstack, vstack (issue 18, opdsl/kinds/block.py): against numpy.block, the
Schur-complement and substitution rules against dense solves, shapes checked per block row and
column with located errors, and the saddle-point example."""
from __future__ import annotations

import numpy as np
import pytest

import opdsl
from tests.harness import assert_error_at, call

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent

GRID = """input A : [2, 3]
input B : [2, 4]
input C : [5, 3]
input D : [5, 4]
input x : [7, 2]
input z : [7, 3]
input u : [3, 1]
export y = block([[A, B], [C, D]]) @ x
export t = block([[A, B], [C, D]]).T @ z
export h = hstack(A, B) @ x
export v = vstack(A, C) @ u
"""


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax", "tvm"])
def test_grid_hstack_vstack_transpose_against_numpy_block(backend):
    prog = opdsl.compile(GRID, backend=backend, dtype="float64")
    rng = np.random.default_rng(0)
    m = {k: rng.standard_normal(s) for k, s in
         {"A": (2, 3), "B": (2, 4), "C": (5, 3), "D": (5, 4), "x": (7, 2), "z": (7, 3), "u": (3, 1)}.items()}
    full = np.block([[m["A"], m["B"]], [m["C"], m["D"]]])

    def run(name):
        return np.asarray(call(prog, name, {k: m[k] for k in prog[name].params}))
    np.testing.assert_allclose(run("y"), full @ m["x"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(run("t"), full.T @ m["z"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(run("h"), np.hstack([m["A"], m["B"]]) @ m["x"], rtol=1e-12)
    np.testing.assert_allclose(run("v"), np.vstack([m["A"], m["C"]]) @ m["u"], rtol=1e-12)


def _fired(prog):
    return {k for r in prog.records for k in r.fired}


def test_saddle_point_example_uses_the_schur_complement():
    """examples/saddle.op: [[H, Aᵀ], [A, 0]] with H diagonal; the rule factors only the m x m S, no
    (n + m) x (n + m) matrix is formed, and the solution satisfies the KKT conditions."""
    prog = opdsl.compile_file(str(ROOT / "examples" / "saddle.op"), backend="numpy", dtype="float64")
    assert {"inv-block-schur", "logdet-block-schur"} <= _fired(prog)
    n, m = 200, 20
    g = prog.primitive
    sizes = [int(np.prod([g.dims.value(d) for d in g.type(v).shape])) for v in g.live()]
    assert max(sizes) < (n + m) ** 2 / 4
    rng = np.random.default_rng(1)
    h, a, rhs = rng.uniform(0.5, 2, n), rng.standard_normal((m, n)), rng.standard_normal((n + m, 1))
    k = np.block([[np.diag(h), a.T], [a, np.zeros((m, m))]])
    sol = call(prog, "solution", {"h": h, "A": a, "rhs": rhs})
    np.testing.assert_allclose(sol, np.linalg.solve(k, rhs), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(a @ sol[:n], rhs[n:], atol=1e-9)                 # A x = b
    np.testing.assert_allclose(call(prog, "logdet_kkt", {"h": h, "A": a}), np.linalg.slogdet(k)[1], rtol=1e-10)


def test_block_triangular_solve_is_substitution():
    src = ("input A : [30, 30]\ninput C : [20, 30]\ninput D : [20, 20]\ninput x : [50, 1]\n"
           "let K = block([[assume(A, lower), zeros(30, 20)], [C, assume(D, lower)]])\n"
           "export y = inv(K) @ x\nexport z = logdet(K)\n")
    prog = opdsl.compile(src, backend="numpy", dtype="float64")
    assert {"inv-block-triangular", "logdet-block-triangular"} <= _fired(prog)
    rng = np.random.default_rng(2)
    a = np.tril(rng.standard_normal((30, 30))) + 6 * np.eye(30)
    d = np.tril(rng.standard_normal((20, 20))) + 6 * np.eye(20)
    c, x = rng.standard_normal((20, 30)), rng.standard_normal((50, 1))
    k = np.block([[a, np.zeros((30, 20))], [c, d]])
    np.testing.assert_allclose(call(prog, "y", {"A": a, "C": c, "D": d, "x": x}), np.linalg.solve(k, x), rtol=1e-9)
    np.testing.assert_allclose(call(prog, "z", {"A": a, "C": c, "D": d}), np.linalg.slogdet(k)[1], rtol=1e-10)
    assert "solve_triangular" in {prog.primitive.kind(v) for v in prog.primitive.live()}


def test_from_python():
    import torch

    @opdsl.jit
    def f(A, B, C, D, x):
        return opdsl.block([[A, B], [C, D]]) @ x

    rng = np.random.default_rng(3)
    m = [torch.tensor(rng.standard_normal(s)) for s in ((2, 2), (2, 3), (3, 2), (3, 3), (5, 1))]
    want = np.block([[m[0].numpy(), m[1].numpy()], [m[2].numpy(), m[3].numpy()]]) @ m[4].numpy()
    np.testing.assert_allclose(f(*m).numpy(), want, rtol=1e-12)


ERRORS = [
    ("block([[A, B], [C]]) @ x", "block rows must have the same number of blocks", "[C]"),
    ("block([[A, C], [C, D]]) @ x", "block row 1 has 2 rows in its first block", "C]"),
    ("block([[A, B], [D, C]]) @ x", "block column 1 has 3 columns in its first block", "D,"),
    ("block(A, B) @ x", "takes 1 argument", "block("),
    ("block([A, B]) @ x", "takes a list of block rows", "[A, B]"),
    ("hstack(A, C) @ x", "block row 1 has 2 rows", "C)"),
    ("block([[A, B], [C, D]], a=1) @ x", "has no option", "a=1"),
]


@pytest.mark.parametrize("expr,message,at", ERRORS, ids=[e[1][:28] for e in ERRORS])
def test_errors_are_located(expr, message, at):
    src = (f"input A : [2, 3]\ninput B : [2, 4]\ninput C : [5, 3]\ninput D : [5, 4]\ninput x : [7, 1]\n"
           f"export y = {expr}\n")
    assert_error_at(src, message, at)


# ---- pad(n, before, after) (kinds/pad.py) -----------------------------------------------------------

def test_pad_and_its_transpose_crop():
    src = ("dim n = 5\ninput x : [n, 2]\ninput y : [n + 3, 2]\nexport p = pad(n, 2, 1) @ x\n"
           "export c = pad(n, 2, 1).T @ y\nexport r = pad(n, 2, 1).T @ (pad(n, 2, 1) @ x)\n")
    prog = opdsl.compile(src, backend="numpy", dtype="float64")
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((5, 2)), rng.standard_normal((8, 2))
    np.testing.assert_array_equal(prog.p(x=x), np.pad(x, ((2, 1), (0, 0))))
    np.testing.assert_array_equal(prog.c(y=y), y[2:7])
    np.testing.assert_array_equal(prog.r(x=x), x)


PAD_ERRORS = [
    ("pad(3, -1, 0) @ x", "pad's before must be a non-negative integer", "-1"),
    ("pad(3, 0, 1.5) @ x", "pad's after must be a non-negative integer", "1.5"),
    ("pad(3, 1) @ x", "takes 3 arguments, got 2", "pad("),
]


@pytest.mark.parametrize("expr,message,at", PAD_ERRORS, ids=[e[1][:28] for e in PAD_ERRORS])
def test_pad_errors_are_located(expr, message, at):
    assert_error_at(f"input x : [3, 1]\nexport y = {expr}\n", message, at)


# ---- select([i, j, ...], n) (kinds/select.py) ------------------------------------------------------

@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
def test_select_gathers_and_its_transpose_adds_back(backend):
    """PyLops' Restriction: select(idx, n) @ x = x[idx]; its transpose scatters, adding at a repeated index."""
    src = ("dim n = 6\ninput x : [2, n, 3]\ninput y : [4, 3]\nexport p = select([5, 0, 2, 0], n) @ x\n"
           "export t = select([5, 0, 2, 0], n).T @ y\n")
    prog = opdsl.compile(src, backend=backend, dtype="float64")
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((2, 6, 3)), rng.standard_normal((4, 3))
    np.testing.assert_array_equal(np.asarray(call(prog, "p", {"x": x})), x[:, [5, 0, 2, 0], :])
    want = np.zeros((6, 3))
    np.add.at(want, [5, 0, 2, 0], y)
    np.testing.assert_allclose(np.asarray(call(prog, "t", {"y": y})), want, rtol=1e-15)


def test_select_on_tvm_is_refused_by_name():
    from opdsl.errors import BackendError
    with pytest.raises(BackendError, match="does not implement primitive 'take'"):
        opdsl.compile("input x : [4, 1]\nexport y = select([1, 2], 4) @ x\n", backend="tvm")


SELECT_ERRORS = [
    ("select([0, 4], 4) @ x", "select's index must be an integer in [0, 4), got 4", "4]"),
    ("select([0, 1.5], 4) @ x", "select's index must be an integer", "1.5"),
    ("select([], 4) @ x", "a non-empty list of integers", "[]"),
    ("select(2, 4) @ x", "a non-empty list of integers", "2,"),
]


@pytest.mark.parametrize("expr,message,at", SELECT_ERRORS, ids=[e[1][:28] for e in SELECT_ERRORS])
def test_select_errors_are_located(expr, message, at):
    assert_error_at(f"input x : [4, 1]\nexport y = {expr}\n", message, at)

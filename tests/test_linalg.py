"""inv, logdet, diag_of, trace and dense(A) (opdsl/kinds/linalg.py): language, errors, leaves,
run-time singularity, conjugate gradients, gradients and scalar exports.

The rules themselves are tested in tests/test_linalg_rules.py; the catalogue
(tests/test_catalogue.py) runs every example of these kinds on every backend.
"""
import warnings

import re

import numpy as np
import pytest

import opdsl
from opdsl.api import SingularError
from opdsl.errors import OpdslError, ShapeError, TypeError_

from .harness import call, run_against_dense, structured_inputs

BACKENDS = ["numpy", "torch", "jax"]


def check(src, backend, dtype="float64", seeds=(0,), tol=None):
    return run_against_dense(src, backend, dtype, inputs=structured_inputs, seed=tuple(seeds), tol=tol, verify=True)


def prims(prog):
    return {prog.primitive.kind(v) for v in prog.primitive.live()}


# ---- the language and its errors ------------------------------------------------------------------

@pytest.mark.parametrize("src,kind,words", [
    ("input W : [3, 4]\ninput x : [4, 2]\nexport y = inv(W) @ x", ShapeError, "square"),
    ("input x : [4, 2]\nexport y = inv(zeros(4, 4)) @ x", ShapeError, "zero operator"),
    ("input U : [6, 2]\ninput V : [6, 2]\ninput x : [6, 1]\nexport y = inv(lowrank(U, V)) @ x", ShapeError,
     "rank at most 2 < 6"),
    ("input A : [2, 3]\ninput B : [3, 2]\ninput x : [6, 1]\nexport y = inv(kron(A, B)) @ x", ShapeError, "non-square"),
    ("input A : [3, 2]\ninput B : [2, 3]\ninput x : [3, 1]\nexport y = inv(A @ B) @ x", ShapeError,
     "2 < 3 dimensions"),
    ("input A : [3, 2]\ninput B : [2, 3]\ninput x : [3, 1]\nexport y = inv(kron(A, eye(1)) @ B) @ x",
     ShapeError, "2 < 3 dimensions"),
    ("input W : [3, 3]\ninput x : [3, 1]\nexport y = inv(0 * W) @ x", ShapeError, "singular"),
    ("input W : [3, 3]\ninput x : [3, 1]\nexport y = inv(W, method=qr) @ x", TypeError_, "unknown inv method"),
    ("input W : [3, 3]\ninput x : [3, 1]\nexport y = inv(W, tol=1e-3) @ x", TypeError_, "method=cg only"),
    ("input W : [3, 3]\ninput x : [3, 1]\nexport y = inv(W, method=cg, maxiter=0) @ x", TypeError_, "maxiter"),
    ("input W : [3, 3]\ninput x : [3, 1]\nexport y = inv(W, method=cg, tol=-1) @ x", TypeError_, "tol"),
    ("input W : [3, 3]\ninput x : [3, 1]\nexport y = inv(W, shift=2) @ x", TypeError_, "no option"),
    ("input W : [3, 4]\nexport y = logdet(W)", ShapeError, "square"),
    ("input W : [3, 4]\nexport y = diag_of(W)", ShapeError, "square"),
    ("input W : [3, 4]\nexport y = trace(W)", ShapeError, "square"),
    ("input d : [3]\nexport y = logdet(d)", TypeError_, "operator"),
])
def test_compile_errors(src, kind, words):
    with pytest.raises(kind) as e:
        opdsl.compile(src, backend="numpy")
    assert words in str(e.value)
    assert "<string>:" in str(e.value) and "^" in str(e.value)       # located, with a caret


def test_inv_of_a_non_square_points_at_the_call_with_a_hint():
    with pytest.raises(ShapeError) as e:
        opdsl.compile("input W : [3, 4]\ninput x : [4, 2]\nexport y = inv(W) @ x", backend="numpy")
    assert e.value.span.line == 3 and e.value.span.column == 12 and "inv(A.T @ A)" in e.value.hint


def test_properties_propagate():
    from opdsl.frontend import to_graph
    g = to_graph("input S : [3, 3] psd\ninput T : [2, 2] psd\ninput L : [3, 3] lower\ninput x : [6, 1]\n"
                 "input z : [3, 1]\nlet K = kron(S, T)\nlet Ki = inv(K)\nlet Li = inv(L)\nlet Lt = inv(L.T)\n"
                 "export y = Ki @ x\nexport w = Li @ (Lt @ z)", "<t>")
    by_name = {g[v].name: g.type(v) for v in g.live() if g[v].name}
    assert "psd" in by_name["K"].props and {"psd", "invertible"} <= by_name["Ki"].props
    assert {"lower", "invertible"} <= by_name["Li"].props
    from opdsl.kinds.linalg import triangular
    lt = next(v for v in g.live() if g[v].name == "Lt")
    assert triangular(g, lt) == "upper"


# ---- leaves: Cholesky, triangular, LU, batched blocks ----------------------------------------------

LEAVES = {
    "psd": ("input S : [5, 5] psd\ninput x : [5, 3]\nexport y = inv(S) @ x\nexport z = logdet(S)",
            {"cholesky", "cho_solve"}),
    "lower": ("input L : [5, 5] lower\ninput x : [5, 3]\nexport y = inv(L) @ x\nexport z = logdet(L)",
              {"solve_triangular", "checked"}),
    "upper-transposed": ("input L : [5, 5] lower\ninput x : [5]\nexport y = inv(L.T) @ x", {"solve_triangular"}),
    "lu": ("input W : [5, 5]\ninput x : [5, 3]\nexport y = inv(W) @ x\nexport z = logdet(W)", {"solve", "slogdet"}),
    "batched": ("input W : [2, 4, 4]\ninput x : [4, 3]\nexport y = inv(W) @ x\nexport z = logdet(W)\n"
                "export t = trace(W)\nexport d = diag_of(W)", {"solve", "slogdet", "diagonal"}),
    "blocks": ("input W : [3, 2, 2]\ninput x : [6, 3]\nexport y = inv(blockdiag(W)) @ x\n"
               "export z = logdet(blockdiag(W))", {"solve", "slogdet"}),
    "cholesky-forced": ("input W : [4, 4]\ninput x : [4, 1]\nexport y = inv(W @ W.T + eye(4), method=cholesky) @ x",
                        {"cholesky"}),
    "lu-forced": ("input S : [4, 4] psd\ninput x : [4, 1]\nexport y = inv(S, method=lu) @ x", {"solve"}),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(LEAVES))
def test_leaf_solves(case, backend):
    src, want = LEAVES[case]
    prog = check(src, backend, seeds=(0, 1))
    assert want <= prims(prog)
    if case == "psd":
        assert "solve" not in prims(prog) and "slogdet" not in prims(prog)


@pytest.mark.parametrize("backend", BACKENDS)
def test_leaves_in_float32(backend):
    check(LEAVES["psd"][0] + "\nexport w = inv(S) @ (S @ x)", backend, "float32")


def test_factorization_shared_by_two_solves():
    prog = opdsl.compile("input S : [4, 4] psd\ninput x : [4, 2]\ninput b : [4]\n"
                         "export y = inv(S) @ x + inv(S) @ (S @ x)\nexport z = logdet(S)", backend="numpy")
    g = prog.primitive
    assert sum(g.kind(v) == "cholesky" for v in g.live([g.exports["y"]])) == 1


# ---- run-time singularity --------------------------------------------------------------------------

SINGULAR = {
    "lu": ("input W : [3, 3]\ninput b : [3]\nexport y = inv(W) @ b", {"W": np.ones((3, 3))}),
    "cholesky": ("input S : [3, 3] psd\ninput b : [3]\nexport y = inv(S) @ b", {"S": -np.eye(3)}),
    "triangular": ("input L : [3, 3] lower\ninput b : [3]\nexport y = inv(L) @ b",
                   {"L": np.tril(np.ones((3, 3))) - np.diag([0.0, 1.0, 0.0])}),
    "woodbury capacitance": ("input d : [3]\ninput U : [3, 1]\ninput V : [3, 1]\ninput b : [3]\n"
                             "export y = inv(diag(d) + lowrank(U, V)) @ b",
                             {"d": np.ones(3), "U": np.ones((3, 1)), "V": -np.ones((3, 1)) / 3}),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(SINGULAR))
def test_singular_matrix_raises_a_clear_error(case, backend):
    src, bad = SINGULAR[case]
    prog = opdsl.compile(src, backend=backend, dtype="float64")
    inputs = {k: np.asarray(v, dtype=np.float64) for k, v in
              structured_inputs(prog.graph, "y").items()}
    inputs.update(bad)
    with pytest.raises(SingularError) as e:
        call(prog, "y", inputs)
    assert "inv(" in str(e.value) and "<string>:" in str(e.value)      # names the inverse and where it is


def test_singular_error_from_the_standalone_module():
    prog = opdsl.compile(SINGULAR["lu"][0], backend="numpy", dtype="float64")
    with pytest.raises(prog.module.SingularError, match="inv\\(W\\) at <string>:3:12"):
        prog.module.y(W=np.ones((3, 3)), b=np.ones(3))
    assert issubclass(prog.module.SingularError, ArithmeticError)


def test_modules_without_solves_have_no_singular_helpers():
    prog = opdsl.compile("input d : [4]\ninput x : [4, 2]\nexport y = inv(diag(d)) @ x\nexport z = trace(diag(d))",
                         backend="torch")
    assert "SingularError" not in prog.source and "_linalg" not in prog.source


# ---- conjugate gradients ---------------------------------------------------------------------------

CG = ("dim a = 4\ndim b = 5\ninput A : [a, a]\ninput B : [b, b]\ninput x : [a * b, 3]\n"
      "let K = kron(A @ A.T, B @ B.T) + 0.5 * eye(a * b)\n"
      "export y = inv(K, method=cg, tol=1e-10, maxiter=200) @ x\n"
      "export z = inv(K, method=cg, tol=1e-10, maxiter=200, precond=jacobi) @ x\n")


@pytest.mark.parametrize("backend", BACKENDS)
def test_cg_solves_a_structured_spd_system(backend):
    prog = check(CG, backend, tol=1e-8)
    assert "cg" in prims(prog) and "solve" not in prims(prog)
    # the operator is applied through its structure: no (a*b) x (a*b) matrix anywhere
    for v in prog.primitive.live():
        body = prog.primitive[v].attrs.get("body")
        if body is not None:
            shapes = [tuple(body.graph.type(u).shape) for u in body.graph.live([body.root])]
            assert all(len(s) < 2 or (s[-2], s[-1]) != (20, 20) for s in shapes)
    if backend != "jax":
        steps = prog.module.CG_RESIDUALS
        assert len(steps) == 2 and all(0 < it <= 200 and res <= 1e-10 for it, res in steps.values())
        jacobi = next(v for k, v in steps.items() if "jacobi" in k)
        plain = next(v for k, v in steps.items() if "jacobi" not in k)
        assert jacobi[0] <= plain[0] + 2


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_cg_warns_with_its_residual_when_it_stops_early(backend):
    src = CG.replace("maxiter=200) @ x\n", "maxiter=2) @ x\n", 1).split("export z")[0]
    prog = opdsl.compile(src, backend=backend, dtype="float64")
    inputs = structured_inputs(prog.graph, "y")
    with pytest.warns(RuntimeWarning, match="stopped after 2 steps at relative residual"):
        call(prog, "y", inputs)
    (steps, res), = prog.module.CG_RESIDUALS.values()
    assert steps == 2 and res > 1e-10


def test_cg_source_is_a_readable_loop_body():
    """numpy: a closure over the program's values; torch: the values it reads are parameters (the
    inputs of the custom autograd function that differentiates the solve implicitly)."""
    prog = opdsl.compile(CG, backend="numpy")
    assert "def _matvec(_p):" in prog.source and "_cg('inv(K, method=cg" in prog.source
    prog = opdsl.compile(CG, backend="torch")
    assert re.search(r"def _matvec\(_p, _a(, _a_\d+)*\):", prog.source) and "_cg_torch('inv(K, method=cg" in prog.source


# ---- gradients: solve and logdet against the dense float64 formulas ---------------------------------

GRAD = ("dim n = 6\ninput d : [n] float64\ninput U : [n, 2] float64\ninput V : [n, 2] float64\n"
        "input A : [2, 2] float64\ninput B : [3, 3] float64\ninput x : [n, 2] float64\n"
        "let K = kron(3 * eye(2) + A, 3 * eye(3) + B)\n"
        "export y = inv(diag(d) + lowrank(U, V)) @ x\nexport z = logdet(diag(d) + lowrank(U, V))\n"
        "export s = inv(K) @ x\nexport t = logdet(K)\n")


def _grad_inputs():
    rng = np.random.default_rng(3)
    return {"d": rng.uniform(1, 2, 6), "U": rng.standard_normal((6, 2)) / 3, "V": rng.standard_normal((6, 2)) / 3,
            "A": rng.standard_normal((2, 2)) / 2, "B": rng.standard_normal((3, 3)) / 2,
            "x": rng.standard_normal((6, 2))}


def _dense_torch(t):
    import torch
    M = torch.diag(t["d"]) + t["U"] @ t["V"].T
    K = torch.kron(3 * torch.eye(2, dtype=torch.float64) + t["A"], 3 * torch.eye(3, dtype=torch.float64) + t["B"])
    return {"y": torch.linalg.solve(M, t["x"]), "z": torch.linalg.slogdet(M)[1],
            "s": torch.linalg.solve(K, t["x"]), "t": torch.linalg.slogdet(K)[1]}


@pytest.mark.parametrize("export", ["y", "z", "s", "t"])
def test_torch_gradients_match_dense(export):
    import torch
    prog = opdsl.compile(GRAD, backend="torch")
    w = torch.from_numpy(np.random.default_rng(4).standard_normal(6 * 2)).reshape(6, 2)

    def grads(fn):
        t = {k: torch.tensor(v, requires_grad=True) for k, v in _grad_inputs().items()}
        out = fn(t)
        loss = (out * w).sum() if out.ndim else out
        loss.backward()
        return {k: (v.grad if v.grad is not None else torch.zeros_like(v)).numpy() for k, v in t.items()}

    args = {"y": "dUVx", "z": "dUV", "s": "ABx", "t": "AB"}[export]
    got = grads(lambda t: prog[export](**{k: t[k] for k in args}))
    want = grads(lambda t: _dense_torch(t)[export])
    for k in args:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-9, atol=1e-10, err_msg=k)


@pytest.mark.parametrize("export", ["y", "z", "s", "t"])
def test_jax_gradients_match_dense(export):
    import jax
    import jax.numpy as jnp
    prog = opdsl.compile(GRAD, backend="jax")
    args = {"y": "dUVx", "z": "dUV", "s": "ABx", "t": "AB"}[export]
    w = np.random.default_rng(4).standard_normal((6, 2))

    def dense(t):
        if export in "yz":
            M = jnp.diag(t["d"]) + t["U"] @ t["V"].T
            return jnp.linalg.solve(M, t["x"]) if export == "y" else jnp.linalg.slogdet(M)[1]
        K = jnp.kron(3 * jnp.eye(2) + t["A"], 3 * jnp.eye(3) + t["B"])
        return jnp.linalg.solve(K, t["x"]) if export == "s" else jnp.linalg.slogdet(K)[1]

    def loss(fn):
        def f(t):
            out = fn(t)
            return (out * w).sum() if out.ndim else out
        return f

    with jax.enable_x64(True):
        t = {k: jnp.asarray(v) for k, v in _grad_inputs().items() if k in args}
        got = jax.grad(loss(lambda t: prog[export](**t)))(t)
        want = jax.grad(loss(dense))(t)
        for k in args:
            np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want[k]), rtol=1e-9, atol=1e-10, err_msg=k)


def test_torch_gradient_through_cg():
    import torch
    prog = opdsl.compile(CG.split("export z")[0], backend="torch", dtype="float64")
    inputs = structured_inputs(prog.graph, "y")
    t = {k: torch.tensor(v, requires_grad=True) for k, v in inputs.items()}
    prog.y(**t).sum().backward()
    A, B = (torch.tensor(inputs[k], requires_grad=True) for k in "AB")
    K = torch.kron(A @ A.T, B @ B.T) + 0.5 * torch.eye(20, dtype=torch.float64)
    torch.linalg.solve(K, torch.tensor(inputs["x"])).sum().backward()
    np.testing.assert_allclose(t["A"].grad.numpy(), A.grad.numpy(), rtol=1e-6, atol=1e-8)


# ---- scalar and vector results, dense(A), the Python embedding ----------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_scalar_exports(backend):
    prog = check("input A : [2, 2]\ninput B : [3, 3]\ninput d : [6]\n"
                 "export ld = logdet(kron(A, B))\nexport tr = trace(kron(A, B) + diag(d))\n"
                 "export dg = diag_of(kron(A, B))\nexport both = logdet(kron(A, B)) - 2 * trace(diag(d))", backend)
    assert prog.graph.type(prog.graph.exports["ld"]).shape == ()
    assert "def ld(*, A, B):" in prog.source


@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_materializes(backend):
    prog = check("input A : [2, 3]\ninput B : [3, 2]\ninput U : [6, 2]\ninput V : [6, 2]\ninput W : [6, 6]\n"
                 "export y = dense(kron(A, B) + lowrank(U, V))\nexport z = dense(W)", backend)
    assert prog.graph.type(prog.graph.exports["y"]).shape == (6, 6)


def test_dense_of_a_matrix_is_the_matrix():
    prog = opdsl.compile("input W : [3, 4]\nexport y = dense(W)", backend="numpy")
    assert prims(prog) == {"arg"}


def test_python_embedding():
    import torch

    @opdsl.jit(backend="torch")
    def f(x, d, U, V):
        A = opdsl.diag(d) + opdsl.lowrank(U, V)
        return opdsl.inv(A) @ x, opdsl.logdet(A)

    rng = np.random.default_rng(0)
    d, U, V, x = rng.uniform(1, 2, 5), rng.standard_normal((5, 2)) / 3, rng.standard_normal((5, 2)) / 3, \
        rng.standard_normal((5, 2))
    try:
        y, ld = f(*(torch.tensor(v) for v in (x, d, U, V)))
    except OpdslError:        # a jit function returns one tensor: check the pieces one at a time
        y = opdsl.jit(backend="torch")(lambda x, d, U, V: opdsl.inv(opdsl.diag(d) + opdsl.lowrank(U, V)) @ x)(
            *(torch.tensor(v) for v in (x, d, U, V)))
        ld = opdsl.jit(backend="torch")(lambda d, U, V: opdsl.logdet(opdsl.diag(d) + opdsl.lowrank(U, V)))(
            *(torch.tensor(v) for v in (d, U, V)))
    M = np.diag(d) + U @ V.T
    np.testing.assert_allclose(y.numpy(), np.linalg.solve(M, x), rtol=1e-9)
    np.testing.assert_allclose(float(ld), np.linalg.slogdet(M)[1], rtol=1e-9)


def test_python_embedding_cg_option():
    import torch
    f = opdsl.jit(backend="torch")(lambda x, A: opdsl.inv(A @ A.T + 2 * opdsl.eye(4), method="cg", tol=1e-12) @ x)
    rng = np.random.default_rng(1)
    A, x = rng.standard_normal((4, 4)), rng.standard_normal((4, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = f(torch.tensor(x), torch.tensor(A))
    np.testing.assert_allclose(y.numpy(), np.linalg.solve(A @ A.T + 2 * np.eye(4), x), rtol=1e-8)


# ---- cost -------------------------------------------------------------------------------------------------

def test_structured_inverse_costs_far_less_than_dense():
    from opdsl.cost import Evaluator, graph_flops
    src = ("dim n = 4096\ndim r = 64\ninput d : [n]\ninput U : [n, r]\ninput V : [n, r]\ninput x : [n, 16]\n"
           "export y = inv(diag(d) + lowrank(U, V)) @ x")
    prog = opdsl.compile(src, backend="numpy")
    ev = Evaluator(prog.graph.dims)
    src_cost = ev.num(graph_flops(prog.graph, [prog.graph.exports["y"]]))       # a dense LU of the sum
    opt_cost = ev.num(graph_flops(prog.optimized, [prog.optimized.exports["y"]]))
    assert src_cost > 2 / 3 * 4096 ** 3 and opt_cost < src_cost / 300


# ---- assume(A, props): properties the checker cannot infer ------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_assume_psd_gives_a_cholesky_leaf(backend):
    prog = check("dim n = 5\ninput W : [n, n]\ninput x : [n, 2]\nlet S = assume(W @ W.T + eye(n), psd)\n"
                 "export y = inv(S) @ x\nexport z = logdet(S)", backend)
    assert {"cholesky", "cho_solve"} <= prims(prog) and "solve" not in prims(prog)


def test_assume_lower_transposes_to_upper():
    # a product of lower-triangular matrices is lower triangular: a fact the checker does not derive
    prog = check("input L : [4, 4] lower\ninput M : [4, 4] lower\ninput x : [4, 2]\n"
                 "export y = inv(assume(L @ M, lower).T) @ x", "numpy")
    tri = [prog.primitive[v] for v in prog.primitive.live() if prog.primitive.kind(v) == "solve_triangular"]
    assert len(tri) == 1 and tri[0].attrs["upper"] is True


def test_assume_errors():
    with pytest.raises(TypeError_, match="unknown property 'positive'"):
        opdsl.compile("input W : [3, 3]\ninput x : [3, 1]\nexport y = inv(assume(W, positive)) @ x")
    with pytest.raises(ShapeError, match="square"):
        opdsl.compile("input W : [3, 4]\ninput x : [4, 1]\nexport y = assume(W, psd) @ x")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_assume_psd_of_an_indefinite_matrix_raises(backend):
    prog = opdsl.compile("input W : [3, 3]\ninput b : [3]\nexport y = inv(assume(W, psd)) @ b",
                         backend=backend, dtype="float64")
    with pytest.raises(SingularError, match="inv\\(assume\\(W, psd\\)\\)"):
        call(prog, "y", {"W": -np.eye(3), "b": np.ones(3)})


def test_constants_alone_take_the_programs_dtype():
    """logdet(2π eye(n)) in a float64 program is computed in float64 (it was float32: off by 6.6e-7)."""
    import math
    for backend in ("numpy", "torch"):
        prog = opdsl.compile("dim n = 6\nexport q = logdet(6.283185307179586 * eye(n))", backend=backend,
                             dtype="float64")
        q = prog.q()
        assert str(q.dtype).endswith("float64") and abs(float(q) - 6 * math.log(6.283185307179586)) < 1e-12

"""Solvers for kernel matrices (issue 16): the matrix formed once for a loop while it fits, the
pivoted-Cholesky preconditioner, method=auto's choice of CG / SLQ above AUTO_CG_ROWS, and torch's
solve-reusing gradients (CG differentiated implicitly, SLQ through the trace estimator), each
against dense float64 references (docs/kernels.md)."""
from __future__ import annotations

import numpy as np
import pytest

import opdsl
from opdsl.kinds import linalg, linalg_cg
from opdsl.primitives import PRIMS
from tests.harness import assert_error_at, call

torch = pytest.importorskip("torch")


def _points(n, d=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, d))


def _rbf(x, ls=1.0, s=1.0):
    r2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1) / ls ** 2
    return s * np.exp(-0.5 * r2)


def _kinds(prog):
    """The primitive kinds of a program, loop bodies included."""
    out = set()

    def walk(g, roots=None):
        for v in g.live(roots):
            n = g[v]
            out.add(n.kind)
            body = n.attrs.get("body")
            if body is not None:
                walk(body.graph, [body.root])
    walk(prog.primitive)
    return out


def _body_kinds(prog):
    """The primitive kinds inside the loop bodies only."""
    out = set()
    for v in prog.primitive.live():
        body = prog.primitive[v].attrs.get("body")
        if body is not None:
            out |= {body.graph.kind(u) for u in body.graph.live([body.root])}
    return out


CG = """dim n = {n}
input X : [n, 3]
input b : [n, 2]
export y = inv(kernel(X, X, rbf, lengthscale=0.5) + 0.1 * eye(n), method=cg, tol=1e-8, maxiter=300{pre}) @ b
"""


# ---- the matrix formed once for the loop ------------------------------------------------------

def test_cg_forms_the_kernel_once_while_it_fits_and_tiles_beyond(monkeypatch):
    """Below LOOP_MATRIX_VALUES the CG body is one matmul with the kernel matrix (formed before the
    loop by kernel_matrix); above it the body evaluates the kernel in tiles (kernel_apply)."""
    src = CG.format(n=40, pre="")
    prog = opdsl.compile(src, backend="numpy", dtype="float64")
    assert "kernel_matrix" in _kinds(prog) and "kernel_apply" not in _body_kinds(prog)
    assert "matmul" in _body_kinds(prog)
    assert "formed once as a matrix" in prog.explain()
    monkeypatch.setattr(linalg_cg, "LOOP_MATRIX_VALUES", 40 * 40 - 1)
    tiled = opdsl.compile(src, backend="numpy", dtype="float64")
    assert "kernel_apply" in _body_kinds(tiled) and "kernel_matrix" not in _kinds(tiled)
    x, b = _points(40), np.random.default_rng(1).standard_normal((40, 2))
    want = np.linalg.solve(_rbf(x, 0.5) + 0.1 * np.eye(40), b)
    for p in (prog, tiled):
        np.testing.assert_allclose(call(p, "y", {"X": x, "b": b}), want, rtol=1e-6, atol=1e-8)


def test_the_sum_is_not_formed_only_its_kernel():
    """kernel(X, X) + σ² I: the kernel is the part formed (no n x n identity in the program)."""
    prog = opdsl.compile(CG.format(n=40, pre=""), backend="numpy", dtype="float64")
    assert "eye" not in _kinds(prog)


def test_a_structured_operator_is_not_formed():
    """kron(A, B) + I in CG: applying the Kronecker product is cheaper than its matrix."""
    src = ("input A : [8, 8]\ninput B : [8, 8]\ninput b : [64, 1]\n"
           "export y = inv(kron(A @ A.T, B @ B.T) + eye(64), method=cg, tol=1e-8, maxiter=200) @ b\n")
    prog = opdsl.compile(src, backend="numpy", dtype="float64")
    assert "formed once" not in prog.explain()


# ---- the pivoted-Cholesky preconditioner -----------------------------------------------------

@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
def test_pivchol_agrees_and_cuts_the_steps(backend):
    n = 300
    x, b = _points(n), np.random.default_rng(2).standard_normal((n, 2))
    want = np.linalg.solve(_rbf(x, 0.5) + 0.1 * np.eye(n), b)
    plain = opdsl.compile(CG.format(n=n, pre=""), backend=backend, dtype="float64")
    pre = opdsl.compile(CG.format(n=n, pre=", precond=pivchol(15)"), backend=backend, dtype="float64")
    for p in (plain, pre):
        np.testing.assert_allclose(np.asarray(call(p, "y", {"X": x, "b": b})), want, rtol=1e-5, atol=1e-7)
    if backend != "jax":     # jax.scipy's cg reports no steps
        (s0, _), = plain.module.CG_RESIDUALS.values()
        (s1, _), = pre.module.CG_RESIDUALS.values()
        assert s1 < s0 / 2, (s0, s1)


def test_pivchol_factor_matches_a_dense_pivoted_cholesky():
    """The pivchol primitive (numpy meaning) against a direct pivoted Cholesky: L Lᵀ reproduces the
    chosen pivots' columns, and rank n reproduces the matrix."""
    a = _rbf(_points(12, 2), 0.7) + 1e-3 * np.eye(12)
    full = PRIMS["pivchol"].np(np.diag(a).copy(), body=lambda e: a @ e, rank=12)
    np.testing.assert_allclose(full @ full.T, a, atol=1e-9)
    low = PRIMS["pivchol"].np(np.diag(a).copy(), body=lambda e: a @ e, rank=4)
    piv = [int(np.argmax(np.abs(low[:, k]))) for k in range(4)]
    np.testing.assert_allclose((low @ low.T)[:, piv], a[:, piv], atol=1e-9)
    assert np.all(np.diag(a - low @ low.T) >= -1e-12)


def test_pivchol_past_the_rank_gives_zero_columns():
    """Rank beyond n: the extra columns are zero (and the preconditioner still exact)."""
    a = _rbf(_points(5, 2), 0.5) + 0.1 * np.eye(5)
    out = PRIMS["pivchol"].np(np.diag(a).copy(), body=lambda e: a @ e, rank=8)
    assert out.shape == (5, 8) and np.allclose(out[:, 5:], 0)
    np.testing.assert_allclose(out @ out.T, a, atol=1e-9)


PIVCHOL_ERRORS = [
    ("inv(W @ W.T, method=cg, precond=pivchol(3)) @ v", "inv(", "A = S + D with D diagonal"),
    ("inv(kernel(X, X, rbf) + eye(6), method=cg, precond=pivchol(0)) @ v", "pivchol(0)", "positive integer"),
    ("inv(kernel(X, X, rbf) + eye(6), method=cg, precond=pivchol(2, 3)) @ v", "pivchol(2, 3)", "takes 1 to 1"),
    ("inv(kernel(X, X, rbf) + eye(6), method=cg, precond=pivchol(2, tol=1)) @ v", "1", "takes no options"),
    ("inv(kernel(X, X, rbf) + eye(6), precond=pivchol(2)) @ v", "pivchol(2)", "applies to method=cg only"),
    ("pivchol(2) @ v", "pivchol(2)", "got the option value pivchol(...)"),
]


@pytest.mark.parametrize("expr,at,message", PIVCHOL_ERRORS, ids=[e[2][:24] for e in PIVCHOL_ERRORS])
def test_pivchol_errors_are_located(expr, at, message):
    src = f"input X : [6, 2]\ninput W : [6, 6]\ninput v : [6, 1]\nexport y = {expr}\n"
    assert_error_at(src, message, at)


def test_pivchol_default_rank_is_gpytorchs():
    prog = opdsl.compile(CG.format(n=30, pre=", precond=pivchol"), backend="numpy", dtype="float64")
    ranks = {prog.primitive[v].attrs["rank"] for v in prog.primitive.live() if prog.primitive.kind(v) == "pivchol"}
    assert ranks == {linalg.PIVCHOL_RANK} == {15}


# ---- method=auto: Cholesky up to AUTO_CG_ROWS, CG and SLQ above ---------------------------------

AUTO = """dim n = {n}
input X : [n, 2]
input noise : [n] positive
input b : [n, 1]
let K = kernel(X, X, matern32, lengthscale=0.4) + diag(noise)
export y = inv(K) @ b
export z = logdet(K)
export c = logdet(K, method=cholesky)
"""


def test_auto_picks_cholesky_below_the_threshold_and_cg_slq_above(monkeypatch):
    n = 120
    x = _points(n, 2)
    noise = np.full(n, 0.2)
    b = np.random.default_rng(4).standard_normal((n, 1))
    r = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)) / 0.4
    k = (1 + np.sqrt(3) * r) * np.exp(-np.sqrt(3) * r) + np.diag(noise)
    small = opdsl.compile(AUTO.format(n=n), backend="numpy", dtype="float64")
    assert "cholesky" in _kinds(small) and "cg" not in _kinds(small) and "slq" not in _kinds(small)
    assert "inv: Cholesky (A is positive semidefinite)" in small.explain()
    monkeypatch.setattr(linalg, "AUTO_CG_ROWS", 100)
    big = opdsl.compile(AUTO.format(n=n), backend="numpy", dtype="float64")
    assert {"cg", "slq", "pivchol"} <= _kinds(big)
    text = big.explain()
    assert "inv: conjugate gradients (tol 1e-08" in text and "precond pivchol" in text
    assert "logdet: stochastic Lanczos quadrature" in text and "n = 120 > 100 rows" in text
    args = {"X": x, "noise": noise}
    np.testing.assert_allclose(call(big, "y", {**args, "b": b}), np.linalg.solve(k, b), rtol=1e-6, atol=1e-9)
    exact = np.linalg.slogdet(k)[1]
    assert abs(call(big, "z", args) - exact) < 0.05 * abs(exact)
    np.testing.assert_allclose(call(big, "c", args), exact, rtol=1e-10)     # method=cholesky stays exact


def test_auto_keeps_a_direct_solve_for_what_is_not_known_positive_definite(monkeypatch):
    monkeypatch.setattr(linalg, "AUTO_CG_ROWS", 4)
    prog = opdsl.compile("dim n = 8\ninput W : [n, n]\ninput b : [n, 1]\nexport y = inv(W) @ b\n", backend="numpy")
    assert "cg" not in _kinds(prog) and "LU (nothing known" in prog.explain()


# ---- torch: gradients that reuse solves ---------------------------------------------------------

GRAD = """dim n = {n}
input X : [n, 2]
input l : [2] positive
input s : [1] positive
input noise : [n] positive
input b : [n, 1]
let K = kernel(X, X, matern52, lengthscale=l, outputscale=s) + diag(noise)
export y = inv(K, method=cg, tol=1e-7, maxiter=400, precond=pivchol(8)) @ b
export z = logdet(K, method=slq, probes={probes}, steps=30, tol=1e-6, maxiter=400)
"""


def _grad_args(n, seed=1):
    rng = np.random.default_rng(seed)
    return {"X": rng.uniform(0, 3, (n, 2)), "l": np.array([0.7, 1.3]), "s": np.array([1.5]),
            "noise": rng.uniform(0.1, 0.3, n), "b": rng.standard_normal((n, 1))}


def _dense_k(X, l, s, noise):
    r = torch.cdist(X / l, X / l).clamp_min(1e-12)
    return s * (1 + 5 ** 0.5 * r + 5 / 3 * r ** 2) * torch.exp(-(5 ** 0.5) * r) + torch.diag(noise)


def test_cg_gradient_is_the_implicit_one():
    """d/dθ |inv(K) b|² against float64 autograd through a dense solve, for every input; the
    backward is one more CG solve, not autograd through the iterations."""
    n = 120
    prog = opdsl.compile(GRAD.format(n=n, probes=4), backend="torch")
    assert "_CGSolve" in prog.source
    args = {k: torch.tensor(v, dtype=torch.float32, requires_grad=True) for k, v in _grad_args(n).items()}
    y = prog.y(**args)
    (y * y).sum().backward()
    ref = {k: v.detach().double().requires_grad_() for k, v in args.items()}
    yd = torch.linalg.solve(_dense_k(ref["X"], ref["l"], ref["s"], ref["noise"]), ref["b"])
    (yd * yd).sum().backward()
    for k in args:
        err = (args[k].grad.double() - ref[k].grad).abs().max() / ref[k].grad.abs().max()
        assert err < 2e-3, (k, float(err))


def test_slq_gradient_estimates_the_exact_one():
    """GPyTorch's estimator, mean zᵢᵀ K⁻¹ ∂K zᵢ over the probes: with 2,000 probes the hyperparameters'
    gradients are within a few percent of d logdet K (float64 autograd of a dense logdet); the
    error falls with the probes (an estimate, unbiased, not the derivative of the probe estimate)."""
    n = 100
    ref = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in _grad_args(n).items()}
    torch.logdet(_dense_k(ref["X"], ref["l"], ref["s"], ref["noise"])).backward()
    errs = []
    for probes in (20, 2000):
        prog = opdsl.compile(GRAD.format(n=n, probes=probes), backend="torch", dtype="float64")
        args = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in _grad_args(n).items()}
        prog.z(**{k: v for k, v in args.items() if k != "b"}).backward()
        errs.append(max(float((args[k].grad - ref[k].grad).abs().max() / ref[k].grad.abs().max())
                        for k in ("l", "s", "noise")))
    assert errs[1] < 0.05 and errs[1] < errs[0], errs


def test_the_estimators_gradient_check_can_fail():
    """The catalogue checks SLQ's estimated gradient to 1/√probes of Σ |∂ᵢ vᵢ| (Kind.gradient_estimate,
    tests/test_gradients.py); a gradient twice the estimator's fails that check."""
    from tests.harness import CATALOGUE, all_inputs, check_directional, directions, gradient_estimate
    src = next(s for k, _, s in CATALOGUE if k == "logdet" and "method=slq" in s)
    prog = opdsl.compile(src, backend="torch", dtype="float64")
    g, inputs = prog.graph, all_inputs(prog.graph)
    names = prog["y"].params
    args = [torch.tensor(inputs[a], dtype=torch.float64, requires_grad=True) for a in names]
    out = prog.y(**dict(zip(names, args)))
    v, w = directions({a: inputs[a] for a in names}, tuple(out.shape))
    grads = dict(zip(names, (t.numpy() for t in torch.autograd.grad((out * torch.from_numpy(w)).sum(), args))))
    estimate = gradient_estimate(g, g.exports["y"])
    assert estimate is not None and estimate < 0.01
    check_directional(grads, g, g.exports["y"], inputs, v, w, estimate)
    with pytest.raises(AssertionError):
        check_directional({k: 2 * x for k, x in grads.items()}, g, g.exports["y"], inputs, v, w, estimate)


def test_pivchol_from_python():
    """@opdsl.jit: precond=opdsl.pivchol(5), as precond=pivchol(5) in a .op file."""
    @opdsl.jit
    def solve(X, b):
        k = opdsl.kernel(X, X, "rbf") + 0.1 * opdsl.eye(X.shape[0])
        return opdsl.inv(k, method="cg", tol=1e-10, maxiter=300, precond=opdsl.pivchol(5)) @ b

    x = torch.tensor(_points(50, 2), dtype=torch.float64)
    b = torch.randn(50, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    want = np.linalg.solve(_rbf(x.numpy()) + 0.1 * np.eye(50), b.numpy())
    np.testing.assert_allclose(solve(x, b).numpy(), want, rtol=1e-6, atol=1e-8)


def test_the_quadratic_forms_backward_reuses_the_forward_solve():
    """d/dθ bᵀ K⁻¹ b: the incoming gradient of K⁻¹ b is a multiple of b, so the backward's λ = K⁻¹ ḡ is
    that multiple of the forward's solution (no second CG); the gradient still matches a dense one."""
    n = 80
    src = GRAD.format(n=n, probes=4).replace(
        "export y = inv(K, method=cg, tol=1e-7, maxiter=400, precond=pivchol(8)) @ b",
        "export y = b.T @ inv(K, method=cg, tol=1e-7, maxiter=400, precond=pivchol(8)) @ b")
    prog = opdsl.compile(src, backend="torch", dtype="float64")
    args = {k: torch.tensor(v, requires_grad=True) for k, v in _grad_args(n).items()}
    prog.module.CG_RESIDUALS.clear()
    prog.y(**args).sum().backward()
    assert len(prog.module.CG_RESIDUALS) == 1 and not any("gradient" in k for k in prog.module.CG_RESIDUALS)
    ref = {k: v.detach().clone().requires_grad_() for k, v in args.items()}
    k = _dense_k(ref["X"], ref["l"], ref["s"], ref["noise"])
    (ref["b"].T @ torch.linalg.solve(k, ref["b"])).sum().backward()
    for name in args:
        np.testing.assert_allclose(args[name].grad.numpy(), ref[name].grad.numpy(), rtol=1e-4, atol=1e-5)

"""Matrix functions (kinds/matfun.py): pow, sqrt, exp, log, eigvals, eigvecs — against scipy
(fractional_matrix_power, sqrtm, expm, logm), every structure rule fired and sound, the Shampoo eps,
and what bad input gets.  Gradients of every catalogue example are in tests/test_gradients.py
(torch) and tests/test_jax.py (JAX); TVM refuses eigh and expm by name (tests/test_catalogue.py)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sl

import opdsl
from opdsl.errors import OpdslError

from .harness import assert_error_at, assert_matches, call

PY = ("numpy", "torch", "jax")


def spd(rng, n, cond=5.0):
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (q * np.linspace(1.0, cond, n)) @ q.T


def fired(prog):
    return {name for r in prog.records for name in r.fired}


def compile_and_check(src, inputs, expected, backends=PY, rules=(), dtype="float64"):
    for backend in backends:
        prog = opdsl.compile(src, backend=backend, dtype=dtype)
        assert set(rules) <= fired(prog), (set(rules), fired(prog))
        out = call(prog, "y", {k: v.astype(dtype) for k, v in inputs.items() if k in prog["y"].params})
        assert_matches(out, expected, dtype, what=f"{backend}")
    return prog


# ---- each function against scipy, on a leaf (the eigendecomposition path) ---------------------------

@pytest.mark.parametrize("expr,ref", [
    ("pow(A, -0.25)", lambda a: sl.fractional_matrix_power(a, -0.25)),
    ("pow(A, 0.7)", lambda a: sl.fractional_matrix_power(a, 0.7)),
    ("sqrt(A)", sl.sqrtm),
    ("log(A)", sl.logm),
    ("exp(A)", sl.expm),
    ("pow(A, 2.5, precision=float64)", lambda a: sl.fractional_matrix_power(a, 2.5)),
])
def test_leaf_functions_match_scipy(expr, ref):
    rng = np.random.default_rng(0)
    a, x = spd(rng, 6), rng.standard_normal((6, 3))
    src = f"input A : [6, 6] psd\ninput x : [6, 3]\nexport y = {expr} @ x\n"
    for dtype in ("float64", "float32"):
        compile_and_check(src, {"A": a, "x": x}, np.real(ref(a)) @ x, dtype=dtype)


def test_exp_of_a_general_matrix_is_scaling_and_squaring():
    rng = np.random.default_rng(1)
    w, x = rng.standard_normal((5, 5)) * 2, rng.standard_normal((5, 2))    # not symmetric, norm > 5.4
    src = "input W : [5, 5]\ninput x : [5, 2]\nexport y = exp(W) @ x\n"
    prog = compile_and_check(src, {"W": w, "x": x}, sl.expm(w) @ x)
    assert "expm" in {prog.primitive.kind(v) for v in prog.primitive.live()}


def test_integer_powers_are_products():
    rng = np.random.default_rng(2)
    a, x = rng.standard_normal((4, 4)), rng.standard_normal((4, 2))
    src = ("input A : [4, 4]\ninput x : [4, 2]\nexport y = pow(A, 3) @ x\nexport z = pow(3 * eye(4) + A, -2) @ x\n"
           "export w = pow(A, -1) @ x\nexport v = pow(A, 0) @ x\n")
    prog = opdsl.compile(src, backend="numpy", dtype="float64")
    kinds = {prog.graph.kind(v) for v in prog.graph.live()}
    assert "matfun" not in kinds and "inv" in kinds and "compose" in kinds     # no eigendecomposition
    b = 3 * np.eye(4) + a
    np.testing.assert_allclose(prog.y(A=a, x=x), np.linalg.matrix_power(a, 3) @ x, rtol=1e-10)
    np.testing.assert_allclose(prog.z(A=a, x=x), np.linalg.matrix_power(np.linalg.inv(b), 2) @ x, rtol=1e-10)
    np.testing.assert_allclose(prog.w(A=a, x=x), np.linalg.solve(a, x), rtol=1e-8)
    np.testing.assert_allclose(prog.v(x=x), x)            # pow(A, 0) = eye: A is not an argument


def test_shampoo_eps_keeps_an_inverse_root_of_a_rank_deficient_factor_finite():
    """pow(G Gᵀ, −1/2, eps): eigenvalues shifted by −min(λ_min, 0), then eps added (Distributed
    Shampoo), so a rank-2 factor of size 6 has a finite inverse root."""
    rng = np.random.default_rng(3)
    g, x = rng.standard_normal((6, 2)), rng.standard_normal((6, 3))
    lam, q = np.linalg.eigh(g @ g.T)
    lam = lam - min(lam.min(), 0.0) + 1e-3
    expected = (q * lam ** -0.5) @ q.T @ x
    src = "input G : [6, 2]\ninput x : [6, 3]\nexport y = pow(G @ G.T, -0.5, eps=0.001) @ x\n"
    compile_and_check(src, {"G": g, "x": x}, expected)
    prog = opdsl.compile(src.replace(", eps=0.001", ""), backend="numpy", dtype="float64")
    assert np.abs(prog.y(G=g, x=x)).max() > 1e100    # without eps: the zero eigenvalues, clamped at tiny, blow up


def test_precision_float64_decomposes_in_float64():
    src = "input A : [5, 5] psd\ninput x : [5, 2]\nexport y = pow(A, -0.25, precision=float64) @ x\n"
    prog = opdsl.compile(src, backend="torch", dtype="float32")
    body = prog.source.split("def y(")[1]
    assert "A.to(torch.float64)" in body.split("_eigh(")[0]          # the factor goes to float64 first
    rng = np.random.default_rng(4)
    a, x = spd(rng, 5), rng.standard_normal((5, 2))
    out = call(prog, "y", {"A": a.astype("float32"), "x": x.astype("float32")})
    assert_matches(out, sl.fractional_matrix_power(a, -0.25) @ x, "float32")


# ---- the structure rules: each fires on its program and is sound (against scipy) --------------------

def test_pow_of_kron_distributes_over_psd_factors():
    """Shampoo: pow(kron(L, R), −1/4) = L^(−1/4) ⊗ R^(−1/4), two small eigendecompositions."""
    rng = np.random.default_rng(5)
    l, r, gm = spd(rng, 4), spd(rng, 3), rng.standard_normal((12, 2))
    src = "input L : [4, 4] psd\ninput R : [3, 3] psd\ninput g : [12, 2]\nexport y = pow(kron(L, R), -0.25) @ g\n"
    prog = compile_and_check(src, {"L": l, "R": r, "g": gm},
                             sl.fractional_matrix_power(np.kron(l, r), -0.25) @ gm, rules=("pow-kron",))
    sizes = [prog.primitive.type(v).shape[-1] for v in prog.primitive.live() if prog.primitive.kind(v) == "eigh"]
    assert sorted(sizes) == [3, 4]                                    # never the 12 x 12 matrix


def test_pow_of_kron_of_a_factor_not_known_psd_is_an_error():
    """CoLA's sqrt(Kronecker(−D1, −D2)) distributes over factors that are not psd; here the kron of
    two negative definite factors (psd as a product, not known so) is refused at compile time."""
    src = "input A : [2, 2]\ninput B : [3, 3]\ninput x : [6, 1]\nexport y = sqrt(kron(A, B)) @ x\n"
    with pytest.raises(OpdslError, match="positive semidefinite"):
        opdsl.compile(src, backend="numpy")


def test_log_of_kron_is_a_kronecker_sum():
    rng = np.random.default_rng(6)
    a, b, x = spd(rng, 3), spd(rng, 2), rng.standard_normal((6, 2))
    src = "input A : [3, 3] psd\ninput B : [2, 2] psd\ninput x : [6, 2]\nexport y = log(kron(A, B)) @ x\n"
    compile_and_check(src, {"A": a, "B": b, "x": x}, sl.logm(np.kron(a, b)) @ x, rules=("log-kron",))


def test_exp_of_a_kronecker_sum_is_a_kron():
    rng = np.random.default_rng(7)
    a, b, x = rng.standard_normal((3, 3)), rng.standard_normal((2, 2)), rng.standard_normal((6, 2))
    src = ("input A : [3, 3]\ninput B : [2, 2]\ninput x : [6, 2]\n"
           "export y = exp(kron(A, eye(2)) + kron(eye(3), B)) @ x\n")
    compile_and_check(src, {"A": a, "B": b, "x": x},
                      sl.expm(np.kron(a, np.eye(2)) + np.kron(np.eye(3), b)) @ x, rules=("exp-kron-sum",))


@pytest.mark.parametrize("fn,ref", [("pow(M, -0.5)", lambda m: sl.fractional_matrix_power(m, -0.5)),
                                    ("exp(M)", sl.expm), ("log(M)", sl.logm)])
def test_blockdiag_diag_and_scaled_eye(fn, ref):
    rng = np.random.default_rng(8)
    a, w, d, x = spd(rng, 3), np.stack([spd(rng, 2) for _ in range(2)]), rng.uniform(0.5, 2, 4), \
        rng.standard_normal((13, 2))
    m = sl.block_diag(a, *w, np.diag(d), 2.5 * np.eye(2))
    expr = fn.replace("M", "blockdiag(A, blockdiag(W), assume(diag(d), psd), 2.5 * eye(2))")
    src = (f"input A : [3, 3] psd\ninput W : [2, 2, 2] psd\ninput d : [4]\ninput x : [13, 2]\n"
           f"export y = {expr} @ x\n")
    compile_and_check(src, {"A": a, "W": w, "d": d, "x": x}, np.real(ref(m)) @ x,
                      rules=("matfun-blockdiag", "matfun-blockdiag-batched", "matfun-assumed-diag", "matfun-scaled-eye"))


def test_pow_of_pow_and_its_inverse_and_logdet():
    rng = np.random.default_rng(9)
    a, x = spd(rng, 5), rng.standard_normal((5, 2))
    src = ("input A : [5, 5] psd\ninput x : [5, 2]\nexport y = inv(pow(pow(A, 0.5), -0.5)) @ x\n"
           "export z = logdet(pow(A, 0.75))\n")
    prog = compile_and_check(src, {"A": a, "x": x}, sl.fractional_matrix_power(a, 0.25) @ x,
                             rules=("pow-pow", "inv-pow", "logdet-pow"))
    np.testing.assert_allclose(call(prog, "z", {"A": a}), 0.75 * np.linalg.slogdet(a)[1], rtol=1e-10)


@pytest.mark.parametrize("expr,c,f", [
    ("pow(0.5 * eye(n) + lowrank(U, U), -0.5)", 0.5, lambda m: sl.fractional_matrix_power(m, -0.5)),
    ("sqrt(2 * eye(n) + lowrank(U, U))", 2.0, sl.sqrtm),
    ("log(eye(n) + lowrank(U, U))", 1.0, sl.logm),
    ("exp(-1 * eye(n) + lowrank(U, U))", -1.0, sl.expm),
])
def test_identity_plus_low_rank_never_forms_the_n_by_n_matrix(expr, c, f):
    """M-FAC / damped Fisher: f(c I + U Uᵀ) through the r x r eigendecomposition of Uᵀ U."""
    rng = np.random.default_rng(10)
    n, r = 40, 3
    u, x = rng.standard_normal((n, r)) / 3, rng.standard_normal((n, 2))
    src = f"dim n = {n}\ninput U : [n, {r}]\ninput x : [n, 2]\nexport y = {expr} @ x\n"
    prog = compile_and_check(src, {"U": u, "x": x}, np.real(f(c * np.eye(n) + u @ u.T)) @ x,
                             rules=("matfun-eye-lowrank",))
    g = prog.primitive
    square = [v for v in g.live() if len(g.type(v).shape) >= 2
              and g.dims.value(g.type(v).shape[-1]) == g.dims.value(g.type(v).shape[-2]) == n]
    assert not square, [g.kind(v) for v in square]                               # nothing n x n


def test_orthogonal_eigenbasis_given():
    """SOAP's rotation: f(Q diag(d) Qᵀ) with Q declared orthogonal is Q f(diag(d)) Qᵀ (no eigh)."""
    rng = np.random.default_rng(11)
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    d, x = rng.uniform(0.5, 2, 5), rng.standard_normal((5, 2))
    src = ("input Q : [5, 5] orthogonal\ninput d : [5]\ninput x : [5, 2]\n"
           "export y = exp(Q @ diag(d) @ Q.T) @ x\n")
    prog = compile_and_check(src, {"Q": q, "d": d, "x": x}, sl.expm(q @ np.diag(d) @ q.T) @ x,
                             rules=("matfun-orthogonal", "matfun-diag"))
    assert "eigh" not in {prog.primitive.kind(v) for v in prog.primitive.live()}


def test_explain_lists_the_rules_and_the_cost():
    src = "input L : [64, 64] psd\ninput R : [64, 64] psd\ninput g : [4096, 8]\nexport y = pow(kron(L, R), -0.25) @ g\n"
    text = opdsl.compile(src, backend="numpy").explain()
    assert "pow-kron" in text


def test_eigvals_and_eigvecs():
    rng = np.random.default_rng(12)
    b, x = rng.standard_normal((4, 4)), rng.standard_normal((4, 2))
    src = ("input B : [4, 4]\ninput x : [4, 2]\nlet A = B @ B.T\nexport y = eigvals(A)\n"
           "export z = (eigvecs(A) @ diag(eigvals(A)) @ eigvecs(A).T) @ x\n")
    for backend in PY:
        prog = opdsl.compile(src, backend=backend, dtype="float64")
        np.testing.assert_allclose(call(prog, "y", {"B": b}), np.linalg.eigvalsh(b @ b.T), rtol=1e-10)
        np.testing.assert_allclose(call(prog, "z", {"B": b, "x": x}), b @ b.T @ x, rtol=1e-9, atol=1e-12)


# ---- errors -------------------------------------------------------------------------------------

ERRORS = [
    ("pow(W, 0.5) @ x", "needs A known positive semidefinite", "pow(W"),
    ("log(W) @ x", "needs A known positive semidefinite", "log(W"),
    ("pow(N, 2) @ y", "needs a square operator", "pow(N"),
    ("pow(S, -0.5, eps=-1) @ x", "eps must be a number >= 0", "-1"),
    ("pow(S, 0.5, method=lu) @ x", "unknown method", "lu"),
    ("sqrt(S, method=newton) @ x", "no option 'method'", "method"),
    ("pow(W, 100) @ x", "at most 64", "100"),
    ("exp(N) @ y", "needs a square operator", "exp(N"),
    ("eigvals(W) + v", "needs a symmetric operator", "eigvals(W"),
    ("sqrt(S, precision=float16) @ x", "unknown precision", "float16"),
]


@pytest.mark.parametrize("expr,message,at", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_are_located_with_a_hint(expr, message, at):
    src = ("input W : [4, 4]\ninput S : [4, 4] psd\ninput N : [4, 3]\ninput x : [4, 2]\ninput y : [3, 2]\n"
           f"input v : [4]\nexport out = {expr}\n")
    assert_error_at(src, message, at)


def test_the_documented_examples():
    """The small dense examples of docs/matfun.md."""
    src = ("input A : [2, 2] psd\ninput N : [2, 2]\ninput G : [2, 1]\ninput x : [2, 2]\n"
           "export s = sqrt(A) @ x\nexport p = pow(A, -0.5) @ x\nexport l = log(A) @ x\nexport e = exp(N) @ x\n"
           "export r = pow(G @ G.T, -0.5, eps=0.01) @ x\n")
    prog = opdsl.compile(src, backend="numpy", dtype="float64")
    a, eye = np.array([[2.0, 1], [1, 2]]), np.eye(2)
    np.testing.assert_allclose(prog.s(A=a, x=eye), [[1.3660, 0.3660], [0.3660, 1.3660]], atol=1e-4)
    np.testing.assert_allclose(prog.p(A=a, x=eye), [[0.7887, -0.2113], [-0.2113, 0.7887]], atol=1e-4)
    np.testing.assert_allclose(prog.l(A=a, x=eye), [[0.5493, 0.5493], [0.5493, 0.5493]], atol=1e-4)
    np.testing.assert_allclose(prog.e(N=np.array([[0.0, 1], [0, 0]]), x=eye), [[1, 1], [0, 1]], atol=1e-12)
    np.testing.assert_allclose(prog.r(G=np.array([[1.0], [0]]), x=eye), [[0.99504, 0], [0, 10]], atol=1e-5)


def test_row_major_vec_convention():
    """vec_r(L^p G R^p) = (L^p ⊗ R^p) vec_r(G): Shampoo's step on the flattened gradient."""
    rng = np.random.default_rng(13)
    l, r, g = spd(rng, 4), spd(rng, 3), rng.standard_normal((4, 3))
    src = "input L : [4, 4] psd\ninput R : [3, 3] psd\ninput g : [12]\nexport y = pow(kron(L, R), -0.25) @ g\n"
    out = opdsl.compile(src, backend="numpy", dtype="float64").y(L=l, R=r, g=g.reshape(-1))
    by_hand = sl.fractional_matrix_power(l, -0.25) @ g @ sl.fractional_matrix_power(r, -0.25)
    np.testing.assert_allclose(out, by_hand.reshape(-1), rtol=1e-10)


def test_newton_inverse_root_matches_scipy_and_reports_its_residual():
    rng = np.random.default_rng(14)
    a, x = spd(rng, 6), rng.standard_normal((6, 2))
    src = ("input A : [6, 6] psd\ninput x : [6, 2]\nexport y = pow(A, -0.25, method=newton, tol=1e-10) @ x\n"
           "export z = pow(A, -0.5, method=newton, eps=0.1, maxiter=2) @ x\n")
    compile_and_check(src, {"A": a, "x": x}, sl.fractional_matrix_power(a, -0.25) @ x)
    prog = opdsl.compile(src, backend="numpy", dtype="float64")
    prog.y(A=a, x=x)
    with pytest.warns(RuntimeWarning, match="Newton inverse root stopped after 2 steps"):
        prog.z(A=a, x=x)                              # two steps are not enough: a warning, not silence
    steps, err = prog.module.NEWTON_RESIDUALS[next(k for k in prog.module.NEWTON_RESIDUALS if "pow(A, -0.5" in k)]
    assert steps == 2 and err > 1e-6
    steps, err = prog.module.NEWTON_RESIDUALS[next(k for k in prog.module.NEWTON_RESIDUALS if "pow(A, -0.25" in k)]
    assert err <= 1e-10 and steps > 2


@pytest.mark.parametrize("expr,message,at", [
    ("pow(S, 0.5, method=newton) @ x", "inverse roots pow(A, -1/r)", "newton"),
    ("pow(S, -0.3, method=newton) @ x", "inverse roots pow(A, -1/r)", "newton"),
    ("pow(S, -0.5, tol=1e-3) @ x", "applies to method=newton only", "1e-3"),
    ("pow(S, -0.5, method=newton, maxiter=0) @ x", "maxiter must be a positive integer", "0"),
    ("pow(S, -0.5, method=qr) @ x", "unknown method", "qr"),
])
def test_newton_errors(expr, message, at):
    src = f"input S : [4, 4] psd\ninput x : [4, 2]\nexport out = {expr}\n"
    assert_error_at(src, message, at)


def test_torch_matrix_exponential_in_bfloat16_is_not_nan():
    """torch.linalg.matrix_exp gives NaN in bfloat16 (found by `make gpu-check`'s bfloat16 catalogue):
    the torch backend computes it in float32 and rounds back."""
    pytest.importorskip("torch")
    from .harness import relative_error
    from opdsl.reference import dense_eval, random_inputs
    src = "dim n = 4\ninput W : [n, n]\ninput x : [n, 3]\nexport y = exp(W) @ x\n"
    prog = opdsl.compile(src, backend="torch", dtype="bfloat16")
    import torch
    inputs = random_inputs(prog.graph, "y", dtype="float64", seed=0)      # numpy has no bfloat16
    got = prog.y(**{k: torch.as_tensor(v).to(torch.bfloat16) for k, v in inputs.items()})
    ref = dense_eval(prog.graph, prog.graph.exports["y"], inputs)
    assert relative_error(got.float().double().numpy(), ref) < 5e-2

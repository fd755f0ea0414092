"""Numerical safety (docs/reliability.md, "Numerics").

- attention in float32 with inputs of magnitude up to 50 and sequences of 16,384 gives
  finite outputs, for every feature map, causal or not;
- half-precision inputs accumulate in float32 (a sum over 16,384 terms that overflows
  float16 stays finite and accurate);
- Householder products stay orthogonal: ‖HᵀH − I‖₂ ≤ 1e-4 in float32 for k up to 1,024;
- normalizers never divide by zero: attention's D (relu / FAVOR / Hedgehog rows whose
  weights vanish), a Householder reflector with a zero column.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import opdsl
from opdsl.reference import dense_eval

from .harness import PY_BACKENDS, call, run_against_dense

torch.set_num_threads(2)
L_LONG = 16_384
D = 64
FEATURES = ["elu1", "relu", "favor(64, 0)", "hedgehog(W)"]


def attention_program(L, feature, causal, dtype="float32", d=D):
    return (f"dim L = {L}\ndim d = {d}\ninput Q : [1, L, d] {dtype}\ninput K : [1, L, d] {dtype}\n"
            f"input V : [1, L, d] {dtype}\ninput W : [d, 16] {dtype}\n"
            f"export y = attention(Q, K, feature={feature}, causal={causal}) @ V\n")


def uniform(rng, shape, magnitude, dtype=np.float32):
    return rng.uniform(-magnitude, magnitude, shape).astype(dtype)


def run(prog, arrays):
    return call(prog, "y", {k: v for k, v in arrays.items() if k in prog.y.params})


@pytest.mark.parametrize("causal", ["false", "true"])
@pytest.mark.parametrize("feature", FEATURES)
def test_attention_float32_magnitude_50_sequence_16384_is_finite(feature, causal):
    prog = opdsl.compile(attention_program(L_LONG, feature, causal), backend="torch")
    rng = np.random.default_rng(0)
    arrays = {n: uniform(rng, (1, L_LONG, D), 50.0) for n in "QKV"}
    arrays["W"] = rng.standard_normal((D, 16)).astype(np.float32)
    out = run(prog, arrays)
    assert out.shape == (1, L_LONG, D)
    assert np.all(np.isfinite(out))
    if feature != "favor(64, 0)":     # a convex combination of the values (FAVOR: see below)
        assert np.abs(out).max() <= 50.0 * (1 + 1e-4)


@pytest.mark.parametrize("causal", ["false", "true"])
@pytest.mark.parametrize("feature", FEATURES)
def test_attention_magnitude_50_matches_the_dense_reference(feature, causal):
    """At a length the dense L x L reference can afford, large inputs are also accurate."""
    L = 256
    prog = opdsl.compile(attention_program(L, feature, causal), backend="torch")
    rng = np.random.default_rng(1)
    # FAVOR and Hedgehog weights are exponentials: at magnitude 50 some fall below float32's range and
    # a row whose weights all underflow is 0 (finite: the test above), not the float64 answer
    magnitude = {"favor(64, 0)": 1.0, "hedgehog(W)": 5.0}.get(feature, 50.0)
    arrays = {n: uniform(rng, (1, L, D), magnitude) for n in "QKV"}
    arrays["W"] = rng.standard_normal((D, 16)).astype(np.float32)
    run_against_dense(prog, inputs=arrays, tol=2e-3, require_finite=True)


def test_softmax_attention_large_logits():
    """The exact kind subtracts each row's maximum: logits of 50·50·64/8 = 20,000 stay finite."""
    L = 1024
    src = (f"dim L = {L}\ndim d = {D}\ninput Q : [L, d]\ninput K : [L, d]\ninput V : [L, d]\n"
           "export y = softmax_attention(Q, K, causal=true) @ V\n")
    prog = opdsl.compile(src, backend="torch")
    rng = np.random.default_rng(2)
    arrays = {n: uniform(rng, (L, D), 50.0) for n in "QKV"}
    out = run(prog, arrays)
    ref = dense_eval(prog.graph, prog.graph.exports["y"], {k: v.astype(np.float64) for k, v in arrays.items()})
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, ref, atol=1e-2 * np.abs(ref).max())


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_attention_accumulates_in_float32(dtype):
    """Σ over 16,384 keys of features up to 51 is ~5e7: it overflows float16 (max 65504) unless
    accumulated in float32.  The generated code casts the inputs up and the result back."""
    prog = opdsl.compile(attention_program(L_LONG, "elu1", "true", dtype=dtype), backend="torch")
    assert "torch.float32" in prog.source.split("def y(")[1].split("# ")[1]     # a cast in the body
    rng = np.random.default_rng(3)
    tdt = getattr(torch, dtype)
    arrays = {n: torch.from_numpy(uniform(rng, (1, L_LONG, D), 50.0)).to(tdt) for n in "QKV"}
    out = prog.y(**arrays)
    assert out.dtype == tdt
    assert torch.all(torch.isfinite(out))
    # against the float32 computation on the same (rounded) inputs
    p32 = opdsl.compile(attention_program(L_LONG, "elu1", "true"), backend="torch")
    ref = p32.y(**{k: v.float() for k, v in arrays.items()})
    tol = {"float16": 2e-3, "bfloat16": 2e-2}[dtype] * 50
    assert float((out.float() - ref).abs().max()) <= tol


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_half_precision_products_accumulate_in_float32(backend):
    """A float16 product with 16,384 terms of 1: exactly 16384 (float16 accumulation stops at 2048)."""
    src = "input A : [2, 16384] float16\ninput x : [16384, 3] float16\ninput U : [16384, 2] float16\n" \
          "export y = A @ x\nexport z = lowrank(U, U) @ x"
    prog = opdsl.compile(src, backend=backend)
    a, x, u = np.ones((2, 16384), np.float16), np.ones((16384, 3), np.float16), np.ones((16384, 2), np.float16) / 64
    y = call(prog, "y", {"A": a, "x": x})
    assert np.all(y == 16384)
    z = call(prog, "z", {"U": u, "x": x})     # U (Uᵀ x): 2 · 16384 / 64² = 8
    np.testing.assert_allclose(z, 8.0, rtol=1e-3)


@pytest.mark.parametrize("L", [2048, 16384])
def test_half_precision_fft_convolution_accumulates_in_float32(L):
    """Outputs up to ~500 summed from 16,384 terms of ~0.03: float16 sums would stall at 2048 terms."""
    src = f"dim L = {L}\ninput w : [L] float16\ninput x : [L, 2] float16\nexport y = conv(w) @ x\n"
    prog = opdsl.compile(src, backend="torch")
    rng = np.random.default_rng(4)
    w = rng.uniform(0, 1 / 16, L).astype(np.float16)
    x = rng.uniform(0, 1, (L, 2)).astype(np.float16)
    out = prog.y(w=torch.from_numpy(w), x=torch.from_numpy(x)).double().numpy()
    assert np.all(np.isfinite(out))
    if L <= 2048:        # the dense L x L reference
        ref = dense_eval(prog.graph, prog.graph.exports["y"], {"w": w.astype(np.float64), "x": x.astype(np.float64)})
    else:                # the same program in float32 on the same (rounded) inputs
        p32 = opdsl.compile(src.replace(" float16", ""), backend="torch")
        ref = p32.y(w=torch.from_numpy(w.astype(np.float32)), x=torch.from_numpy(x.astype(np.float32))).double().numpy()
    np.testing.assert_allclose(out, ref, rtol=2e-3, atol=2e-3 * np.abs(ref).max())


def householder_matrix(n, k, v, backend="torch"):
    src = f"dim n = {n}\ninput V : [n, {k}]\ninput X : [n, n]\nexport H = householder(V) @ X\n" \
          f"export Ht = householder(V).T @ X\n"
    prog = opdsl.compile(src, backend=backend)
    vt, eye = torch.from_numpy(v.astype(np.float32)), torch.eye(n)
    return prog.H(V=vt, X=eye).double().numpy(), prog.Ht(V=vt, X=eye).double().numpy()


@pytest.mark.parametrize("k", [1, 64, 65, 1024])
def test_householder_products_stay_orthogonal(k):
    n = 256
    rng = np.random.default_rng(k)
    h, ht = householder_matrix(n, k, rng.standard_normal((n, k)))
    assert np.linalg.norm(h.T @ h - np.eye(n), 2) <= 1e-4
    assert np.linalg.norm(ht - h.T, 2) <= 1e-4          # the transpose is the reversed product


@pytest.mark.parametrize("case", ["scaled columns", "zero columns", "tiny columns", "huge columns"])
def test_householder_orthogonal_for_awkward_columns(case):
    n, k = 128, 256
    rng = np.random.default_rng(5)
    v = rng.standard_normal((n, k))
    if case == "scaled columns":
        v *= np.logspace(-3, 3, k)
    elif case == "zero columns":
        v[:, ::7] = 0.0
    elif case == "tiny columns":
        v *= 1e-19                     # ‖v‖² ≈ 1e-36: near float32's smallest normal, scale-free all the same
    else:
        v *= 1e18
    h, _ = householder_matrix(n, k, v)
    assert np.all(np.isfinite(h))
    assert np.linalg.norm(h.T @ h - np.eye(n), 2) <= 1e-4


def test_householder_k_1024_on_a_large_n():
    """n = k = 1024, checked on 32 random columns: Hᵀ(H X) = X and ‖H X‖ = ‖X‖."""
    n = k = 1024
    src = f"dim n = {n}\ninput V : [n, {k}]\ninput X : [n, 32]\nexport Y = householder(V).T @ (householder(V) @ X)\n" \
          "export Z = householder(V) @ X\n"
    prog = opdsl.compile(src, backend="torch")
    assert "solve_triangular" in prog.source.split("def Y(")[1]      # not simplified away: really computed
    rng = np.random.default_rng(6)
    v = torch.from_numpy(rng.standard_normal((n, k)).astype(np.float32))
    x = torch.from_numpy(rng.standard_normal((n, 32)).astype(np.float32))
    y, z = prog.Y(V=v, X=x).double(), prog.Z(V=v, X=x).double()
    xd = x.double()
    assert float(torch.linalg.matrix_norm(y - xd, 2)) <= 1e-4 * float(torch.linalg.matrix_norm(xd, 2))
    np.testing.assert_allclose(z.norm(dim=0).numpy(), xd.norm(dim=0).numpy(), rtol=1e-4)


# ---- normalizers never divide by zero ---------------------------------------------------

def test_attention_rows_whose_weights_vanish_are_zero_not_nan():
    """relu features of an all-negative query are 0: D = 0 for that row.  The lowering divides by
    D + tiny, as does the dense reference: the row is 0 on every backend."""
    L = 8
    src = f"dim L = {L}\ninput Q : [L, 4]\ninput K : [L, 4]\ninput V : [L, 3]\n" \
          "export y = attention(Q, K, feature=relu) @ V\nexport z = attention(Q, K, feature=relu, causal=true) @ V\n"
    rng = np.random.default_rng(7)
    q = np.abs(rng.standard_normal((L, 4))).astype(np.float32)
    q[2] = -1.0                                    # row 2 attends to nothing
    k = np.abs(rng.standard_normal((L, 4))).astype(np.float32)
    v = rng.standard_normal((L, 3)).astype(np.float32)
    for backend in PY_BACKENDS:
        prog = opdsl.compile(src, backend=backend)
        for name in ("y", "z"):
            out = call(prog, name, {"Q": q, "K": k, "V": v})
            ref = dense_eval(prog.graph, prog.graph.exports[name], {"Q": q, "K": k, "V": v})
            assert np.all(np.isfinite(out)) and np.all(out[2] == 0), (backend, name)
            np.testing.assert_allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("feature", ["favor(16, 0)", "hedgehog(W)"])
def test_attention_features_that_underflow_give_finite_rows(feature):
    """At magnitude 1e3 every FAVOR / Hedgehog weight of some rows underflows: those rows are 0."""
    L = 64
    prog = opdsl.compile(attention_program(L, feature, "true", d=8), backend="torch")
    rng = np.random.default_rng(8)
    arrays = {n: uniform(rng, (1, L, 8), 1e3) for n in "QKV"}
    arrays["W"] = rng.standard_normal((8, 16)).astype(np.float32)
    out = run(prog, arrays)
    assert np.all(np.isfinite(out))


def test_householder_zero_column_is_the_identity_reflector():
    n, k = 16, 8
    rng = np.random.default_rng(9)
    v = rng.standard_normal((n, k))
    v[:, 3] = 0.0
    with_zero, _ = householder_matrix(n, k, v)
    without, _ = householder_matrix(n, k - 1, np.delete(v, 3, axis=1))
    np.testing.assert_allclose(with_zero, without, atol=1e-6)
    from opdsl.kinds.householder import householder_dense
    np.testing.assert_allclose(householder_dense(v), householder_dense(np.delete(v, 3, axis=1)), atol=1e-12)
    for backend in ("numpy", "jax"):
        src = f"dim n = {n}\ninput V : [n, {k}]\ninput X : [n, n]\nexport H = householder(V) @ X\n"
        prog = opdsl.compile(src, backend=backend)
        out = call(prog, "H", {"V": v.astype(np.float32), "X": np.eye(n, dtype=np.float32)})
        np.testing.assert_allclose(out, without, atol=1e-5)

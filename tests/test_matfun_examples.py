"""The issue-15 examples: examples/shampoo.op, soap.op, kfac.op and mfac.op against numpy / scipy
written out by hand (numpy backend, float64; dense Kronecker products and inverses), the vec
convention they document, the sizes they never form, and examples/train_shampoo.py in its quick
mode (Adam, Shampoo and SOAP each bring the loss down).  `opdsl check` of the .op files is
tests/test_examples.py's."""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg as sl

import opdsl
from opdsl.cli import to_backend
from opdsl.cost import summarize

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def compiled(name, dtype="float64", **dims):
    """examples/<name>.op for numpy, its free dims fixed (they are also bound at call time)."""
    return opdsl.compile_file(EXAMPLES / f"{name}.op", backend="numpy", dtype=dtype, dims=dims or None)


def psd(rng, n, rank=None, shift=0.0):
    """X Xᵀ / cols (+ shift I) for a Gaussian X [n, rank]: psd, rank-deficient when rank < n."""
    x = rng.standard_normal((n, rank or n))
    return x @ x.T / x.shape[1] + shift * np.eye(n)


def orthogonal(rng, n):
    return np.linalg.qr(rng.standard_normal((n, n)))[0]


def assert_close(out, expected, rtol=1e-10):
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


def power(a, p):
    """a^p by scipy (real part: fractional_matrix_power of a symmetric matrix is real up to rounding)."""
    return np.real(sl.fractional_matrix_power(a, p))


# ---- shampoo.op --------------------------------------------------------------------------------

def test_row_major_vec_turns_the_two_sided_product_into_a_kronecker_product():
    """What shampoo.op's comment claims: vec(A G Bᵀ) = kron(A, B) vec(G) for row-major vec (numpy's
    reshape), so vec(L^p G R^p) = kron(L^p, R^p) vec(G) = (L ⊗ R)^p vec(G) for psd L, R."""
    rng = np.random.default_rng(0)
    m, n = 5, 3
    a, b, g = rng.standard_normal((m, m)), rng.standard_normal((n, n)), rng.standard_normal((m, n))
    assert_close(np.kron(a, b) @ g.reshape(-1), (a @ g @ b.T).reshape(-1))
    assert not np.allclose(np.kron(a, b) @ g.reshape(-1), (a @ g @ b).reshape(-1))    # Bᵀ, not B
    lp, rp = power(psd(rng, m), -0.25), power(psd(rng, n), -0.25)
    assert_close(np.kron(lp, rp) @ g.reshape(-1), (lp @ g @ rp).reshape(-1))
    l, r = psd(rng, m, shift=0.5), psd(rng, n, shift=0.5)
    assert_close(power(np.kron(l, r), -0.25) @ g.reshape(-1), (power(l, -0.25) @ g @ power(r, -0.25)).reshape(-1),
                 rtol=1e-8)


def test_shampoo_direction_is_the_two_sided_inverse_fourth_root():
    rng = np.random.default_rng(1)
    m, n = 7, 4
    prog = compiled("shampoo")
    assert sorted(prog.functions) == ["direction", "direction_eps"]     # a new export needs a check here
    l, r, g = psd(rng, m, shift=0.1), psd(rng, n, shift=0.1), rng.standard_normal((m, n))
    out = prog.direction(L=l, R=r, g=g.reshape(-1)).reshape(m, n)
    assert_close(out, power(l, -0.25) @ g @ power(r, -0.25), rtol=1e-9)
    eps = 1e-6                       # positive definite factors: no shift, eps added to each factor
    out = prog.direction_eps(L=l, R=r, g=g.reshape(-1)).reshape(m, n)
    assert_close(out, power(l + eps * np.eye(m), -0.25) @ g @ power(r + eps * np.eye(n), -0.25), rtol=1e-9)


def test_shampoo_eps_keeps_rank_deficient_factors_finite():
    """The first steps' factors G Gᵀ have rank ≤ min(m, n): their λ_min is 0 up to rounding, and
    per-factor eps makes the roots those of L + eps I (the shift of a rounding-negative λ_min is
    ~1e-16, far below eps)."""
    rng = np.random.default_rng(2)
    m, n, eps = 8, 3, 1e-6
    grad = rng.standard_normal((m, n))
    l, r = grad @ grad.T, grad.T @ grad                     # L has rank 3 of 8
    assert np.linalg.matrix_rank(l) == n
    out = compiled("shampoo").direction_eps(L=l, R=r, g=grad.reshape(-1)).reshape(m, n)
    assert np.isfinite(out).all()
    assert_close(out, power(l + eps * np.eye(m), -0.25) @ grad @ power(r + eps * np.eye(n), -0.25), rtol=1e-6)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_shampoo_float32_program_takes_float64_eigendecompositions(backend):
    """precision=float64: a float32 program agrees with the float64 answer to float32 rounding of
    its inputs and output, with a factor whose eigenvalues span 1e6 (torch's float32 eigh alone is
    off by about 1% there)."""
    rng = np.random.default_rng(3)
    m, n = 16, 6
    q = orthogonal(rng, m)
    l = (q * np.logspace(-3, 3, m)) @ q.T
    r, g = psd(rng, n, shift=0.1), rng.standard_normal((m, n))
    args = {k: v.astype(np.float32) for k, v in dict(L=l, R=r, g=g.reshape(-1)).items()}
    prog = opdsl.compile_file(EXAMPLES / "shampoo.op", backend=backend, dtype="float32")
    out = prog.direction_eps(**to_backend(backend, args))
    out = np.asarray(out.numpy() if hasattr(out, "numpy") else out)
    assert out.dtype == np.float32
    l64, r64 = args["L"].astype(np.float64), args["R"].astype(np.float64)
    expected = power(l64 + 1e-6 * np.eye(m), -0.25) @ g @ power(r64 + 1e-6 * np.eye(n), -0.25)
    assert_close(out.reshape(m, n).astype(np.float64), expected, rtol=1e-4)


# ---- soap.op -----------------------------------------------------------------------------------

def test_soap_rotates_divides_and_rotates_back():
    rng = np.random.default_rng(4)
    m, n = 6, 5
    prog = compiled("soap")
    assert sorted(prog.functions) == ["rotated", "step"]
    ql, qr = orthogonal(rng, m), orthogonal(rng, n)
    g, mom = rng.standard_normal((m, n)), rng.standard_normal((m, n))
    v = rng.uniform(0.0, 2.0, (m, n)) ** 2                # a second moment: squares, ≥ 0
    v[0, 0] = 0.0                                         # a coordinate with no gradient yet: 1 / eps
    rotation = np.kron(ql, qr)

    rotated = prog.rotated(QL=ql, QR=qr, g=g.reshape(-1))
    assert_close(rotated, rotation.T @ g.reshape(-1))
    assert_close(rotated.reshape(m, n), ql.T @ g @ qr)

    step = prog.step(QL=ql, QR=qr, M=mom.reshape(-1), v=v.reshape(-1))
    assert_close(step, rotation @ ((rotation.T @ mom.reshape(-1)) / (np.sqrt(v.reshape(-1)) + 1e-8)))
    assert_close(step.reshape(m, n), ql @ ((ql.T @ mom @ qr) / (np.sqrt(v) + 1e-8)) @ qr.T)


# ---- kfac.op -----------------------------------------------------------------------------------

def test_kfac_is_the_damped_kronecker_solve():
    rng = np.random.default_rng(5)
    a, b, lam = 7, 4, 1e-3
    prog = compiled("kfac")
    assert prog.functions == ["natural"]
    fa, fg = psd(rng, a, rank=3), psd(rng, b)               # a rank-deficient A: the damping matters
    dw = rng.standard_normal((b, a))                        # ∇W for torch's W [b, a]
    out = prog.natural(A=fa, G=fg, grad=dw.T.reshape(-1))
    damped = np.kron(fa + lam * np.eye(a), fg + lam * np.eye(b))
    assert_close(out, np.linalg.solve(damped, dw.T.reshape(-1)), rtol=1e-8)
    # the column-major reading kfac.op documents: (G + λI)⁻¹ ∇W (A + λI)⁻¹, laid out [a, b]
    step = np.linalg.solve(fg + lam * np.eye(b), dw) @ np.linalg.inv(fa + lam * np.eye(a))
    assert_close(out.reshape(a, b).T, step, rtol=1e-8)


# ---- mfac.op -----------------------------------------------------------------------------------

def test_mfac_inverse_and_inverse_square_root_of_the_damped_fisher():
    rng = np.random.default_rng(6)
    d, m, lam = 60, 5, 1e-2
    prog = compiled("mfac")
    assert sorted(prog.functions) == ["natural", "whitened"]
    gs, g = rng.standard_normal((d, m)) / math.sqrt(m), rng.standard_normal(d)
    fisher = lam * np.eye(d) + gs @ gs.T
    assert_close(prog.natural(Gs=gs, g=g), np.linalg.inv(fisher) @ g, rtol=1e-8)
    assert_close(prog.whitened(Gs=gs, g=g), power(fisher, -0.5) @ g, rtol=1e-8)


# ---- what the rules save -------------------------------------------------------------------------

@pytest.mark.parametrize("name,dims,export,limit", [
    ("shampoo", dict(m=64, n=32), "direction", 64 * 65),         # the factors' eigenvectors, not (mn)²
    ("soap", dict(m=64, n=32), "step", 64 * 32),                 # vectors of m n: no d x d diagonal
    ("kfac", dict(a=64, b=32), "natural", 64 * 64),
    ("mfac", dict(d=4096, m=16), "natural", 4096 * 16),          # Gs-sized, never d x d
    ("mfac", dict(d=4096, m=16), "whitened", 4096 * 16),
])
def test_examples_never_form_the_big_matrix(name, dims, export, limit):
    """The largest intermediate after the rules, in elements (shampoo's direction_eps is written
    per factor: small as written)."""
    summary = summarize(compiled(name, **dims), export)
    assert summary.ev.num(summary.peak_optimized) <= limit
    assert summary.ev.num(summary.peak_source) > 4 * limit    # as written, it would


# ---- train_shampoo.py ----------------------------------------------------------------------------

def test_train_shampoo_quick(tmp_path):
    out, png = tmp_path / "results.json", tmp_path / "losses.png"
    r = subprocess.run([sys.executable, str(EXAMPLES / "train_shampoo.py"), "--quick", "--out", str(out),
                        "--plot", str(png)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    results = json.loads(out.read_text())
    assert set(results["optimizers"]) == {"adam", "shampoo", "soap"}
    for name, res in results["optimizers"].items():
        losses = res["losses"]
        assert len(losses) == results["steps"] and all(math.isfinite(x) for x in losses), name
        window = max(1, len(losses) // 10)
        first, last = np.mean(losses[:window]), np.mean(losses[-window:])
        assert last < 0.75 * first, (name, first, last)     # 40 steps: 0.39 (SOAP) to 0.08 (Adam) of it
        assert (res["initial loss"], res["final loss"]) == pytest.approx((first, last))
        assert res["decreased"] is True
        assert any(ln.split()[:1] == [name] for ln in r.stdout.splitlines()), name     # its row is printed
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_shampoo_exits_nonzero_when_a_loss_does_not_go_down(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("train_shampoo", EXAMPLES / "train_shampoo.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setitem(script.OPTIMIZERS, "shampoo", lambda params: script.Shampoo(params, lr=1.0))   # diverges
    assert script.main(["--steps", "20", "--optimizers", "adam,shampoo"]) == 1
    assert "did not go down with: shampoo" in capsys.readouterr().err

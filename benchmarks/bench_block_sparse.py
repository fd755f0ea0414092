"""Block, banded and Kronecker-sum operators (issue 18, docs/block_sparse.md), torch CPU, float64,
2 threads; each opdsl result is checked against its baseline before timing, then both are timed
interleaved (median of several rounds; the fastest runs in the note).

- Poisson 128 x 128 (n = 16,384 unknowns): `inv(kronsum(T, T)) @ f` with T = tridiag(-1, 2, -1) / h²
  (the fast Poisson solver: T's eigendecomposition, then four 128 x 128 x 128 products) against
  scipy.sparse.linalg.spsolve of the five-point Laplacian in CSC (SuperLU; factorization included,
  as a one-off solve does), and against a dense solve where it fits (16,384² float64 is 2 GB: the
  dense LU is timed once).  Target: >= 1x spsolve.
- Tridiagonal n = 10⁶, 1 right-hand side: `inv(tridiag(l, d, u)) @ b` (cyclic reduction in torch)
  against scipy.linalg.solve_banded (LAPACK gtsv-style banded LU) on the same numbers.
- Saddle point [[diag(h), Aᵀ], [A, 0]], n = 2,000, m = 200: the Schur-complement solve (the rule
  inv-block-schur) against a dense LU of the (n + m)² matrix (torch.linalg.solve).

- SpMM: `S @ X` and `S.T @ X` for a sparse argument S (n = 10,000, torch CSR, float32, X [n, 64]) at
  0.1% and 1% density, against torch.sparse.mm called directly on the same tensor (target >= 0.95x)
  and against the dense product (the n x n matrix formed outside the timing).

Quick mode: Poisson 32 x 32, tridiagonal n = 10⁴, saddle n = 400, m = 40, SpMM n = 2,000.
"""
from __future__ import annotations

import sys

import numpy as np
import torch

import opdsl
from opdsl.cli import to_backend

from .bench_linalg import fastest, interleaved
from .common import row, setup_threads

THREADS = 2

POISSON = """dim m = {m}
input main : [m]
input off : [m - 1]
input f : [m * m, 1]
export u = inv(kronsum(tridiag(off, main, off), tridiag(off, main, off))) @ f
"""

TRIDIAG = """dim n = {n}
input l : [n - 1]
input d : [n]
input u : [n - 1]
input b : [n, 1]
export x = inv(tridiag(l, d, u)) @ b
"""

SADDLE = """dim n = {n}
dim m = {m}
input h : [n] positive
input A : [m, n]
input rhs : [n + m, 1]
export x = inv(block([[diag(h), A.T], [A, zeros(m, m)]])) @ rhs
"""


def _check(name, got, want, rtol):
    err = float(np.abs(np.asarray(got) - np.asarray(want)).max() / np.abs(np.asarray(want)).max())
    if not err <= rtol:
        raise AssertionError(f"{name}: opdsl differs from the baseline by {err:.1e}")
    return err


def poisson_rows(quick):
    from scipy import sparse
    from scipy.sparse.linalg import spsolve
    m = 32 if quick else 128
    n = m * m
    h = 1.0 / (m + 1)
    prog = opdsl.compile(POISSON.format(m=m), backend="torch", dtype="float64", filename="bench_block_sparse")
    main, off = np.full(m, 2 / h ** 2), np.full(m - 1, -1 / h ** 2)
    f = np.random.default_rng(0).standard_normal((n, 1))
    t = sparse.diags([off, main, off], [-1, 0, 1])
    lap = sparse.kronsum(t, t, format="csc")
    tm, to, tf = (torch.tensor(a) for a in (main, off, f))
    cands = {"opdsl": lambda: prog.u(main=tm, off=to, f=tf), "spsolve": lambda: spsolve(lap, f[:, 0])}
    with torch.no_grad():
        err = _check("poisson", cands["opdsl"]().numpy()[:, 0], cands["spsolve"](), 1e-8)
        t_ = interleaved(cands, reps=5)
        dense_ms, dense_note = None, ""
        if n <= 16_384:
            import time
            k = torch.tensor(lap.toarray())
            t0 = time.perf_counter()
            torch.linalg.solve(k, tf)
            dense_ms = (time.perf_counter() - t0) * 1e3
            dense_note = "timed once"
            del k
    work = f"Poisson {m}x{m} (n={n:,}): inv(kronsum(T, T)) @ f, float64"
    out = [row(work, "scipy.sparse.linalg.spsolve (SuperLU, CSC, factorization included)", t_["opdsl"],
               t_["spsolve"], None, 1, f"max rel diff {err:.0e}; {fastest(t_, 'opdsl', 'spsolve')}; "
                                      f"torch threads = {THREADS}")]
    if dense_ms is not None:
        out.append(row(work, "dense solve (torch.linalg.solve of the n x n Laplacian)", t_["opdsl"], dense_ms,
                       None, None, f"dense {dense_note} (matrix {8 * n * n / 1e9:.2g} GB, formed outside the timing)"))
    return out


def tridiag_rows(quick):
    from scipy.linalg import solve_banded
    n = 10_000 if quick else 1_000_000
    rng = np.random.default_rng(1)
    lo, d, up = 0.3 * rng.standard_normal(n - 1), 4 + rng.uniform(0, 1, n), 0.3 * rng.standard_normal(n - 1)
    b = rng.standard_normal((n, 1))
    banded = np.zeros((3, n))
    banded[0, 1:], banded[1], banded[2, :-1] = up, d, lo
    prog = opdsl.compile(TRIDIAG.format(n=n), backend="torch", dtype="float64", filename="bench_block_sparse")
    args = {k: torch.tensor(v) for k, v in {"l": lo, "d": d, "u": up, "b": b}.items()}
    cands = {"opdsl": lambda: prog.x(**args), "banded": lambda: solve_banded((1, 1), banded, b)}
    with torch.no_grad():
        err = _check("tridiag", cands["opdsl"]().numpy(), cands["banded"](), 1e-10)
        t_ = interleaved(cands, reps=5)
    return [row(f"tridiagonal solve n={n:,}, 1 column, float64", "scipy.linalg.solve_banded", t_["opdsl"],
                t_["banded"], None, None, f"opdsl: cyclic reduction in torch, {int(np.ceil(np.log2(n)))} levels; "
                f"max rel diff {err:.0e}; {fastest(t_, 'opdsl', 'banded')}; torch threads = {THREADS}")]


def saddle_rows(quick):
    n, m = (400, 40) if quick else (2000, 200)
    rng = np.random.default_rng(2)
    h, a, rhs = rng.uniform(0.5, 2, n), rng.standard_normal((m, n)), rng.standard_normal((n + m, 1))
    prog = opdsl.compile(SADDLE.format(n=n, m=m), backend="torch", dtype="float64", filename="bench_block_sparse")
    fired = {k for r in prog.records for k in r.fired}
    th, ta, tr = (torch.tensor(x) for x in (h, a, rhs))
    k = torch.tensor(np.block([[np.diag(h), a.T], [a, np.zeros((m, m))]]))
    cands = {"opdsl": lambda: prog.x(h=th, A=ta, rhs=tr), "dense": lambda: torch.linalg.solve(k, tr)}
    with torch.no_grad():
        err = _check("saddle", cands["opdsl"]().numpy(), cands["dense"]().numpy(), 1e-8)
        t_ = interleaved(cands, reps=5)
    return [row(f"saddle point [[diag(h), Aᵀ], [A, 0]] solve, n={n:,}, m={m}, float64",
                "dense LU of the (n + m)² matrix (torch.linalg.solve; the matrix formed outside the timing)",
                t_["opdsl"], t_["dense"], None, None,
                f"rule inv-block-schur {'fired' if 'inv-block-schur' in fired else 'did NOT fire'}: one {m}x{m} "
                f"factorization; max rel diff {err:.0e}; {fastest(t_, 'opdsl', 'dense')}; torch threads = {THREADS}")]


SPMM = """dim n = {n}
dim k = {k}
input S : [n, n] sparse
input X : [n, k]
export y = S @ X
export t = S.T @ X
"""


def spmm_rows(quick):
    import scipy.sparse
    n, k = (2_000, 64) if quick else (10_000, 64)
    prog = opdsl.compile(SPMM.format(n=n, k=k), backend="torch", dtype="float32", filename="bench_block_sparse")
    x = torch.randn(n, k)
    out = []
    for density in (0.001, 0.01):
        rng = np.random.default_rng(3)
        s = scipy.sparse.random_array((n, n), density=density, rng=rng, format="csr", dtype=np.float32)
        st = to_backend("torch", {"S": s})["S"]          # torch CSR, as from_numpy makes it
        dense = st.to_dense()
        for name, direct, dense_fn, what in (
                ("y", lambda: torch.sparse.mm(st, x), lambda: dense @ x, "S @ X"),
                ("t", lambda: torch.sparse.mm(st.t(), x), lambda: dense.T @ x, "S.T @ X")):
            fn = getattr(prog, name)
            ours = lambda fn=fn: fn(S=st, X=x)       # noqa: E731
            with torch.no_grad():
                err = _check(f"spmm {what}", ours().numpy(), dense_fn().numpy(), 1e-4)
                # the two SpMMs alone, 5 calls a sample (a dense product in the same rounds evicts the
                # caches before whichever runs next), then the dense product apart
                t_ = interleaved({"opdsl": ours, "direct": direct}, reps=15, inner=5)
                td = interleaved({"opdsl": ours, "dense": dense_fn}, reps=3)
            work = f"SpMM {what}, n={n:,}, density {density:.1%} (nnz {s.nnz:,}), X [n, {k}], float32"
            out.append(row(work, "torch.sparse.mm on the same CSR tensor", t_["opdsl"], t_["direct"], None, 0.95,
                           f"{fastest(t_, 'opdsl', 'direct')}; max rel diff {err:.0e}; torch threads = {THREADS}"))
            out.append(row(work, "dense matmul (the n x n matrix formed outside the timing)", td["opdsl"],
                           td["dense"], None, None, f"{fastest(td, 'opdsl', 'dense')}"))
        del dense
    return out


def rows(quick: bool = False):
    setup_threads(THREADS)
    return poisson_rows(quick) + tridiag_rows(quick) + saddle_rows(quick) + spmm_rows(quick)


if __name__ == "__main__":
    for r in rows("--quick" in sys.argv):
        print(r)

"""Stochastic estimators: logdet(A, method=slq) and trace(A, method=hutchinson) (docs/kernels.md).

Both use `probes` Rademacher vectors z (entries ±1) drawn at compile time from `seed` (a `const`:
every backend sees the same numbers, and a program is deterministic).

- Hutchinson: tr(A) ≈ (1/t) Σ zᵢᵀ A zᵢ, A applied through its own lowering.
- Stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017; GPyTorch's default for large GPs):
  logdet(A) ≈ (1/t) Σ ‖zᵢ‖² e₁ᵀ log(Tᵢ) e₁, with Tᵢ the `steps` x `steps` Lanczos tridiagonal of A
  started at zᵢ / ‖zᵢ‖ (the `slq` primitive: a loop whose body applies A, as cg's does).  It keeps
  the sign: log det of a matrix with det < 1 is negative (CoLA's Lanczos logdet returns |logdet|).
  A must be symmetric positive definite.  Gradients go through the Lanczos recurrence by autograd.
"""
from __future__ import annotations

import numpy as np

from ..primitives import const_value
from .linalg_cg import PIVCHOL_RANK, operator_body, pivchol_inverse, split_diagonal
from .linalg_solve import as_dtype

RADEMACHER = "np.random.default_rng({seed}).choice(np.array([-1.0, 1.0]), size=({n}, {t}))"


def probes_np(n: int, t: int, seed: int):
    """The probe matrix in numpy (float64), the same numbers as the `const` the lowering writes."""
    return const_value(RADEMACHER.format(seed=int(seed), n=int(n), t=int(t)))


def slq_np(a, attrs):
    """The dense meaning of logdet(A, method=slq): the mean of zᵢᵀ log(A) zᵢ over the probes (what
    Lanczos quadrature approximates, exactly once `steps` reaches n)."""
    z = probes_np(a.shape[-1], attrs["probes"], attrs["seed"])
    w, q = np.linalg.eigh(0.5 * (a + a.T))
    log_a = (q * np.log(np.maximum(w, np.finfo(np.float64).tiny))) @ q.T
    return np.mean(np.sum(z * (log_a @ z), axis=0))


def hutchinson_np(a, attrs):
    """The dense meaning of trace(A, method=hutchinson): the mean of zᵢᵀ A zᵢ over the probes."""
    z = probes_np(a.shape[-1], attrs["probes"], attrs["seed"])
    return np.mean(np.sum(z * (a @ z), axis=0))


def probes(lw, n: int, t: int, seed: int, dtype: str):
    """The [n, t] Rademacher probe matrix drawn from `seed` (a compile-time constant)."""
    return lw.prim("const", expr=RADEMACHER.format(seed=int(seed), n=int(n), t=int(t)), dtype=dtype,
                   name=f"rademacher_{int(n)}x{int(t)}_seed{int(seed)}")


def lower_slq(lw, v, opts=None):
    """logdet(A, method=slq, probes=t, steps=m, seed=s, tol=, maxiter=); `opts` in place of the
    node's own options (method=auto)."""
    n = lw.src[v]
    opts = opts or n.attrs
    a = n.operands[0]
    size = lw.dims.value(lw.src.type(a).rows)
    dt = lw.src.type(a).dtype or "float32"
    dt = dt if dt in ("float32", "float64") else "float32"
    z = probes(lw, size, opts["probes"], opts["seed"], dt)
    pre = []
    if split_diagonal(lw.src, a) is not None:     # the gradient's solves, preconditioned as GPyTorch's are
        pre = list(pivchol_inverse(lw, a, dt, PIVCHOL_RANK))
    body, outer = operator_body(lw, a, z, dt, int(opts["steps"]), "SLQ")
    return lw.prim("slq", z, *pre, *outer, body=body, steps=int(opts["steps"]), tol=float(opts.get("tol", 1e-2)),
                   maxiter=int(opts.get("maxiter", 1000)), precond="pivchol" if pre else "none")


def lower_hutchinson(lw, v):
    """trace(A, method=hutchinson, probes=t, seed=s): the mean of zᵢᵀ A zᵢ."""
    n = lw.src[v]
    a = n.operands[0]
    size = lw.dims.value(lw.src.type(a).rows)
    dt = lw.src.type(a).dtype or "float32"
    z = probes(lw, size, n.attrs["probes"], n.attrs["seed"], dt if dt in ("float32", "float64") else "float32")
    az = lw.apply(a, as_dtype(lw, z, dt))
    total = lw.prim("sum", lw.prim("sum", lw.mul(z, az), axis=-1), axis=-1)
    return lw.scale(total, 1.0 / int(n.attrs["probes"]))

"""The primitives of sparse matrices and of integer indices (docs/block_sparse.md).

A sparse argument (`input S : [m, n] sparse`) is the framework's own sparse matrix — scipy.sparse
on numpy, a torch sparse COO or CSR tensor, a `jax.experimental.sparse.BCOO` — and only these
primitives read it: `spmm` applies it (or its transpose) to a dense [n, k], `sparse_dense` writes
it down, `sparse_diagonal` reads its diagonal, `sparse_solve` and `sparse_logdet` factor it
(scipy's `splu` on numpy; torch and JAX have no sparse direct solver on the CPU, so they factor
its dense matrix, which `opdsl explain` says).  Their numpy meanings take a scipy.sparse matrix or
a dense array alike (the interpreter and the tests pass either).

`take` and `put` pick rows by indices: a compile-time tuple (`idx=`) or an integer tensor operand
(`select(idx, n)` with `input idx : [k] int64`).

Imported by opdsl/primitives.py after its own set, so PRIMS holds these wherever it is read.
"""
from __future__ import annotations

import numpy as np

from .primitives import Prim


def _issparse(s) -> bool:
    import scipy.sparse
    return scipy.sparse.issparse(s)


def _dense_np(s, t=False):
    m = s.toarray() if _issparse(s) else np.asarray(s)
    return m.T if t else m


def _spmm_np(s, x, t=False):
    return np.asarray((s.T if t else s) @ x)


def _sparse_solve_np(s, b, t=False):
    if not _issparse(s):
        return np.linalg.solve(_dense_np(s, t), b)
    import scipy.sparse.linalg
    return scipy.sparse.linalg.splu((s.T if t else s).tocsc()).solve(np.asarray(b))


def _sparse_logdet_np(s):
    return np.linalg.slogdet(_dense_np(s))[1]


def _rows_shape(s, t):
    return s.shape[1] if t else s.shape[0]


Prim("spmm", lambda g, ts, a: (_rows_shape(ts[0], a.get("t")), ts[1].shape[-1]), _spmm_np,
     "S @ X (t=True: Sᵀ @ X) for a sparse argument S [m, n] and a dense X [n, k] (numpy: scipy's "
     "@; torch: torch.sparse.mm, differentiable in S's values; JAX: BCOO's @)",
     promote=True, runtime=("sparse",))
Prim("sparse_dense", lambda g, ts, a: (ts[0].shape[1], ts[0].shape[0]) if a.get("t") else ts[0].shape,
     _dense_np, "the dense matrix of a sparse argument S (t=True: of Sᵀ)", runtime=("sparse",))
Prim("sparse_diagonal", lambda g, ts, a: (ts[0].shape[0],),
     lambda s: np.asarray(s.diagonal()), "the diagonal [n] of a square sparse argument S, read from its entries",
     runtime=("sparse",))
Prim("sparse_solve", lambda g, ts, a: ts[1].shape, _sparse_solve_np,
     "X with S X = B (t=True: Sᵀ X = B) for a square sparse argument S and a dense B [n, k] (numpy: "
     "scipy.sparse.linalg.splu; torch, JAX: LU of S's dense matrix); a singular S is an error",
     promote=True, runtime=("linalg", "sparse"), singular=True)
Prim("sparse_logdet", lambda g, ts, a: (), _sparse_logdet_np,
     "log |det S| of a square sparse argument S (numpy: splu's pivots; torch, JAX: slogdet of S's "
     "dense matrix)", runtime=("sparse",))


def _take_np(x, idx=None, **_):
    return x[..., np.asarray(idx).tolist(), :]


def _put_np(x, idx=None, n=None):
    out = np.zeros(x.shape[:-2] + (int(n), x.shape[-1]), x.dtype)
    np.add.at(out, (Ellipsis, np.asarray(idx).tolist(), slice(None)), x)
    return out


def _count(ts, a):
    """How many rows take picks / put adds: its compile-time indices, or its index operand's length."""
    return len(a["idx"]) if "idx" in a else ts[1].shape[0]


Prim("take", lambda g, ts, a: tuple(ts[0].shape[:-2]) + (_count(ts, a), ts[0].shape[-1]),
     lambda x, *i, **a: _take_np(x, i[0] if i else a["idx"]),
     "rows idx of x [..., n, k] -> [..., len(idx), k]: select's apply; idx a compile-time tuple of "
     "integers (attribute) or an integer tensor [k] (second operand, checked to lie in [0, n))",
     dtype=lambda dts, a: dts[0], runtime=lambda a: () if "idx" in a else ("index",),
     eager=lambda a: "idx" not in a)      # JAX: the indices are checked on the host
Prim("put", lambda g, ts, a: tuple(ts[0].shape[:-2]) + (a["n"], ts[0].shape[-1]),
     lambda x, *i, n, **a: _put_np(x, i[0] if i else a["idx"], n),
     "the transpose of take: row i of x [..., len(idx), k] added into row idx[i] of zeros [..., n, k] "
     "(a repeated index accumulates): select's transpose; idx as take's",
     dtype=lambda dts, a: dts[0], runtime=lambda a: ("put",) if "idx" in a else ("put", "index"),
     eager=lambda a: "idx" not in a)

"""Leaves: how an operand that no rule rewrote is inverted, its log-determinant taken and its
diagonal read (docs/linalg.md), and what that costs.

A leaf is written down as a matrix — its tensor for a dense operand (Kind.matrix), otherwise
applied to the identity — and factored: Cholesky when it is known PSD, a triangular solve when
it is known lower/upper triangular, LU otherwise.  A kind with a better way states it through
its hooks (Kind.leaf_solve, leaf_logdet, leaf_diagonal, matrix_flops, factor_flops: a batched
block diagonal is solved block by block); everything else takes the generic way here.
"""
from __future__ import annotations

import sympy as sp

from .base import sym_prod
from .linalg_analysis import psd, triangular


def eye_like(lw, n, dtype):
    return lw.prim("eye", n=n, dtype=dtype)


def materialize(lw, a, dtype="float32"):
    """Primitive id of operator a as a matrix [*batch, m, n]: the kind's own matrix (Kind.matrix)
    or a applied to the identity (of a's dtype; `dtype` for an operator without data of its own,
    such as perm).  Once per operand: a sum shared by several users is written down once."""
    t = lw.src.type(a)
    dt = t.dtype or dtype
    done = lw.__dict__.setdefault("_materialized", {})
    key = (a, dt)
    if key not in done:
        m = lw.src.spec(a).matrix(lw, a, dt)
        done[key] = m if m is not None else lw.apply(a, eye_like(lw, t.cols, dt))
    return done[key]


def leaf_matrix(lw, a, dtype="float32"):
    """(matrix primitive, properties) for a leaf: its matrix and what is known of it (psd also when
    its structure says so: kernel(X, X) + diag(noise) with noise declared positive is a Cholesky)."""
    props = lw.src.spec(a).matrix_props(lw.src, a)
    if "psd" not in props and psd(lw.src, a):
        props = frozenset(props) | {"psd", "symmetric"}
    return materialize(lw, a, dtype), props


def as_dtype(lw, x, dtype):
    return x if lw.dtype(x) == dtype else lw.prim("cast", x, dtype=dtype)


def fold_batch(lw, x):
    """(x [*b, n, k] as columns [n, b·k], the function that unfolds a result [m, b·k] to [*b, m, k]):
    one unbatched matrix applied to (or solved with) a batch is one product with more columns."""
    s = lw.shape(x)
    b, n, k = s[:-2], s[-2], s[-1]
    if not b:
        return x, lambda y: y
    perm = (len(b),) + tuple(range(len(b))) + (len(b) + 1,)

    def unfold(y):
        y = lw.reshape(y, (lw.shape(y)[0],) + tuple(b) + (k,))
        return lw.permute(y, tuple(range(1, len(b) + 1)) + (0, len(b) + 1))
    return lw.reshape(lw.permute(x, perm), (n, sym_prod(b) * k)), unfold


def solve_matrix(lw, m, props, x, method="auto", tri=None):
    """Primitive id of m⁻¹ x for a matrix primitive m [*b, n, n] with the given properties.

    One matrix and a batched x [*b, n, k] (a Kronecker factor applied to its mode) is one solve
    with the batch folded into the columns, x viewed as [n, b·k]: a batched solve would factor
    the same matrix once per batch entry."""
    ms, xs = lw.shape(m), lw.shape(x)
    ne = len(xs) - len(ms)              # leading dims of x that the matrix is broadcast over
    if ne > 0:
        nm = len(ms) - 2
        extra, mb, (n, k) = xs[:ne], xs[ne:-2], xs[-2:]
        perm = tuple(range(ne, ne + nm)) + (ne + nm,) + tuple(range(ne)) + (ne + nm + 1,)
        cols = lw.reshape(lw.permute(x, perm), tuple(mb) + (n, sym_prod(extra) * k))
        y = solve_matrix(lw, m, props, cols, method, tri)
        y = lw.reshape(y, tuple(mb) + (n,) + tuple(extra) + (k,))
        return lw.permute(y, tuple(sorted(range(len(perm)), key=lambda i: perm[i])))
    if method == "cholesky" or (method == "auto" and "psd" in props):
        return lw.prim("cho_solve", lw.prim("cholesky", m), x)
    if method == "auto" and tri in ("lower", "upper", "diagonal"):
        y = lw.prim("solve_triangular", m, x, upper=tri == "upper", checked=True)
        return lw.prim("checked", y)
    return lw.prim("solve", m, x)


def leaf_solve(lw, a, x, method):
    """Primitive id of a⁻¹ x for a leaf a."""
    y = lw.src.spec(a).leaf_solve(lw, a, x, method)
    if y is not None:
        return y
    m, props = leaf_matrix(lw, a, lw.dtype(x))
    return solve_matrix(lw, m, props, as_dtype(lw, x, lw.dtype(m)), method, triangular(lw.src, a))


def logdet_matrix(lw, m, props, tri):
    if "psd" in props:
        ld = lw.prim("sum", lw.prim("unary", lw.prim("diagonal", lw.prim("cholesky", m)), fn="log"), axis=-1)
        return lw.scale(ld, 2.0)
    if tri is not None:
        d = lw.prim("unary", lw.prim("diagonal", m), fn="abs")
        return lw.prim("sum", lw.prim("unary", d, fn="log"), axis=-1)
    return lw.prim("slogdet", m)


def leaf_logdet(lw, a):
    """Primitive id of logdet(a) for a leaf a."""
    y = lw.src.spec(a).leaf_logdet(lw, a)
    if y is not None:
        return y
    m, props = leaf_matrix(lw, a)
    return logdet_matrix(lw, m, props, triangular(lw.src, a))


def leaf_diagonal(lw, a):
    """Primitive id of the diagonal of a leaf a."""
    y = lw.src.spec(a).leaf_diagonal(lw, a)
    if y is not None:
        return y
    m, _ = leaf_matrix(lw, a)
    return lw.prim("diagonal", m)


def leaf_flops(g, a):
    """FLOPs to have operand a as a matrix: the kind's own count (0 for a dense one), else n
    applications of it."""
    f = g.spec(a).matrix_flops(g, a)
    if f is not None:
        return f
    return g.spec(a).flops(g, a, g.type(a).cols)


def factor_flops(g, a, props, tri):
    """FLOPs to factor leaf a: the kind's own count, else Cholesky n³/3 (PSD), nothing
    (triangular) or LU 2n³/3."""
    f = g.spec(a).factor_flops(g, a, props, tri)
    if f is not None:
        return f
    t = g.type(a)
    n = t.cols
    if "psd" in props:
        return sp.Rational(1, 3) * n ** 3 * sym_prod(t.batch)
    if tri is not None:
        return 0
    return sp.Rational(2, 3) * n ** 3 * sym_prod(t.batch)


__all__ = ["eye_like", "materialize", "leaf_matrix", "as_dtype", "solve_matrix", "leaf_solve", "logdet_matrix",
           "leaf_logdet", "leaf_diagonal", "leaf_flops", "factor_flops"]

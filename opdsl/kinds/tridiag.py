"""Tridiagonal operators: `tridiag(lower, main, upper)` (docs/block_sparse.md).

The n x n matrix with `main` [n] on the diagonal, `lower` [n − 1] below it and `upper` [n − 1]
above it (scipy.sparse.diags([lower, main, upper], [-1, 0, 1])).  Applied in O(n k) with shifted
slices; solved in O(n k) by the `tridiag_solve` primitive (numpy: scipy.linalg.solve_banded; JAX:
jax.lax.linalg.tridiagonal_solve; torch: cyclic reduction, log₂ n vectorized levels, differentiable
by autograd) and log-determined in O(n) by `tridiag_logdet` (cyclic reduction: the eliminated rows'
pivots).  Neither pivots: they are for diagonally dominant or symmetric positive definite systems
(second differences, splines, implicit time steps), as the Thomas algorithm is.
`tridiag(l, d, l)` (the same tensor below and above) is symmetric.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from .base import Kind, OpType, join_dtype, register, tensor_of_rank
from .linalg_solve import as_dtype, fold_batch
from .rule import As, Rule, Window

TRIDIAG = As("T", ("tridiag", "l", "m", "u"))


def tridiag_np(lower, main, upper):
    return np.diag(main) + np.diag(lower, -1) + np.diag(upper, 1)


def _crop(g, d, front, span):
    """d [n] without its first (front) or last entry: pad(n − 1, 1, 0)ᵀ d or pad(n − 1, 0, 1)ᵀ d."""
    n = g.type(d).shape[0]
    crop = g.add("pad", [], {"n": n - 1, "before": int(front), "after": int(not front), "T": True}, span=span)
    return g.add("apply", [crop, d], span=span)


def _scaled(g, m, left):
    """diag(d) T (left) or T diag(d) as one tridiag: row i (column j) of T times d_i (d_j)."""
    d, (lo, main, up) = m["d"], (m["l"], m["m"], m["u"])
    if len(g.type(d).shape) != 1:
        return None                                    # a batch of diagonals: not one tridiag
    span = g[m["T"]].span
    tmul = lambda a, b: g.add("tmul", [a, b], span=span)     # noqa: E731
    first, last = _crop(g, d, True, span), _crop(g, d, False, span)     # d[1:], d[:-1]
    scaled = [tmul(first if left else last, lo), tmul(d, main), tmul(last if left else first, up)]
    t = g.add("tridiag", scaled, span=span)
    ops = list(m["L"]) + [t] + list(m["R"])
    return ops[0] if len(ops) == 1 else g.add("compose", ops, span=g[m["_"]].span)


@register
class Tridiag(Kind):
    """`tridiag(lower, main, upper)`: lower [n − 1], main [n], upper [n − 1] -> [n, n]."""

    name = "tridiag"
    constructors = ("tridiag",)
    params = ("lower", "main", "upper")
    examples = (
        "dim n = 6\ninput l : [n - 1]\ninput d : [n]\ninput u : [n - 1]\ninput x : [n, 2]\n"
        "export y = tridiag(l, d, u) @ x\nexport z = tridiag(l, d, u).T @ x",
        # solved and log-determined by cyclic reduction (the catalogue draws a dominant main
        # diagonal: operand_domains)
        "dim n = 7\ninput l : [n - 1]\ninput d : [n]\ninput u : [n - 1]\ninput x : [3, n, 2]\n"
        "let T = tridiag(l, d, u)\nexport y = inv(T) @ x\nexport z = logdet(T)\n"
        "export w = diag_of(T)",
    )

    def sample(self, n, tag):
        if n < 2:
            return None
        return (f"input tl{tag} : [{n - 1}]\ninput td{tag} : [{n}]\ninput tu{tag} : [{n - 1}]",
                f"tridiag(tl{tag}, td{tag}, tu{tag})")

    def construct(self, b, args, kwargs, span):
        b.no_kwargs(self, kwargs)
        b.arity(self, args, span, 3, 3)
        ops = [b.tensor(a, (1,), f"tridiag's {w}") for a, w in zip(args, self.params)]
        return b.add(self.name, ops, span=span)

    def infer(self, g, ops, attrs, span):
        lo, d, up = (tensor_of_rank(g, o, (1,), span, f"tridiag's {w}") for o, w in zip(ops, self.params))
        n = d.shape[0]
        for t, w in ((lo, "lower"), (up, "upper")):
            if not g.dims.equal(t.shape[0] + 1, n):
                raise ShapeError(f"tridiag's {w} must have n − 1 = {n - 1} entries for a main diagonal of {n}, "
                                 f"got {t}", span, hint="tridiag(lower [n − 1], main [n], upper [n − 1])")
        props = frozenset({"symmetric"}) if ops[0] == ops[2] else frozenset()
        return OpType(n, n, (), join_dtype(lo.dtype, d.dtype, up.dtype), props)

    def dense(self, g, v, vals):
        return tridiag_np(*vals)

    def flops(self, g, v, k):
        return 5 * g.type(v).rows * k

    def lower(self, lw, v, x):
        """y = d·x + (u·x shifted up) + (l·x shifted down), on x [*b, n, k]."""
        lo, d, up = (lw.tensor(o) for o in lw.src[v].operands)
        s = lw.shape(x)
        b, n, k = s[:-2], s[-2], s[-1]
        y = lw.mul(lw.reshape(d, (n, 1)), x)
        zero = lw.prim("fill", shape=b + (1, k), value=0.0, dtype=lw.dtype(x))
        above = lw.mul(lw.reshape(up, (n - 1, 1)), lw.prim("slice", x, axis=-2, start=1, stop=n))      # u_i x_{i+1}
        below = lw.mul(lw.reshape(lo, (n - 1, 1)), lw.prim("slice", x, axis=-2, start=0, stop=n - 1))  # l_{i-1} x_{i-1}
        y = lw.add(y, lw.prim("concat", above, zero, axis=-2))
        return lw.add(y, lw.prim("concat", zero, below, axis=-2))

    rules = (
        Rule("diag-tridiag", "diag(d) T = tridiag(d[1:] l, d m, d[:-1] u): row i of T times d_i",
             ("compose", Window(("diag", "d"), TRIDIAG, before="L", after="R")), lambda g, m: _scaled(g, m, True)),
        Rule("tridiag-diag", "T diag(d) = tridiag(d[:-1] l, d m, d[1:] u): column j of T times d_j",
             ("compose", Window(TRIDIAG, ("diag", "d"), before="L", after="R")), lambda g, m: _scaled(g, m, False)),
    )

    def operand_domains(self, g, v):
        """Test inputs for the main diagonal dominate the others (reference.DOMAINS): the solve and
        log-determinant do not pivot."""
        return {1: "dominant"}

    def transpose(self, g, v):
        lo, d, up = g[v].operands
        return g.add(self.name, [up, d, lo], span=g[v].span)

    # ---- as a linear-algebra leaf: O(n), never the n x n matrix ----
    def cheap_inverse(self, g, v):
        return True

    def _diagonals(self, lw, v, dtype):
        return [as_dtype(lw, lw.tensor(o), dtype) for o in lw.src[v].operands]

    def leaf_solve(self, lw, v, x, method):
        """One tridiag_solve with the batch of x folded into its columns."""
        if method != "auto":
            return None
        lw.note("inv(tridiag(...)): a tridiagonal solve in O(n) (no pivoting: for diagonally dominant or "
                "positive definite systems)")
        cols, unfold = fold_batch(lw, x)
        return unfold(lw.prim("tridiag_solve", *self._diagonals(lw, v, lw.dtype(x)), cols))

    def leaf_logdet(self, lw, v):
        lw.note("logdet(tridiag(...)): cyclic reduction's pivots, O(n)")
        return lw.prim("tridiag_logdet", *self._diagonals(lw, v, lw.src.type(v).dtype or "float32"))

    def leaf_diagonal(self, lw, v):
        return lw.tensor(lw.src[v].operands[1])

    def factor_flops(self, g, v, props, tri):
        return 8 * g.type(v).rows

    def matrix_flops(self, g, v):
        return g.type(v).rows ** 2

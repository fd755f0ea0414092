"""Kronecker products, applied factor by factor (mode products)."""
from __future__ import annotations

import math
from functools import reduce
from itertools import permutations

import numpy as np

from .algebra import common
from .base import Kind, OpType, join_dtype, op_type, register, sym_prod
from .fft_algebra import outer
from .linalg_analysis import all_psd, all_square, operands_triangular, singular_factors

KRON_KEEPS = frozenset({"orthogonal", "symmetric", "psd", "diagonal", "permutation", "invertible"})


def mode_order(g, ops, k, hint):
    """The order of mode products with the fewest FLOPs.

    Applying factor i to the running tensor costs flops_i(columns) where the
    columns are the other modes' current sizes times k; a factor that shrinks
    its mode (m_i < n_i) is best applied early, one that grows it late.  Exact
    search over orders for up to 6 factors, greedy by m_i/n_i beyond.
    """
    ts = [g.type(o) for o in ops]
    rows = [hint(t.rows) for t in ts]
    cols = [hint(t.cols) for t in ts]
    per_col = [float(g.dims.hinted(g.spec(o).flops(g, o, 1))) for o in ops]

    def cost(order):
        size = list(cols)
        total = 0.0
        for i in order:
            other = math.prod(size[j] for j in range(len(size)) if j != i) * k   # exact: no int64 overflow
            total += per_col[i] * other
            size[i] = rows[i]
        return total

    idx = range(len(ops))
    if len(ops) <= 6:
        return min(permutations(idx), key=lambda o: (cost(o), o))
    return tuple(sorted(idx, key=lambda i: rows[i] / cols[i]))


@register
class Kron(Kind):
    """`kron(A, B, ...)`, numpy.kron order: (A ⊗ B)[i*p + k, j*q + l] = A[i, j] B[k, l]."""

    name = "kron"
    examples = (
        "dim a = 3\ndim b = 4\ninput A : [a, a]\ninput B : [b, b]\ninput x : [a * b, 2]\nexport y = kron(A, B) @ x",
        "input A : [2, 3]\ninput B : [4, 2]\ninput C : [3, 3]\ninput x : [18, 5]\nexport y = kron(A, B, C) @ x",
        "input A : [2, 2]\ninput d : [3]\ninput x : [4, 6, 2]\nexport y = kron(A, diag(d)) @ x",
    )

    def shard_mode(self, g, v, s):
        """A factor's dim split over the mesh: each device applies its slice of that factor to its
        block of x, and the partial products are summed (all-reduce)."""
        from ..sharding import symbols_of
        return "psum" if s in symbols_of(g, g.type(v)) else "free"

    def sample(self, n, tag):
        for a in range(2, n):
            if n % a == 0:
                return f"input A{tag} : [{a}, {a}]\ninput B{tag} : [{n // a}, {n // a}]", f"kron(A{tag}, B{tag})"
        return None
    constructors = ("kron",)
    params = ()
    arity = (2, None)

    def infer(self, g, ops, attrs, span):
        ts = [op_type(g, o, span, "kron operand") for o in ops]
        for t in ts:
            if t.batch:
                from ..errors import ShapeError
                raise ShapeError(f"kron operands cannot be batched, got {t}", span)
        return OpType(sym_prod(t.rows for t in ts), sym_prod(t.cols for t in ts), (),
                      join_dtype(*(t.dtype for t in ts)), common(ts, KRON_KEEPS))

    def dense(self, g, v, vals):
        return reduce(np.kron, vals)

    def _order(self, g, v, k):
        return mode_order(g, g[v].operands, g.dims.hinted(k), g.dims.hinted)

    def flops(self, g, v, k):
        ops = g[v].operands
        size = [g.type(o).cols for o in ops]
        total = 0
        for i in self._order(g, v, k):
            other = sym_prod(size[j] for j in range(len(size)) if j != i) * k
            total += g.spec(ops[i]).flops(g, ops[i], other)
            size[i] = g.type(ops[i]).rows
        return total

    def lower(self, lw, v, x):
        """x [*b, n1*...*np, k] -> reshape to modes; each factor is applied to its mode
        by viewing x as [*b, pre, n_i, post*k] (a matmul broadcast over `pre`, no copies)."""
        ops = lw.src[v].operands
        s = lw.shape(x)
        b, k = s[:-2], s[-1]
        size = [lw.src.type(o).cols for o in ops]
        for i in mode_order(lw.src, ops, lw.dims.hinted(k), lw.dims.hinted):
            pre = sym_prod(size[:i])
            post = sym_prod(size[i + 1:]) * k
            view = b + ((pre,) if pre != 1 else ()) + (size[i], post)
            x = lw.apply(ops[i], lw.reshape(x, view))
            size[i] = lw.src.type(ops[i]).rows
        return lw.reshape(x, b + (sym_prod(size), k))

    def fft_tree(self, g, v, conj, leaves):     # (A ⊗ B) = (A ⊗ I)(I ⊗ B): each factor on its axes
        return outer(g, g[v].operands, conj, leaves)

    def transpose(self, g, v):
        n = g[v]
        return g.add("kron", [g.add("transpose", [o], span=n.span) for o in n.operands], span=n.span)

    def operand_columns(self, g, v, k):
        """Factor i is applied to k times the other factors' columns (a mode product)."""
        cols = [g.type(o).cols for o in g[v].operands]
        return [k * sym_prod(c for j, c in enumerate(cols) if j != i) for i in range(len(cols))]

    def triangular_through(self, g, v):
        return operands_triangular(g, g[v].operands)

    def psd_through(self, g, v):                # eigenvalues multiply
        return all_psd(g, g[v].operands)

    def singular(self, g, v):
        return singular_factors(g, g[v].operands, "Kronecker product")

    def cheap_inverse(self, g, v):              # the Kronecker product of the factors' inverses
        return all_square(g, g[v].operands)

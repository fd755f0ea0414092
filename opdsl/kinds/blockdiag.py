"""Block-diagonal operators: a list of blocks, or one batched tensor of equal blocks."""
from __future__ import annotations

import numpy as np
import sympy as sp

from .algebra import common
from ..errors import TypeError_
from .base import Kind, OpType, join_dtype, op_type, register, tensor_of_rank
from .linalg_analysis import all_psd, all_square, operands_triangular, singular_factors
from .linalg_solve import as_dtype, solve_matrix

BLOCK_KEEPS = frozenset({"orthogonal", "symmetric", "psd", "diagonal", "permutation", "invertible"})


def block_diag(blocks):
    rows = sum(b.shape[-2] for b in blocks)
    cols = sum(b.shape[-1] for b in blocks)
    out = np.zeros((rows, cols), dtype=np.result_type(*blocks))
    i = j = 0
    for b in blocks:
        out[i:i + b.shape[0], j:j + b.shape[1]] = b
        i, j = i + b.shape[0], j + b.shape[1]
    return out


@register
class BlockDiag(Kind):
    """`blockdiag(A, B, ...)`: blocks on the diagonal; `blockdiag(W)` with W [k, p, q] is batched."""

    name = "blockdiag"
    examples = ("input A : [2, 3]\ninput B : [4, 1]\ninput x : [4, 3]\nexport y = blockdiag(A, B) @ x",)

    def sample(self, n, tag):
        if n < 2:
            return None
        return f"input P{tag} : [1, 1]\ninput Q{tag} : [{n - 1}, {n - 1}]", f"blockdiag(P{tag}, Q{tag})"
    constructors = ("blockdiag",)
    params = ()
    arity = (1, None)

    def construct(self, b, args, kwargs, span):
        b.no_kwargs(self, kwargs)
        b.arity(self, args, span, 1, None)
        if len(args) == 1:
            t = b.type_of(args[0])
            if t is not None and not t.is_op and len(t.shape) == 3:
                return b.add("blockdiag_batched", [b.tensor(args[0], (3,), "blockdiag's argument")], span=span)
            raise TypeError_("blockdiag of one argument needs a tensor of blocks [k, p, q]", span,
                             hint="write blockdiag(A, B, ...) for a list of blocks")
        return b.add(self.name, [b.op(a) for a in args], span=span)

    def infer(self, g, ops, attrs, span):
        ts = [op_type(g, o, span, "block") for o in ops]
        for t in ts:
            if t.batch:
                from ..errors import ShapeError
                raise ShapeError(f"blockdiag blocks cannot be batched, got {t}", span,
                                 hint="blockdiag(W) with one tensor W [k, p, q] makes k equal-size blocks")
        return OpType(sum(t.rows for t in ts), sum(t.cols for t in ts), (),
                      join_dtype(*(t.dtype for t in ts)), common(ts, BLOCK_KEEPS))

    def dense(self, g, v, vals):
        return block_diag(vals)

    def flops(self, g, v, k):
        return sum(g.spec(o).flops(g, o, k) for o in g[v].operands)

    def lower(self, lw, v, x):
        start = 0
        ys = []
        for o in lw.src[v].operands:
            c = lw.src.type(o).cols
            ys.append(lw.apply(o, lw.prim("slice", x, axis=-2, start=start, stop=start + c)))
            start = start + c
        return lw.prim("concat", *ys, axis=-2)

    def transpose(self, g, v):
        n = g[v]
        return g.add("blockdiag", [g.add("transpose", [o], span=n.span) for o in n.operands], span=n.span)

    def operand_columns(self, g, v, k):
        return [k] * len(g[v].operands)

    def triangular_through(self, g, v):
        ops = g[v].operands
        return operands_triangular(g, ops) if all_square(g, ops) else None

    def psd_through(self, g, v):
        ops = g[v].operands
        return all_square(g, ops) and all_psd(g, ops)

    def singular(self, g, v):
        return singular_factors(g, g[v].operands, "block diagonal")

    def cheap_inverse(self, g, v):              # the blocks' inverses on the diagonal
        return all_square(g, g[v].operands)


@register
class BlockDiagBatched(Kind):
    """`blockdiag(W)`, W [k, p, q]: k equal blocks, applied as one batched matmul."""

    name = "blockdiag_batched"
    examples = ("input W : [3, 2, 4]\ninput x : [12, 5]\nexport y = blockdiag(W) @ x",
                "input W : [2, 3, 3]\ninput x : [6, 4]\nexport y = blockdiag(W).T @ x")

    def sample(self, n, tag):
        for k in range(2, n):
            if n % k == 0:
                return f"input W{tag} : [{k}, {n // k}, {n // k}]", f"blockdiag(W{tag})"
        return None

    def infer(self, g, ops, attrs, span):
        t = tensor_of_rank(g, ops[0], (3,), span, "blockdiag's argument")
        k, p, q = t.shape
        return OpType(k * p, k * q, (), t.dtype, frozenset(t.props) & BLOCK_KEEPS)   # W declared psd, ...

    def dense(self, g, v, vals):
        return block_diag(list(vals[0]))

    def flops(self, g, v, k):
        kb, p, q = g.type(g[v].operands[0]).shape
        return 2 * kb * p * q * k

    def shard_mode(self, g, v, s):
        """Split over the blocks, each device applies its own blocks to its rows: no communication."""
        from ..sharding import expand
        kb, p, q = g.type(g[v].operands[0]).shape
        inside = expand(g, p).free_symbols | expand(g, q).free_symbols
        return "free" if s in expand(g, kb).free_symbols - inside else super().shard_mode(g, v, s)

    def lower(self, lw, v, x):
        w = lw.tensor(lw.src[v].operands[0])
        kb, p, q = lw.shape(w)
        s = lw.shape(x)
        b, c = s[:-2], s[-1]
        y = lw.matmul(w, lw.reshape(x, b + (kb, q, c)))
        return lw.reshape(y, b + (kb * p, c))

    def transpose(self, g, v):
        n = g[v]
        return g.add("blockdiag_batched", [g.add("tT", [n.operands[0]], span=n.span)], span=n.span)

    # ---- as a linear-algebra leaf: block by block, never the whole matrix ----
    def cheap_inverse(self, g, v):
        return True

    def leaf_solve(self, lw, v, x, method):
        """blockdiag(W)⁻¹ x: one batched solve with the k blocks, x viewed as [*b, k, p, c]."""
        w = lw.tensor(lw.src[v].operands[0])
        kb, p, _ = lw.shape(w)
        s = lw.shape(x)
        b, c = s[:-2], s[-1]
        y = solve_matrix(lw, w, frozenset(), lw.reshape(as_dtype(lw, x, lw.dtype(w)), b + (kb, p, c)), method)
        return lw.reshape(y, b + (kb * p, c))

    def leaf_logdet(self, lw, v):
        return lw.prim("sum", lw.prim("slogdet", lw.tensor(lw.src[v].operands[0])), axis=-1)

    def leaf_diagonal(self, lw, v):
        w = lw.tensor(lw.src[v].operands[0])
        kb, p, _ = lw.shape(w)
        return lw.reshape(lw.prim("diagonal", w), (kb * p,))

    def matrix_flops(self, g, v):               # its blocks are its data
        return 0

    def factor_flops(self, g, v, props, tri):   # k LUs of p x p blocks
        kb, p, _ = g.type(g[v].operands[0]).shape
        return kb * sp.Rational(2, 3) * p ** 3

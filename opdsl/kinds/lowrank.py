"""Low-rank operators U Vᵀ, applied as U (Vᵀ x)."""
from __future__ import annotations

from ..errors import ShapeError, written
from .base import Kind, OpType, join_dtype, register, tensor_of_rank
from .linalg_analysis import less


@register
class LowRank(Kind):
    """`lowrank(U, V)` = U Vᵀ with U [m, r], V [n, r]."""

    name = "lowrank"
    examples = ("input U : [6, 2]\ninput V : [5, 2]\ninput x : [5, 3]\nexport y = lowrank(U, V) @ x",
                "input d : [6]\ninput U : [6, 2]\ninput V : [6, 2]\ninput x : [6, 3]\nexport y = (diag(d) + lowrank(U, V)) @ x")

    def sample(self, n, tag):
        return f"input U{tag} : [{n}, 2]\ninput V{tag} : [{n}, 2]", f"lowrank(U{tag}, V{tag})"

    def chain_factor(self, g, v):           # U Vᵀ: a neighbour is absorbed into U or V
        return "lowrank", g.type(g[v].operands[0]).shape[1]
    constructors = ("lowrank",)
    params = ("U", "V")

    def construct(self, b, args, kwargs, span):
        b.no_kwargs(self, kwargs)
        b.arity(self, args, span, 2, 2)
        return b.add(self.name, [b.tensor(a, (2,), f"lowrank's {w}") for a, w in zip(args, ("U", "V"))], span=span)

    def infer(self, g, ops, attrs, span):
        u = tensor_of_rank(g, ops[0], (2,), span, "lowrank's U")
        v = tensor_of_rank(g, ops[1], (2,), span, "lowrank's V")
        if not g.dims.equal(u.shape[1], v.shape[1]):
            un, vn = written(g[ops[0]].span, "U"), written(g[ops[1]].span, "V")   # the user's names
            raise ShapeError(f"{written(span, 'lowrank(U, V)')} needs {un} and {vn} with the same rank (columns), "
                             f"got {un} {u} and {vn} {v}", span,
                             hint="lowrank(U, V) = U Vᵀ with U [m, r] and V [n, r]")
        return OpType(u.shape[0], v.shape[0], (), join_dtype(u.dtype, v.dtype))

    def psd_through(self, g, v):                # U Uᵀ
        return g[v].operands[0] == g[v].operands[1]

    def dense(self, g, v, vals):
        return vals[0] @ vals[1].T

    def flops(self, g, v, k):
        u = g.type(g[v].operands[0]).shape
        w = g.type(g[v].operands[1]).shape
        return 2 * u[1] * (u[0] + w[0]) * k

    def lower(self, lw, v, x):
        u, w = (lw.tensor(o) for o in lw.src[v].operands)
        return lw.matmul(u, lw.matmul(lw.swap(w), x))

    def transpose(self, g, v):
        u, w = g[v].operands
        return g.add("lowrank", [w, u], span=g[v].span)

    infer_from_types = True

    def singular(self, g, v):                   # rank r below its size
        r = g.type(g[v].operands[0]).shape[1]
        t = g.type(v)
        if less(g, r, t.rows):
            return f"{written(g[v].span, 'lowrank(U, V)')} has rank at most {r} < {t.rows}"
        return None

"""Algebraic simplification: a table of identities applied by the rewrite driver.

Every rule here has a soundness test in tests/test_rules.py (dense before ==
dense after on random instances, non-square factors included).
"""
from __future__ import annotations

from opdsl.ir import Graph

from .rewrite import Rule, RewriteLog, rewrite


def _flatten(kind):
    """kind(..., kind(a, b), ...) = kind(..., a, b, ...) (associativity)."""
    def build(g, m):
        ops = []
        changed = False
        for o in g[m["_"]].operands:
            if g.kind(o) == kind:
                ops.extend(g[o].operands)
                changed = True
            else:
                ops.append(o)
        return g.add(kind, ops, g[m["_"]].attrs, g[m["_"]].span) if changed else None
    return build


def _drop_identity(g, m):
    """A @ eye(n) @ B = A @ B."""
    ops = [o for o in g[m["_"]].operands if g.kind(o) != "eye"]
    if len(ops) == len(g[m["_"]].operands):
        return None
    if not ops:
        return g[m["_"]].operands[0]
    return ops[0] if len(ops) == 1 else g.add("compose", ops, span=g[m["_"]].span)


def _push_transpose(g, m):
    """(A)ᵀ = the kind's own transpose of A (kron, blockdiag, lowrank, perm, diag, ...)."""
    a = m["A"]
    if "symmetric" in g.type(a).props:
        return a
    return g.spec(a).transpose(g, a)


def _fold_scale(g, m):
    """a (b A) = (ab) A."""
    inner = g[g[m["_"]].operands[0]]
    return g.add("scale", [m["A"]], {"c": g[m["_"]].attrs["c"] * inner.attrs["c"]}, g[m["_"]].span)


def _scale_one(g, m):
    """1 A = A."""
    return m["A"] if g[m["_"]].attrs["c"] == 1.0 else None


RULES = [
    Rule("transpose-involution", "(Aᵀ)ᵀ = A", ("transpose", ("transpose", "A")), lambda g, m: m["A"]),
    Rule("transpose-pushdown", "Aᵀ = kind(A).transpose(A)", ("transpose", "A"), _push_transpose),
    Rule("tensor-transpose-involution", "(Wᵀ)ᵀ = W", ("tT", ("tT", "W")), lambda g, m: m["W"]),
    Rule("compose-flatten", "(AB)C = A(BC) = ABC", ("compose", "*xs"), _flatten("compose")),
    Rule("sum-flatten", "(A+B)+C = A+B+C", ("sum", "*xs"), _flatten("sum")),
    Rule("kron-flatten", "(A⊗B)⊗C = A⊗(B⊗C) = A⊗B⊗C", ("kron", "*xs"), _flatten("kron")),
    Rule("compose-identity", "A I = I A = A", ("compose", "*xs"), _drop_identity),
    Rule("scale-fold", "a(bA) = (ab)A", ("scale", ("scale", "A")), _fold_scale),
    Rule("scale-one", "1A = A", ("scale", "A"), _scale_one),
    Rule("apply-identity", "I x = x", ("apply", ("eye",), "x"), lambda g, m: m["x"]),
]


def simplify(g: Graph, log: RewriteLog | None = None, rules=None) -> Graph:
    return rewrite(g, RULES if rules is None else rules, log)

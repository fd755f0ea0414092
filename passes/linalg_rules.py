"""The linear-algebra rules (docs/linalg.md): inverses, log-determinants, diagonals, traces.

Tables of identities in the style of passes/simplify.py (Rule(name, identity, pattern, build,
where)): passes/inverse_rules.py (inv, logdet), passes/diagonal_rules.py (diag_of, trace), and
here the sums of diagonals and materialization; LINALG_RULES is all of them, in order.  They run
inside simplify's fixed point (simplify.py assembles its table from them, its own rules and every
kind's rules), so `inv(kron(A, B).T)` first has its transpose pushed down and then splits factor
by factor, before reassociation and lowering.  What no rule rewrites is a leaf, factored when
lowered (Cholesky / triangular / LU, kinds/linalg_solve.py).

Every rule has a soundness test in tests/test_linalg_rules.py: dense before == dense after
(numpy.linalg on the materialized matrices), and the rule fires.
"""
from __future__ import annotations

from opdsl.kinds.linalg_build import fill, tadd, tscale
from opdsl.kinds.rule import As, Rule, matches

from .diagonal_rules import DIAG_RULES, TRACE_RULES
from .inverse_rules import INV_RULES, LOGDET_RULES


# ---- sums of diagonals (so that diag(d) + c I keeps a cheap inverse, e.g. for Woodbury) -------------------

def _diagonal_term(g, o):
    """(d, c) for c·diag(d), (None, c) for c·I, None for anything else."""
    c = 1.0
    m = matches(g, As("S", ("scale", "A")), o)
    if m is not None:
        c, o = g[m["S"]].attrs["c"], m["A"]
    m = matches(g, ("diag", "d"), o)
    if m is not None:
        return m["d"], c
    if matches(g, ("eye",), o) is not None:
        return None, c
    return None


def _sum_diagonals(g, m):
    """diag(d) + c I + diag(e) = diag(d + c + e): one diagonal, applied with one multiply."""
    n = g[m["_"]]
    terms, rest = [], []
    for o in n.operands:
        t = _diagonal_term(g, o)
        if t is None:
            rest.append(o)
        else:
            terms.append(t)
    vecs = [(v, c) for v, c in terms if v is not None]
    if len(terms) < 2 or not vecs or n.type.batch:
        return None
    span = n.span
    parts = [tscale(g, v, c, span) for v, c in vecs]
    shift = sum(c for v, c in terms if v is None)
    if shift:
        t = g.type(vecs[0][0])
        parts.append(fill(g, t.shape, shift, t.dtype, span))
    d = g.add("diag", [tadd(g, parts, span)], span=span)
    return d if not rest else g.add("sum", rest + [d], span=span)


SUM_RULES = [
    # diag(d) + cI + diag(e) = diag(d + c + e)
    Rule("sum-diagonals", "diag(d) + cI + diag(e) = diag(d + c + e)", ("sum", "*xs"), _sum_diagonals),
]


MATERIALIZE_RULES = [
    # dense(W as an operator) = W
    Rule("dense-of-matrix", "dense(W) = W for a matrix W", ("materialize", ("dense", "W")), lambda g, m: m["W"]),
]


LINALG_RULES = INV_RULES + LOGDET_RULES + DIAG_RULES + TRACE_RULES + SUM_RULES + MATERIALIZE_RULES

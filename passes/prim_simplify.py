"""Small rewrites of the primitive graph, run after lowering (the pass `prim-simplify`).

Kinds lower themselves one piece at a time, so their primitives meet in ways no single kind
sees: a reshape of a reshape, a permutation undone by the next one, a subtraction spelled
`t = b * -1.0; a + t` (inv(K) @ y by the Woodbury identity).  The table below cleans them up
with the rewrite driver of the operator passes (passes/rewrite.py): every rule is a pattern
over primitives and a replacement, sound for every shape and dtype (tests/test_prim_simplify.py
checks each on random inputs against the graph before it).  A loop body (cg's) is a primitive
graph of its own, rewritten with the same table.
"""
from __future__ import annotations

import copy

from opdsl.ir import Graph

from .lower import lower
from .rewrite import As, OneOf, RewriteLog, Rule, RuleTable, rewrite


def _add(g: Graph, m: dict, kind: str, ops, attrs=None) -> int:
    """A node that stands for the matched one: built with its spans (for the source comments)."""
    v = m["_"]
    out = g.add(kind, ops, attrs, g[v].span)
    for s in g.spans(v)[1:]:
        g.note_span(out, s)
    return out


def _same_shape(g: Graph, a: int, shape) -> bool:
    cur = g.type(a).shape
    return len(cur) == len(shape) and all(g.dims.equal(x, y) for x, y in zip(cur, shape))


def _minus_one(g: Graph, m: dict) -> bool:
    return g[m["_"]].attrs["c"] == -1.0


def _negated(g: Graph, m: dict) -> bool:
    return g[m["N"]].attrs["fn"] == "neg"


def _identity(perm) -> bool:
    return tuple(perm) == tuple(range(len(perm)))


def _composed(g: Graph, m: dict) -> tuple:
    """The permutation of permute(permute(X, p), q): axis i of the result is axis p[q[i]] of X."""
    p, q = g[m["P"]].attrs["perm"], g[m["_"]].attrs["perm"]
    return tuple(p[i] for i in q)


def _loop_body(g: Graph, m: dict):
    """cg or slq with its loop body rewritten by this table (None when nothing in it changes)."""
    n = g[m["_"]]
    body = n.attrs["body"]
    log = RewriteLog()
    new = rewrite(_with_roots(body.graph, [body.root, body.loop, *body.captures]), TABLE, log)
    if not log.fired:
        return None
    nb = copy.copy(body)        # the same loop, over the new graph's ids
    nb.graph = new
    nb.root, nb.loop = new.exports["_0"], new.exports["_1"]
    nb.captures = tuple(new.exports[f"_{i + 2}"] for i in range(len(body.captures)))
    new.exports = {"out": nb.root}
    return _add(g, m, n.kind, n.operands, {**n.attrs, "body": nb})


def _with_roots(g: Graph, roots) -> Graph:
    """g viewed with `roots` as its exports (`_0`, `_1`, ...): the rewrite keeps every one of them."""
    view = copy.copy(g)
    view.exports = {f"_{i}": r for i, r in enumerate(roots)}
    return view


RULES = [
    # a scale by -1 is a negation, and a sum with a negation a difference (operands are
    # rewritten before their users: the add sees the negation)
    Rule("scale-minus-one", "x * -1 = -x", ("scale", "X"),
         lambda g, m: _add(g, m, "unary", (m["X"],), {"fn": "neg"}), where=_minus_one),
    Rule("add-neg", "a + (-b) = a - b", ("add", "A", As("N", ("unary", "B"))),
         lambda g, m: _add(g, m, "sub", (m["A"], m["B"])), where=_negated),
    Rule("neg-add", "(-b) + a = a - b", ("add", As("N", ("unary", "B")), "A"),
         lambda g, m: _add(g, m, "sub", (m["A"], m["B"])), where=_negated),
    Rule("reshape-identity", "reshape(x, shape(x)) = x", ("reshape", "X"),
         lambda g, m: m["X"], where=lambda g, m: _same_shape(g, m["X"], g[m["_"]].attrs["shape"])),
    Rule("reshape-reshape", "reshape(reshape(x, s), t) = reshape(x, t)", ("reshape", ("reshape", "X")),
         lambda g, m: _add(g, m, "reshape", (m["X"],), {"shape": g[m["_"]].attrs["shape"]})),
    Rule("permute-identity", "permute(x, (0, 1, ..)) = x", ("permute", "X"),
         lambda g, m: m["X"], where=lambda g, m: _identity(g[m["_"]].attrs["perm"])),
    Rule("permute-permute", "permute(permute(x, p), q) = permute(x, p∘q)", ("permute", As("P", ("permute", "X"))),
         lambda g, m: _add(g, m, "permute", (m["X"],), {"perm": _composed(g, m)})),
    Rule("swap-swap", "swap(swap(x)) = x", ("swap", ("swap", "X")), lambda g, m: m["X"]),
    Rule("loop-body", "cg(body) = cg(the body with these rules); slq's and pivchol's the same",
         (OneOf("cg", "slq", "pivchol"), "*xs"),
         _loop_body),
]
TABLE = RuleTable(RULES)


def prim_simplify(g: Graph, log: RewriteLog | None = None) -> Graph:
    """g with the rules of RULES applied to a fixed point (a new graph; g is unchanged)."""
    return rewrite(g, TABLE, log)


def to_primitives(g: Graph) -> Graph:
    """Operator graph g lowered as the pipeline lowers it (passes/__init__.py: `lower`, then the
    primitive passes, unrecorded): what the cost model measures."""
    return prim_simplify(lower(g))

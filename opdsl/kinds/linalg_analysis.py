"""What the shape rules and the rewrite rules know of an operator's structure (docs/linalg.md):
its triangular structure, why it is singular, whether its inverse is cheap.

Each kind states its own part through its hooks (Kind.triangular_through, Kind.singular,
Kind.cheap_inverse, in the kind's file); the functions here add what holds for every kind
(declared properties, orthogonality) and memoize the answer per node (node_memo), since the
hooks recurse into the operands and a DAG may reach an operand by many paths.
"""
from __future__ import annotations

from .base import node_memo


def psd(g, v) -> bool:
    """Whether square operator v is symmetric positive semidefinite: declared (its type's
    properties, assume(A, psd)) or through its structure (Kind.psd_through: X Xᵀ, lowrank(U, U),
    sums, positive multiples, Kronecker products and block diagonals of psd terms)."""
    return "psd" in g.type(v).props or node_memo(g, ("psd", v), lambda: bool(g.spec(v).psd_through(g, v)))


def all_psd(g, ops) -> bool:
    return all(psd(g, o) for o in ops)


def transposed(g, u, v) -> bool:
    """Whether node v is uᵀ as written: transpose(u), tT(u), or dense(tT(X)) for u = dense(X)."""
    if g[u].kind == "dense" and g[v].kind == "dense":
        u, v = g[u].operands[0], g[v].operands[0]
    return g[v].kind in ("transpose", "tT") and g[v].operands[0] == u


def is_gram(g, a, b) -> bool:
    """Whether the product of a and b is X Xᵀ or Xᵀ X for one X, so symmetric positive
    semidefinite: operators X and transpose(X), or the tensor product dense(X) @ tT(X)."""
    if g[a].kind == "dense" and g[b].kind != "dense":   # a tensor product: dense(X) @ tensor
        a = g[a].operands[0]
    return transposed(g, a, b) or transposed(g, b, a)


def flip(tri):
    """The triangular structure of a transpose: lower <-> upper."""
    return {"lower": "upper", "upper": "lower"}.get(tri, tri)


def all_same(vals):
    """The structure shared by all of vals (diagonal goes with either side), or None."""
    vals = list(vals)
    if not vals or None in vals:
        return None
    kinds = set(vals) - {"diagonal"}
    if not kinds:
        return "diagonal"
    return kinds.pop() if len(kinds) == 1 else None


def tri_of(props):
    """The triangular structure named by a set of properties, or None."""
    if "diagonal" in props:
        return "diagonal"
    for p in ("lower", "upper"):
        if p in props:
            return p
    return None


def tensor_props(g, t):
    """The properties of matrix tensor t, through transposes (Lᵀ of a lower L is upper)."""
    parts = g.spec(t).chain_parts(g, t)
    if parts is not None and parts[0] == "transposed":
        return node_memo(g, ("tensor_props", t), lambda: frozenset(flip(p) for p in tensor_props(g, parts[1])))
    return g.type(t).props


def triangular(g, v):
    """'diagonal', 'lower', 'upper' or None: what is known of operator v's triangular structure."""
    tri = tri_of(g.type(v).props)
    if tri is not None:
        return tri
    return node_memo(g, ("triangular", v), lambda: g.spec(v).triangular_through(g, v))


def operands_triangular(g, ops):
    """The triangular structure all of ops share (a product, sum or Kronecker product of them has it)."""
    return all_same(triangular(g, o) for o in ops)


def square(g, v):
    t = g.type(v)
    return g.dims.equal(t.rows, t.cols)


def all_square(g, ops):
    return all(square(g, o) for o in ops)


def no_batch(g, ops):
    return all(not g.type(o).batch for o in ops)


def less(g, a, b):
    """a < b provably (both known)."""
    x, y = g.dims.value(a), g.dims.value(b)
    return x is not None and y is not None and x < y


def singular_reason(g, v):
    """Why square operator v is singular by its structure alone, or None."""
    return node_memo(g, ("singular", v), lambda: g.spec(v).singular(g, v))


def singular_factors(g, ops, what):
    """Why a Kronecker product / block diagonal of ops (`what`) is singular: a non-square factor
    (its rank is below its size) or a singular one; None."""
    for o in ops:
        if not square(g, o):
            return f"the {what} has a non-square factor {g.type(o)}, so its rank is below its size"
        why = singular_reason(g, o)
        if why:
            return why
    return None


def cheap_inverse(g, v) -> bool:
    """Whether inv(v) rewrites to something cheaper than factoring the materialized matrix."""
    t = g.type(v)
    if "orthogonal" in t.props or triangular(g, v) is not None:
        return True
    return bool(g.spec(v).cheap_inverse(g, v))


def lowrank_split(g, ops):
    """([(U, V, c)], rest) for a sum with low-rank terms c·U Vᵀ and a rest with a cheap inverse; else None."""
    lows, rest = [], []
    for o in ops:
        k = g.kind(o)
        if k == "lowrank":
            lows.append((*g[o].operands, 1.0))
        elif k == "scale" and g.kind(g[o].operands[0]) == "lowrank":
            lows.append((*g[g[o].operands[0]].operands, g[o].attrs["c"]))
        else:
            rest.append(o)
    if not lows or len(rest) != 1 or not no_batch(g, ops) or not cheap_inverse(g, rest[0]):
        return None
    return lows, rest


__all__ = ["flip", "all_same", "tri_of", "tensor_props", "triangular", "operands_triangular", "square",
           "all_square", "no_batch", "less", "singular_reason", "singular_factors", "cheap_inverse", "lowrank_split"]

"""Rules for inverses and log-determinants (opdsl/kinds/linalg.py, docs/linalg.md).

Tables of identities in the style of passes/simplify.py: inv and logdet of products, Kronecker
products, block diagonals, diagonals and scalars, of orthogonal and triangular operators, and of
a cheap operator plus low-rank terms (Woodbury, the determinant lemma).  A kind whose inverse has
its own formula carries that rule itself (Monarch, circulant: Kind.rules).  `logdet` is log |det|,
so the rules need no sign bookkeeping.

An explicit method (inv(A, method=lu | cholesky | cg)) asks for that method on A as written: the
inverse rules leave such an inv alone (the `auto` guard).
"""
from __future__ import annotations

import math

import sympy as sp

from opdsl.kinds.linalg_analysis import all_square, lowrank_split, no_batch, triangular
from opdsl.kinds.linalg_build import (auto, dimscale, fill, inv, logdet, operator_form_rule, span_of, tadd, tscale,
                                      transpose)
from opdsl.kinds.rule import As, NoneOf, Rule


# ---- a cheap operator plus low-rank terms ----------------------------------------------------------

def _lowrank_parts(g, lows, span):
    """U, V with Σ c_i U_i V_iᵀ = U Vᵀ (U_i scaled by c_i, side by side)."""
    us = [u if c == 1.0 else g.add("tscale", [u], {"c": float(c)}, span=span) for u, _, c in lows]
    vs = [v for _, v, _ in lows]
    if len(lows) == 1:
        return us[0], vs[0]
    return g.add("tconcat", us, span=span), g.add("tconcat", vs, span=span)


def _capacitance(g, a, u, v, span):
    """(A⁻¹, A⁻¹U, A⁻ᵀV, C = I + Vᵀ A⁻¹ U as an operator) for the Woodbury identity and the determinant lemma."""
    ainv = inv(g, a, span)
    p = g.add("apply", [ainv, u], span=span)
    atinv = ainv if "symmetric" in g.type(a).props else inv(g, transpose(g, a, span), span)
    q = p if (atinv == ainv and u == v) else g.add("apply", [atinv, v], span=span)
    r = g.type(u).shape[1]
    vtp = g.add("apply", [g.add("dense", [g.add("tT", [v], span=span)], span=span), p], span=span)
    c = g.add("sum", [g.add("eye", [], {"n": r}, span=span), g.add("dense", [vtp], span=span)], span=span)
    return ainv, p, q, c


def _rest(g, rest, span):
    return rest[0] if len(rest) == 1 else g.add("sum", list(rest), span=span)


# ---- inverses ----------------------------------------------------------------------------------------

def _inv_diag(g, m):
    """inv(diag(d)) = diag(1 / d)."""
    return g.add("diag", [g.add("ewise", [m["d"]], {"fn": "recip"}, span=span_of(g, m))], span=span_of(g, m))


def _inv_scale(g, m):
    """inv(c A) = (1/c) inv(A)."""
    return g.add("scale", [inv(g, m["A"], span_of(g, m))], {"c": 1.0 / g[m["S"]].attrs["c"]}, span=span_of(g, m))


def _inv_parts(kind):
    """inv(A ⊗ B) = inv(A) ⊗ inv(B); inv(blockdiag(A, B)) = blockdiag(inv(A), inv(B)) (square factors)."""
    def build(g, m):
        xs = m["xs"]
        if not all_square(g, xs):
            return None
        return g.add(kind, [inv(g, x, span_of(g, m)) for x in xs], span=span_of(g, m))
    return build


def _inv_compose(g, m):
    """inv(A B C) = inv(C) inv(B) inv(A) for square factors."""
    xs = m["xs"]
    if not all_square(g, xs):
        return None
    return g.add("compose", [inv(g, x, span_of(g, m)) for x in reversed(xs)], span=span_of(g, m))


def _inv_woodbury(g, m):
    """inv(A + U Vᵀ) = A⁻¹ - A⁻¹U (I + Vᵀ A⁻¹ U)⁻¹ Vᵀ A⁻¹ (Woodbury), A with a cheap inverse."""
    split = lowrank_split(g, m["xs"])
    if split is None:
        return None
    span = span_of(g, m)
    lows, rest = split
    u, v = _lowrank_parts(g, lows, span)
    ainv, p, q, c = _capacitance(g, _rest(g, rest, span), u, v, span)
    corr = g.add("compose", [g.add("dense", [p], span=span), inv(g, c, span),
                             g.add("dense", [g.add("tT", [q], span=span)], span=span)], span=span)
    return g.add("sum", [ainv, g.add("scale", [corr], {"c": -1.0}, span=span)], span=span)


INV_RULES = [
    # inv(X @ Y) = inv(X Y as operators), inv(c W) = inv(c W as an operator), ...
    operator_form_rule("inv", auto),
    # inv(inv(A)) = A
    Rule("inv-involution", "inv(inv(A)) = A", ("inv", ("inv", "A")), lambda g, m: m["A"]),
    # inv(I) = I
    Rule("inv-eye", "inv(I) = I", ("inv", ("eye",)), lambda g, m: g[m["_"]].operands[0], where=auto),
    # inv(Q) = Qᵀ for an orthogonal Q (Householder products, permutations, ...)
    Rule("inv-orthogonal", "inv(Q) = Qᵀ for orthogonal Q", ("inv", "A"),
         lambda g, m: transpose(g, m["A"], span_of(g, m)),
         where=lambda g, m: auto(g, m) and "orthogonal" in g.type(m["A"]).props),
    # inv(diag(d)) = diag(1/d)
    Rule("inv-diag", "inv(diag(d)) = diag(1/d)", ("inv", ("diag", "d")), _inv_diag, where=auto),
    # inv(cA) = (1/c) inv(A)
    Rule("inv-scale", "inv(cA) = (1/c) inv(A)", ("inv", As("S", ("scale", "A"))), _inv_scale, where=auto),
    # inv(A ⊗ B) = inv(A) ⊗ inv(B)
    Rule("inv-kron", "inv(A⊗B) = inv(A)⊗inv(B)", ("inv", ("kron", "*xs")), _inv_parts("kron"), where=auto),
    # inv(blockdiag(A, B)) = blockdiag(inv(A), inv(B))
    Rule("inv-blockdiag", "inv(blockdiag(A, B)) = blockdiag(inv(A), inv(B))", ("inv", ("blockdiag", "*xs")),
         _inv_parts("blockdiag"), where=auto),
    # inv(AB) = inv(B) inv(A)
    Rule("inv-compose", "inv(AB) = inv(B) inv(A) (square factors)", ("inv", ("compose", "*xs")), _inv_compose,
         where=auto),
    # inv(A + UVᵀ) = A⁻¹ - A⁻¹U (I + VᵀA⁻¹U)⁻¹ VᵀA⁻¹
    Rule("inv-woodbury", "inv(A + UVᵀ) = A⁻¹ - A⁻¹U (I + VᵀA⁻¹U)⁻¹ VᵀA⁻¹ (A = diag, kron, ...)",
         ("inv", ("sum", "*xs")), _inv_woodbury, where=auto),
]


# ---- log-determinants ----------------------------------------------------------------------------------

def _ld_kron(g, m):
    """logdet(A ⊗ B) = n_B logdet(A) + n_A logdet(B) (square factors; N / n_i for more)."""
    xs = m["xs"]
    if not all_square(g, xs):
        return None
    span = span_of(g, m)
    sizes = [g.type(x).rows for x in xs]
    terms = []
    for i, x in enumerate(xs):
        others = sp.Integer(1)
        for j, s in enumerate(sizes):
            if j != i:
                others = others * s
        terms.append(dimscale(g, logdet(g, x, span), others, span))
    return tadd(g, terms, span)


def _ld_sum_of(g, m):
    """logdet(blockdiag(A, B)) = logdet(A) + logdet(B); logdet(AB) = logdet(A) + logdet(B) (square factors)."""
    xs = m["xs"]
    if not all_square(g, xs) or not no_batch(g, xs):
        return None
    return tadd(g, [logdet(g, x, span_of(g, m)) for x in xs], span_of(g, m))


def _ld_diag(g, m):
    """logdet(diag(d)) = Σ log |d_i|."""
    span = span_of(g, m)
    return g.add("tsum", [g.add("ewise", [m["d"]], {"fn": "logabs"}, span=span)], span=span)


def _ld_zero(g, m):
    """logdet(Q) = 0 for an orthogonal Q."""
    t = g.type(m["_"])
    return fill(g, t.shape, 0.0, t.dtype, span_of(g, m))


def _ld_scale(g, m):
    """logdet(cA) = n log |c| + logdet(A)."""
    span = span_of(g, m)
    t = g.type(m["_"])
    c = g[m["S"]].attrs["c"]
    if c == 0:          # log 0: decline (logdet of the zero matrix is computed as written)
        return None
    ld = logdet(g, m["A"], span)
    if abs(c) == 1.0:
        return ld
    return tadd(g, [ld, dimscale(g, fill(g, t.shape, math.log(abs(c)), t.dtype, span), g.type(m["A"]).rows, span)],
                span)


def _ld_triangular(g, m):
    """logdet(T) = Σ log |T_ii| for a triangular T."""
    span = span_of(g, m)
    d = g.add("diag_of", [m["A"]], span=span)
    return g.add("tsum", [g.add("ewise", [d], {"fn": "logabs"}, span=span)], span=span)


def _ld_lemma(g, m):
    """logdet(A + UVᵀ) = logdet(A) + logdet(I + Vᵀ A⁻¹ U) (matrix determinant lemma)."""
    split = lowrank_split(g, m["xs"])
    if split is None:
        return None
    span = span_of(g, m)
    lows, rest = split
    u, v = _lowrank_parts(g, lows, span)
    a = _rest(g, rest, span)
    _, _, _, c = _capacitance(g, a, u, v, span)
    return tadd(g, [logdet(g, a, span), logdet(g, c, span)], span)


# Kinds whose log-determinant the rules above take apart (even when they decline, e.g. for a batched
# product): the triangular rule is for the other kinds, leaves whose triangularity is declared or derived.
STRUCTURED = NoneOf("compose", "kron", "blockdiag", "scale", "transpose", "inv")

LOGDET_RULES = [
    # logdet(X @ Y) = logdet(X Y as operators), ...
    operator_form_rule("logdet"),
    # logdet(Q) = 0 for orthogonal Q (permutations, Householder products, I)
    Rule("logdet-orthogonal", "logdet(Q) = 0 for orthogonal Q", ("logdet", "A"), _ld_zero,
         where=lambda g, m: "orthogonal" in g.type(m["A"]).props),
    # logdet(A ⊗ B) = n_B logdet(A) + n_A logdet(B)
    Rule("logdet-kron", "logdet(A⊗B) = n_B logdet(A) + n_A logdet(B)", ("logdet", ("kron", "*xs")), _ld_kron),
    # logdet(blockdiag(A, B)) = logdet(A) + logdet(B)
    Rule("logdet-blockdiag", "logdet(blockdiag(A, B)) = logdet(A) + logdet(B)", ("logdet", ("blockdiag", "*xs")),
         _ld_sum_of),
    # logdet(AB) = logdet(A) + logdet(B)
    Rule("logdet-compose", "logdet(AB) = logdet(A) + logdet(B) (square factors)", ("logdet", ("compose", "*xs")),
         _ld_sum_of),
    # logdet(diag(d)) = Σ log|d_i|
    Rule("logdet-diag", "logdet(diag(d)) = Σ log |d_i|", ("logdet", ("diag", "d")), _ld_diag),
    # logdet(cA) = n log|c| + logdet(A)
    Rule("logdet-scale", "logdet(cA) = n log |c| + logdet(A)", ("logdet", As("S", ("scale", "A"))), _ld_scale),
    # logdet(Aᵀ) = logdet(A)
    Rule("logdet-transpose", "logdet(Aᵀ) = logdet(A)", ("logdet", ("transpose", "A")),
         lambda g, m: logdet(g, m["A"], span_of(g, m))),
    # logdet(inv(A)) = -logdet(A)
    Rule("logdet-inv", "logdet(inv(A)) = -logdet(A)", ("logdet", ("inv", "A")),
         lambda g, m: tscale(g, logdet(g, m["A"], span_of(g, m)), -1.0, span_of(g, m))),
    # logdet(A + UVᵀ) = logdet(A) + logdet(I + VᵀA⁻¹U)
    Rule("logdet-lemma", "logdet(A + UVᵀ) = logdet(A) + logdet(I + VᵀA⁻¹U) (determinant lemma)",
         ("logdet", ("sum", "*xs")), _ld_lemma),
    # logdet(T) = Σ log|T_ii| for a triangular T that none of the structural rules above takes apart
    Rule("logdet-triangular", "logdet(T) = Σ log |T_ii| for triangular T", ("logdet", As("A", (STRUCTURED, "*"))),
         _ld_triangular, where=lambda g, m: triangular(g, m["A"]) in ("lower", "upper")),
]

"""Algebraic simplification: tables of identities applied by the rewrite driver.

Every rule states its identity (the `identity` field, shown by `opdsl explain`)
and has a soundness test in tests/test_rules.py: dense before == dense after
on random instances, non-square factors included, and the rule must fire.

Rules only restructure; they never make a program more expensive to apply.
Choices that depend on sizes (the order of a product, distributing a sum over
an application, combining neighbours first) belong to passes/reassociate.py,
which asks the cost model.
"""
from __future__ import annotations

import math

import sympy as sp

from opdsl.ir import Graph

from .rewrite import Rule, RuleTable, RewriteLog, rewrite


# ---- helpers -----------------------------------------------------------------

def same(g: Graph, a, b) -> bool:
    """Two dims are equal (fast structural check first, then the dim table)."""
    return a == b or g.dims.equal(a, b)


def _node(g, m):
    return g[m["_"]]


def _rebuild(g, n, ops):
    """kind(ops) with n's attributes, or the single operand when one is left."""
    if len(ops) == 1 and n.kind in ("compose", "sum", "kron"):
        return ops[0]
    return g.add(n.kind, ops, n.attrs, n.span)


def _representable(c, *factors) -> bool:
    """A constant the rules combined (a product or sum of the program's constants) is a finite
    float64 that is 0 only when one of them is: otherwise the rule declines and the constants stay
    apart, as written (1e300 * (1e300 * A) must not become `inf * A` in the generated code)."""
    return math.isfinite(c) and (c != 0 or any(f == 0 for f in factors) or not factors)


def _zeros(g, t, span):
    return g.add("zeros", [], {"m": t.rows, "n": t.cols}, span=span)


# ---- transposes ----------------------------------------------------------------

def _push_transpose(g, m):
    """Aᵀ = kind(A).transpose(A): each kind knows its own transpose."""
    a = m["A"]
    if "symmetric" in g.type(a).props:
        return a
    return g.spec(a).transpose(g, a)


def _transpose_rule(kind, identity):
    return Rule(f"transpose-{kind}", identity, ("transpose", (kind, "*xs")),
                lambda g, m: _push_transpose(g, {"A": g[m["_"]].operands[0]}))


TRANSPOSE_RULES = [
    # (Aᵀ)ᵀ = A
    Rule("transpose-involution", "(Aᵀ)ᵀ = A", ("transpose", ("transpose", "A")), lambda g, m: m["A"]),
    # (AB)ᵀ = BᵀAᵀ
    _transpose_rule("compose", "(AB)ᵀ = BᵀAᵀ"),
    # (A⊗B)ᵀ = Aᵀ⊗Bᵀ
    _transpose_rule("kron", "(A⊗B)ᵀ = Aᵀ⊗Bᵀ"),
    # blockdiag(A, B)ᵀ = blockdiag(Aᵀ, Bᵀ)
    _transpose_rule("blockdiag", "blockdiag(A, B)ᵀ = blockdiag(Aᵀ, Bᵀ)"),
    # blockdiag(W)ᵀ = blockdiag(Wᵀ) with each block transposed
    _transpose_rule("blockdiag_batched", "blockdiag(W)ᵀ = blockdiag(W[i]ᵀ for each block i)"),
    # diag(d)ᵀ = diag(d)
    _transpose_rule("diag", "diag(d)ᵀ = diag(d)"),
    # lowrank(U, V)ᵀ = (U Vᵀ)ᵀ = V Uᵀ = lowrank(V, U)
    _transpose_rule("lowrank", "lowrank(U, V)ᵀ = lowrank(V, U)"),
    # L(mn, m)ᵀ = L(mn, m)⁻¹ = L(mn, n)
    _transpose_rule("perm", "perm(m, n)ᵀ = perm(m, n)⁻¹ = perm(n, m)"),
    # (A + B)ᵀ = Aᵀ + Bᵀ
    _transpose_rule("sum", "(A + B)ᵀ = Aᵀ + Bᵀ"),
    # (cA)ᵀ = c Aᵀ
    _transpose_rule("scale", "(cA)ᵀ = c Aᵀ"),
    # (W as an operator)ᵀ = (Wᵀ as an operator)
    _transpose_rule("dense", "dense(W)ᵀ = dense(Wᵀ)"),
    # Iᵀ = I
    _transpose_rule("eye", "Iᵀ = I"),
    # 0ᵀ = 0 (m×n becomes n×m)
    _transpose_rule("zeros", "0[m×n]ᵀ = 0[n×m]"),
    # Aᵀ = A for a symmetric A; otherwise any other kind's own transpose
    Rule("transpose-pushdown", "Aᵀ = kind(A).transpose(A)", ("transpose", "A"), _push_transpose),
    # (Wᵀ)ᵀ = W for tensors
    Rule("tensor-transpose-involution", "(Wᵀ)ᵀ = W", ("tT", ("tT", "W")), lambda g, m: m["W"]),
]


# ---- associativity, identity and zero ----------------------------------------------

def _flatten(kind):
    """kind(..., kind(a, b), ...) = kind(..., a, b, ...) (associativity)."""
    def build(g, m):
        n = _node(g, m)
        ops = []
        changed = False
        for o in n.operands:
            if g.kind(o) == kind and g[o].attrs == n.attrs:
                ops.extend(g[o].operands)
                changed = True
            else:
                ops.append(o)
        # associativity keeps the type (shape, dtype and the common properties)
        return g.add(kind, ops, n.attrs, n.span, type=n.type) if changed else None
    return build


def _drop_identity(g, m):
    """A I B = A B."""
    n = _node(g, m)
    ops = [o for o in n.operands if g.kind(o) != "eye"]
    if len(ops) == len(n.operands):
        return None
    if not ops:
        return n.operands[0]
    return _rebuild(g, n, ops)


def _has_batch(g, v):
    return bool(g.type(v).batch)


def _absorb_zero(g, m):
    """A 0 B = 0 and A ⊗ 0 = 0 (the zero of the product's shape)."""
    n = _node(g, m)
    if not any(g.kind(o) == "zeros" for o in n.operands) or _has_batch(g, n.id):
        return None
    return _zeros(g, n.type, n.span)


def _sum_drop_zero(g, m):
    """A + 0 = A."""
    n = _node(g, m)
    ops = [o for o in n.operands if g.kind(o) != "zeros"]
    if len(ops) == len(n.operands) or _has_batch(g, n.id):
        return None
    if not ops:
        return _zeros(g, n.type, n.span)
    return _rebuild(g, n, ops)


def _kron_eyes(g, m):
    """I_a ⊗ I_b = I_ab (adjacent identity factors)."""
    n = _node(g, m)
    out = [n.operands[0]]
    changed = False
    for o in n.operands[1:]:
        if g.kind(o) == "eye" and g.kind(out[-1]) == "eye":
            out[-1] = g.add("eye", [], {"n": g[out[-1]].attrs["n"] * g[o].attrs["n"]}, span=n.span)
            changed = True
        else:
            out.append(o)
    return _rebuild(g, n, out) if changed else None


STRUCTURE_RULES = [
    # (AB)C = A(BC) = ABC
    Rule("compose-flatten", "(AB)C = A(BC) = ABC", ("compose", "*xs"), _flatten("compose")),
    # (A+B)+C = A+B+C
    Rule("sum-flatten", "(A+B)+C = A+B+C", ("sum", "*xs"), _flatten("sum")),
    # (A⊗B)⊗C = A⊗(B⊗C) = A⊗B⊗C
    Rule("kron-flatten", "(A⊗B)⊗C = A⊗(B⊗C) = A⊗B⊗C", ("kron", "*xs"), _flatten("kron")),
    # A I B = A B
    Rule("compose-identity", "A I = I A = A", ("compose", "*xs"), _drop_identity),
    # I x = x
    Rule("apply-identity", "I x = x", ("apply", ("eye",), "x"), lambda g, m: m["x"]),
    # I_a ⊗ I_b = I_ab
    Rule("kron-identity", "I_a ⊗ I_b = I_ab", ("kron", "*xs"), _kron_eyes),
    # A 0 B = 0
    Rule("compose-zero", "A 0 B = 0", ("compose", "*xs"), _absorb_zero),
    # A ⊗ 0 = 0
    Rule("kron-zero", "A ⊗ 0 = 0", ("kron", "*xs"), _absorb_zero),
    # A + 0 = A
    Rule("sum-zero", "A + 0 = A", ("sum", "*xs"), _sum_drop_zero),
]


# ---- scalars ----------------------------------------------------------------------

def _fold_scale(g, m):
    """a (b A) = (ab) A."""
    outer = g[m["_"]]
    inner = g[outer.operands[0]]       # the matched inner scale; m["B"] is its operand
    c = outer.attrs["c"] * inner.attrs["c"]
    if not _representable(c, outer.attrs["c"], inner.attrs["c"]):
        return None
    return g.add("scale", [m["B"]], {"c": c}, outer.span)


def _fold_tscale(g, m):
    """a (b x) = (ab) x."""
    outer = g[m["_"]]
    inner = g[outer.operands[0]]       # the matched inner tscale; m["y"] is its operand
    c = outer.attrs["c"] * inner.attrs["c"]
    if not _representable(c, outer.attrs["c"], inner.attrs["c"]):
        return None
    return g.add("tscale", [m["y"]], {"c": c}, outer.span)


def _scale_one(g, m):
    """1 A = A."""
    return m["A"] if g[m["_"]].attrs["c"] == 1.0 else None


def _scale_zero(g, m):
    """0 A = 0."""
    n = _node(g, m)
    if n.attrs["c"] != 0 or _has_batch(g, n.id):
        return None
    return _zeros(g, n.type, n.span)


def _pull_scale(g, m):
    """A (cB) C = c (A B C) and A ⊗ cB = c (A ⊗ B): scalars move to the outside."""
    n = _node(g, m)
    c = 1.0
    ops = []
    cs = []
    for o in n.operands:
        if g.kind(o) == "scale":
            c *= g[o].attrs["c"]
            cs.append(g[o].attrs["c"])
            ops.append(g[o].operands[0])
        else:
            ops.append(o)
    if c == 1.0 and ops == list(n.operands):
        return None
    if not _representable(c, *cs):
        return None
    inner = g.add(n.kind, ops, n.attrs, n.span)
    return inner if c == 1.0 else g.add("scale", [inner], {"c": c}, n.span)


def _apply_scale(g, m):
    """(cA) x = c (A x)."""
    n = _node(g, m)
    a = g[m["S"]]
    return g.add("tscale", [g.add("apply", [a.operands[0], m["x"]], span=n.span)], {"c": a.attrs["c"]}, n.span)


def _collect_terms(g, m):
    """aA + bA = (a+b)A: like terms of a sum are collected (a zero coefficient drops the term)."""
    n = _node(g, m)
    coef: dict[int, float] = {}
    order: list[int] = []
    for o in n.operands:
        c, base = 1.0, o
        if g.kind(o) == "scale":
            c, base = g[o].attrs["c"], g[o].operands[0]
        if base not in coef:
            order.append(base)
            coef[base] = 0.0
        coef[base] += c
    if len(order) == len(n.operands):
        return None
    if _has_batch(g, n.id) or not all(math.isfinite(c) for c in coef.values()):
        return None
    ops = []
    for base in order:
        c = coef[base]
        if c == 0:
            continue
        ops.append(base if c == 1.0 else g.add("scale", [base], {"c": c}, n.span))
    if not ops:
        return _zeros(g, n.type, n.span)
    return _rebuild(g, n, ops)


def _collect_tensor_terms(g, m, limit: int = 8):
    """a·x + b·x = (a+b)·x over a tree of tensor sums (at most `limit` terms, so long sums stay linear)."""
    n = _node(g, m)
    terms: list[tuple[float, int]] = []
    stack = [(1.0, n.id)]
    while stack:
        c, v = stack.pop()
        if len(terms) + len(stack) > limit:
            return None
        k = g.kind(v)
        if k == "tadd":
            stack.extend((c, o) for o in reversed(g[v].operands))
        elif k == "tscale":
            if not _representable(c * g[v].attrs["c"], c, g[v].attrs["c"]):
                return None
            stack.append((c * g[v].attrs["c"], g[v].operands[0]))
        else:
            terms.append((c, v))
    coef: dict[int, float] = {}
    order = []
    for c, v in terms:
        if v not in coef:
            order.append(v)
            coef[v] = 0.0
        coef[v] += c
    if len(order) == len(terms) or not all(_representable(c) for c in coef.values()):
        return None
    kept = [(coef[v], v) for v in order if coef[v] != 0]
    if not kept:
        return None        # everything cancels; there is no tensor zero to return
    parts = [v if c == 1.0 else g.add("tscale", [v], {"c": c}, n.span) for c, v in kept]
    out = parts[0]
    for p in parts[1:]:
        out = g.add("tadd", [out, p], span=n.span)
    return out


SCALAR_RULES = [
    # a(bA) = (ab)A
    Rule("scale-fold", "a(bA) = (ab)A", ("scale", ("scale", "B")), _fold_scale),
    # 1A = A
    Rule("scale-one", "1A = A", ("scale", "A"), _scale_one),
    # 0A = 0
    Rule("scale-zero", "0A = 0", ("scale", "A"), _scale_zero),
    # A(cB)C = c(ABC)
    Rule("compose-scale", "A (cB) C = c (A B C)", ("compose", "*xs"), _pull_scale),
    # A ⊗ cB = c(A ⊗ B)
    Rule("kron-scale", "A ⊗ cB = c (A ⊗ B)", ("kron", "*xs"), _pull_scale),
    # (cA)x = c(Ax)
    Rule("apply-scale", "(cA) x = c (A x)", ("apply", "S", "x"), _apply_scale,
         where=lambda g, m: g.kind(m["S"]) == "scale"),
    # aA + bA = (a+b)A
    Rule("sum-collect", "aA + bA = (a+b)A", ("sum", "*xs"), _collect_terms),
    # a(bx) = (ab)x for tensors
    Rule("tscale-fold", "a(bx) = (ab)x", ("tscale", ("tscale", "y")), _fold_tscale),
    # ax + bx = (a+b)x for tensors
    Rule("tadd-collect", "a·x + b·x = (a+b)·x (tensors)", ("tadd", "*xs"), _collect_tensor_terms),
    # 1x = x
    Rule("tscale-one", "1x = x", ("tscale", "x"), lambda g, m: m["x"] if g[m["_"]].attrs["c"] == 1.0 else None),
]


# ---- products of neighbours ------------------------------------------------------------

def _pairwise(fn):
    """compose(..., A, B, ...) = compose(..., fn(A, B), ...) for every adjacent pair fn accepts.

    One left-to-right scan merges every pair it can (a merged result is tried
    against the next factor), so a long chain needs one firing, not one per pair.
    """
    def build(g, m):
        n = _node(g, m)
        out = [n.operands[0]]
        changed = False
        for o in n.operands[1:]:
            r = fn(g, out[-1], o, n.span)
            if r is not None:
                out[-1] = r
                changed = True
            else:
                out.append(o)
        if not changed:
            return None
        out = [o for o in out if g.kind(o) != "eye"] or [out[0]]
        return _rebuild(g, n, out)
    return build


def _mixed_product(g, a, b, span):
    """(A⊗B)(C⊗D) = (AC)⊗(BD) when A, C and B, D can be multiplied."""
    if g.kind(a) != "kron" or g.kind(b) != "kron":
        return None
    xs, ys = g[a].operands, g[b].operands
    if len(xs) != len(ys):
        return None
    if not all(same(g, g.type(x).cols, g.type(y).rows) for x, y in zip(xs, ys)):
        return None
    return g.add("kron", [g.add("compose", [x, y], span=span) for x, y in zip(xs, ys)], span=span)


def _blockdiag_product(g, a, b, span):
    """blockdiag(A, B) blockdiag(C, D) = blockdiag(AC, BD) when the partitions align."""
    if g.kind(a) != "blockdiag" or g.kind(b) != "blockdiag":
        return None
    xs, ys = g[a].operands, g[b].operands
    if len(xs) != len(ys):
        return None
    if not all(same(g, g.type(x).cols, g.type(y).rows) for x, y in zip(xs, ys)):
        return None
    return g.add("blockdiag", [g.add("compose", [x, y], span=span) for x, y in zip(xs, ys)], span=span)


def _diag_product(g, a, b, span):
    """diag(d) diag(e) = diag(d ∘ e) (the entrywise product, computed as diag(d) e)."""
    if g.kind(a) != "diag" or g.kind(b) != "diag":
        return None
    d, e = g[a].operands[0], g[b].operands[0]
    return g.add("diag", [g.add("apply", [a, e], span=span)], span=span)


def _perm_product(g, a, b, span):
    """L(N, s) L(N, t) = L(N, st mod (N-1)) when that divides N; L(mn, m) L(mn, n) = I.

    A stride permutation L(N, s) maps index i to i·s mod (N-1) (N-1 fixed), so
    products multiply the strides modulo N-1.
    """
    if g.kind(a) != "perm" or g.kind(b) != "perm":
        return None
    pa, pb = g[a].attrs, g[b].attrs
    N = pa["m"] * pa["n"]
    if same(g, pa["m"], pb["n"]) and same(g, pa["n"], pb["m"]):
        return g.add("eye", [], {"n": N}, span=span)
    vals = [g.dims.value(x) for x in (pa["m"], pa["n"], pb["m"], pb["n"])]
    if any(v is None for v in vals):
        return None
    sa, na, sb, nb = vals
    n_total = sa * na
    if n_total != sb * nb or n_total < 2:
        return None
    c = (sa * sb) % (n_total - 1)
    if c in (0, 1):
        return g.add("eye", [], {"n": N}, span=span)
    if n_total % c:
        return None
    return g.add("perm", [], {"m": sp.Integer(c), "n": sp.Integer(n_total // c)}, span=span)


PRODUCT_RULES = [
    # (A⊗B)(C⊗D) = (AC)⊗(BD)
    Rule("kron-mixed-product", "(A⊗B)(C⊗D) = (AC)⊗(BD)", ("compose", "*xs"), _pairwise(_mixed_product)),
    # blockdiag(A, B) blockdiag(C, D) = blockdiag(AC, BD)
    Rule("blockdiag-product", "blockdiag(A, B) blockdiag(C, D) = blockdiag(AC, BD)", ("compose", "*xs"),
         _pairwise(_blockdiag_product)),
    # diag(d) diag(e) = diag(d ∘ e)
    Rule("diag-product", "diag(d) diag(e) = diag(d ∘ e)", ("compose", "*xs"), _pairwise(_diag_product)),
    # L(N, s) L(N, t) = L(N, st mod N-1)
    Rule("perm-product", "perm(m, n) perm(n, m) = I; L(N,s) L(N,t) = L(N, st mod (N-1))", ("compose", "*xs"),
         _pairwise(_perm_product)),
]


RULES = TRANSPOSE_RULES + STRUCTURE_RULES + SCALAR_RULES + PRODUCT_RULES
TABLE = RuleTable(RULES)


def simplify(g: Graph, log: RewriteLog | None = None, rules=None) -> Graph:
    return rewrite(g, TABLE if rules is None else rules, log)


# ---- inverses, log-determinants, diagonals, traces (passes/linalg_rules.py, issue 7) ----------------
# Their rules run in the same fixed point; RULES above stays this module's own table (tests/test_rules.py),
# ALL_RULES is what simplify applies.
from .linalg_rules import LINALG_RULES  # noqa: E402

ALL_RULES = RULES + LINALG_RULES
TABLE = RuleTable(ALL_RULES)

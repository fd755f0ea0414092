"""Algebraic simplification: tables of identities applied by the rewrite driver.

Every rule states its identity (the `identity` field, shown by `opdsl explain`)
and has a soundness test in tests/test_simplify.py: dense before == dense after
on random instances, non-square factors included, and the rule must fire.

Rules only restructure; they never make a program more expensive to apply.
Choices that depend on sizes (the order of a product, distributing a sum over
an application, combining neighbours first) belong to passes/reassociate.py,
which asks the cost model.

The table simplify applies is assembled here, once (all_rules / rule_table):
this module's rules, the linear-algebra rules (passes/linalg_rules.py), then
the rules every kind carries (Kind.rules).  Rules check kinds through their
patterns (opdsl/kinds/rule.py: sets of kinds, adjacent pairs in a product),
not in Python.
"""
from __future__ import annotations

import math

import sympy as sp

from opdsl.ir import Graph
from opdsl.kinds import REGISTRY

from .linalg_rules import LINALG_RULES
from .rewrite import As, Rule, RuleTable, RewriteLog, Window, match_window, matches, rewrite


# ---- helpers -----------------------------------------------------------------

def same(g: Graph, a, b) -> bool:
    """Two dims are equal (fast structural check first, then the dim table)."""
    return a == b or g.dims.equal(a, b)


def _node(g, m):
    return g[m["_"]]


def _rebuild(g, n, ops):
    """kind(ops) with n's attributes, or the single operand when one is left of a product, sum or
    Kronecker product (a kind that needs at least two)."""
    if len(ops) == 1 and g.spec(n.id).arity[0] >= 2:
        return ops[0]
    return g.add(n.kind, ops, n.attrs, n.span)


def _representable(c, *factors) -> bool:
    """A constant the rules combined (a product or sum of the program's constants) is a finite
    float64 that is 0 only when one of them is: otherwise the rule declines and the constants stay
    apart, as written (1e300 * (1e300 * A) must not become `inf * A` in the generated code)."""
    return math.isfinite(c) and (c != 0 or any(f == 0 for f in factors) or not factors)


def _zeros(g, t, span):
    return g.add("zeros", [], {"m": t.rows, "n": t.cols}, span=span)


IDENTITY = ("eye",)
ZERO = ("zeros",)
SCALED = ("scale", "_")
TENSOR_SUM = ("tadd", "*")
TENSOR_SCALED = ("tscale", "_")


def _is(g, v, pattern) -> bool:
    return matches(g, pattern, v) is not None


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
    ops = [o for o in n.operands if not _is(g, o, IDENTITY)]
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
    if _has_batch(g, n.id):
        return None
    return _zeros(g, n.type, n.span)


def _sum_drop_zero(g, m):
    """A + 0 = A."""
    n = _node(g, m)
    ops = [o for o in n.operands if not _is(g, o, ZERO)]
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
        if _is(g, o, IDENTITY) and _is(g, out[-1], IDENTITY):
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
    Rule("compose-identity", "A I = I A = A", ("compose", Window(IDENTITY)), _drop_identity),
    # I x = x
    Rule("apply-identity", "I x = x", ("apply", ("eye",), "x"), lambda g, m: m["x"]),
    # I_a ⊗ I_b = I_ab
    Rule("kron-identity", "I_a ⊗ I_b = I_ab", ("kron", Window(IDENTITY, IDENTITY)), _kron_eyes),
    # A 0 B = 0
    Rule("compose-zero", "A 0 B = 0", ("compose", Window(ZERO)), _absorb_zero),
    # A ⊗ 0 = 0
    Rule("kron-zero", "A ⊗ 0 = 0", ("kron", Window(ZERO)), _absorb_zero),
    # A + 0 = A
    Rule("sum-zero", "A + 0 = A", ("sum", Window(ZERO)), _sum_drop_zero),
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
        if _is(g, o, SCALED):
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
    return g.add("tscale", [g.add("apply", [m["A"], m["x"]], span=n.span)], {"c": g[m["S"]].attrs["c"]}, n.span)


def _collect_terms(g, m):
    """aA + bA = (a+b)A: like terms of a sum are collected (a zero coefficient drops the term)."""
    n = _node(g, m)
    coef: dict[int, float] = {}
    order: list[int] = []
    for o in n.operands:
        c, base = 1.0, o
        if _is(g, o, SCALED):
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
        if _is(g, v, TENSOR_SUM):
            stack.extend((c, o) for o in reversed(g[v].operands))
        elif _is(g, v, TENSOR_SCALED):
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
    Rule("compose-scale", "A (cB) C = c (A B C)", ("compose", Window(SCALED)), _pull_scale),
    # A ⊗ cB = c(A ⊗ B)
    Rule("kron-scale", "A ⊗ cB = c (A ⊗ B)", ("kron", Window(SCALED)), _pull_scale),
    # (cA)x = c(Ax)
    Rule("apply-scale", "(cA) x = c (A x)", ("apply", As("S", ("scale", "A")), "x"), _apply_scale),
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

def product_rule(name, identity, left, right, merge):
    """A rule for compose(..., A, B, ...) = compose(..., merge(A, B), ...) on adjacent factors A, B
    that match the patterns `left` and `right`; merge(g, bindings, span) builds the product or declines.

    One left-to-right scan merges every pair it can (a merged result is tried against the next
    factor), so a long chain needs one firing, not one per pair; identities a merge leaves
    (perm(m, n) perm(n, m) = I) are dropped.
    """
    pair = Window(left, right)

    def build(g, m):
        n = _node(g, m)
        out = [n.operands[0]]
        changed = False
        for o in n.operands[1:]:
            b: dict = {}
            r = merge(g, b, n.span) if match_window(g, pair, (out[-1], o), b) else None
            if r is not None:
                out[-1] = r
                changed = True
            else:
                out.append(o)
        if not changed:
            return None
        out = [o for o in out if not _is(g, o, IDENTITY)] or [out[0]]
        return _rebuild(g, n, out)

    return Rule(name, identity, ("compose", pair), build)


def factorwise_product_rule(kind, name, identity):
    """kind(A, B) kind(C, D) = kind(AC, BD) when A, C and B, D can be multiplied: the mixed-product
    property of the Kronecker product, and the product of block diagonals with aligned partitions."""
    def merge(g, m, span):
        xs, ys = m["xs"], m["ys"]
        if len(xs) != len(ys) or not all(same(g, g.type(x).cols, g.type(y).rows) for x, y in zip(xs, ys)):
            return None
        return g.add(kind, [g.add("compose", [x, y], span=span) for x, y in zip(xs, ys)], span=span)

    return product_rule(name, identity, (kind, "*xs"), (kind, "*ys"), merge)


def _diag_product(g, m, span):
    """diag(d) diag(e) = diag(d ∘ e) (the entrywise product, computed as diag(d) e)."""
    return g.add("diag", [g.add("apply", [m["a"], m["e"]], span=span)], span=span)


def _perm_product(g, m, span):
    """L(N, s) L(N, t) = L(N, st mod (N-1)) when that divides N; L(mn, m) L(mn, n) = I.

    A stride permutation L(N, s) maps index i to i·s mod (N-1) (N-1 fixed), so
    products multiply the strides modulo N-1.
    """
    pa, pb = g[m["a"]].attrs, g[m["b"]].attrs
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
    factorwise_product_rule("kron", "kron-mixed-product", "(A⊗B)(C⊗D) = (AC)⊗(BD)"),
    # blockdiag(A, B) blockdiag(C, D) = blockdiag(AC, BD)
    factorwise_product_rule("blockdiag", "blockdiag-product", "blockdiag(A, B) blockdiag(C, D) = blockdiag(AC, BD)"),
    # diag(d) diag(e) = diag(d ∘ e)
    product_rule("diag-product", "diag(d) diag(e) = diag(d ∘ e)", As("a", ("diag", "d")), ("diag", "e"),
                 _diag_product),
    # L(N, s) L(N, t) = L(N, st mod N-1)
    product_rule("perm-product", "perm(m, n) perm(n, m) = I; L(N,s) L(N,t) = L(N, st mod (N-1))",
                 As("a", ("perm",)), As("b", ("perm",)), _perm_product),
]


RULES = TRANSPOSE_RULES + STRUCTURE_RULES + SCALAR_RULES + PRODUCT_RULES


# ---- the table simplify applies ----------------------------------------------------------

def all_rules() -> list:
    """The simplify table, in order: this module's rules, the linear-algebra rules
    (passes/linalg_rules.py), then every kind's own rules (Kind.rules, in registry order).
    The one place the table is assembled."""
    return RULES + LINALG_RULES + [r for k in REGISTRY.values() for r in k.rules]


_TABLE: list = [None, None]         # (registry snapshot, RuleTable)


def rule_table() -> RuleTable:
    """all_rules() as a RuleTable, rebuilt when a kind is registered (or replaced) after import."""
    key = tuple((name, id(k)) for name, k in REGISTRY.items())
    if _TABLE[0] != key:
        _TABLE[:] = [key, RuleTable(all_rules())]
    return _TABLE[1]


def simplify(g: Graph, log: RewriteLog | None = None, rules=None) -> Graph:
    return rewrite(g, rule_table() if rules is None else rules, log)

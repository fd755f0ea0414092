"""Rules for inverses, log-determinants, diagonals and traces (opdsl/kinds/linalg.py).

Tables of identities in the style of passes/simplify.py (Rule(name, identity,
pattern, build, where)); they run inside simplify's fixed point (simplify.py
appends LINALG_RULES to the table it applies), so `inv(kron(A, B).T)` first has
its transpose pushed down and then splits factor by factor, before
reassociation and lowering.  What no rule rewrites is a leaf, factored when
lowered (Cholesky / triangular / LU, kinds/linalg.py).

Every rule has a soundness test in tests/test_linalg_rules.py: dense before ==
dense after (numpy.linalg on the materialized matrices), and the rule fires.
`logdet` is log |det|, so the rules need no sign bookkeeping.

An explicit method (inv(A, method=lu | cholesky | cg)) asks for that method on A
as written: the inverse rules leave such an inv alone.
"""
from __future__ import annotations

import math

import sympy as sp

from opdsl.kinds.linalg import square, triangular

from .rewrite import Rule


# ---- helpers ---------------------------------------------------------------------------------

def _node(g, m):
    return g[m["_"]]


def _span(g, m):
    return g[m["_"]].span


def _auto(g, m):
    """The matched inv uses method=auto (the rules may restructure it)."""
    return g[m["_"]].attrs.get("method", "auto") == "auto"


def inv(g, a, span):
    return g.add("inv", [a], {"method": "auto"}, span=span)


def transpose(g, a, span):
    return g.add("transpose", [a], span=span)


def fill(g, shape, value, dtype, span):
    return g.add("tfill", [], {"shape": tuple(shape), "value": float(value), "dtype": dtype or "float32"}, span=span)


def tadd(g, xs, span):
    out = xs[0]
    for x in xs[1:]:
        out = g.add("tadd", [out, x], span=span)
    return out


def tscale(g, x, c, span):
    return x if c == 1.0 else g.add("tscale", [x], {"c": float(c)}, span=span)


def dimscale(g, x, c, span):
    c = sp.sympify(c)
    return x if c == 1 else g.add("dimscale", [x], {"c": c}, span=span)


def _no_batch(g, ops):
    return all(not g.type(o).batch for o in ops)


def _same_batch(g, ops):
    b = g.type(ops[0]).batch
    return all(len(g.type(o).batch) == len(b) and all(g.dims.equal(x, y) for x, y in zip(g.type(o).batch, b))
               for o in ops)


def _all_square(g, ops):
    return all(square(g, o) for o in ops)


def _dtype(g, v):
    return g.type(v).dtype or "float32"


# ---- which operators have a cheap inverse (and log-determinant) ----------------------------------

def _monarch_square(g, n):
    ls = g.type(n.operands[0]).shape
    rs = g.type(n.operands[1]).shape
    return g.dims.equal(ls[1], ls[2]) and g.dims.equal(rs[1], rs[2])


CHEAP = {
    "eye": lambda g, n: True,
    "diag": lambda g, n: True,
    "perm": lambda g, n: True,
    "kron": lambda g, n: _all_square(g, n.operands),
    "blockdiag": lambda g, n: _all_square(g, n.operands),
    "blockdiag_batched": lambda g, n: True,
    "circulant": lambda g, n: True,
    "monarch": _monarch_square,
    "inv": lambda g, n: True,
    "scale": lambda g, n: cheap_inverse(g, n.operands[0]),
    "transpose": lambda g, n: cheap_inverse(g, n.operands[0]),
    "compose": lambda g, n: all(square(g, o) and cheap_inverse(g, o) for o in n.operands),
    "sum": lambda g, n: _lowrank_split(g, n.operands) is not None,
}


def cheap_inverse(g, v) -> bool:
    """Whether inv(v) rewrites to something cheaper than factoring the materialized matrix."""
    t = g.type(v)
    if "orthogonal" in t.props or triangular(g, v) is not None:
        return True
    fn = CHEAP.get(g.kind(v))
    return bool(fn(g, g[v])) if fn is not None else False


def _lowrank_split(g, ops):
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
    if not lows or len(rest) != 1 or not _no_batch(g, ops) or not cheap_inverse(g, rest[0]):
        return None
    return lows, rest


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


# ---- matrices written as tensor expressions --------------------------------------------------------------

def _as_operator(g, t, span):
    """The operator form of the matrix expression t (a tensor used as a matrix), or None: each tensor
    kind's `operator_form` (dense(X @ Y) = X dense(Y), dense(cW) = c dense(W), ...)."""
    if len(g.type(t).shape) != 2:
        return None
    return g.spec(t).operator_form(g, t, span)


def _operator_form(fn, where=None):
    """fn(dense(t)) = fn(the operator form of t): the rules below then see the structure."""
    def build(g, m):
        if where is not None and not where(g, m):
            return None
        op = _as_operator(g, m["T"], _span(g, m))
        if op is None:
            return None
        n = g[m["_"]]
        return g.add(fn, [op] + list(n.operands[1:]), n.attrs, span=n.span)
    return build


def _operator_form_rule(fn, where=None):
    return Rule(f"{fn}-of-matrix-expression",
                f"{fn}(X @ Y), {fn}(cW), {fn}(Wᵀ), {fn}(V + W) of matrices = {fn} of the same operators",
                (fn, ("dense", "T")), _operator_form(fn, where))


# ---- inverses ----------------------------------------------------------------------------------------

def _inv_diag(g, m):
    """inv(diag(d)) = diag(1 / d)."""
    return g.add("diag", [g.add("ewise", [m["d"]], {"fn": "recip"}, span=_span(g, m))], span=_span(g, m))


def _inv_scale(g, m):
    """inv(c A) = (1/c) inv(A)."""
    s = g[g[m["_"]].operands[0]]
    return g.add("scale", [inv(g, m["A"], _span(g, m))], {"c": 1.0 / s.attrs["c"]}, span=_span(g, m))


def _inv_parts(kind):
    """inv(A ⊗ B) = inv(A) ⊗ inv(B); inv(blockdiag(A, B)) = blockdiag(inv(A), inv(B)) (square factors)."""
    def build(g, m):
        xs = m["xs"]
        if not _all_square(g, xs):
            return None
        return g.add(kind, [inv(g, x, _span(g, m)) for x in xs], span=_span(g, m))
    return build


def _inv_compose(g, m):
    """inv(A B C) = inv(C) inv(B) inv(A) for square factors."""
    xs = m["xs"]
    if not _all_square(g, xs):
        return None
    return g.add("compose", [inv(g, x, _span(g, m)) for x in reversed(xs)], span=_span(g, m))


def _inv_woodbury(g, m):
    """inv(A + U Vᵀ) = A⁻¹ - A⁻¹U (I + Vᵀ A⁻¹ U)⁻¹ Vᵀ A⁻¹ (Woodbury), A with a cheap inverse."""
    split = _lowrank_split(g, m["xs"])
    if split is None:
        return None
    span = _span(g, m)
    lows, rest = split
    u, v = _lowrank_parts(g, lows, span)
    ainv, p, q, c = _capacitance(g, _rest(g, rest, span), u, v, span)
    corr = g.add("compose", [g.add("dense", [p], span=span), inv(g, c, span),
                             g.add("dense", [g.add("tT", [q], span=span)], span=span)], span=span)
    return g.add("sum", [ainv, g.add("scale", [corr], {"c": -1.0}, span=span)], span=span)


def _inv_circulant(g, m):
    """inv(circulant(c)) = circulant(irfft(1 / rfft(c))) (FFT division); the same for its transpose."""
    n = g[g[m["_"]].operands[0]]
    return g.add("circulant", [g.add("circ_inv", [m["c"]], span=_span(g, m))], n.attrs, span=_span(g, m))


def _inv_monarch(g, m):
    """inv(P₁ blockdiag(L) P₂ blockdiag(R)) = blockdiag(R)⁻¹ P₂ᵀ blockdiag(L)⁻¹ P₁ᵀ (square blocks)."""
    n = g[g[m["_"]].operands[0]]
    if not _monarch_square(g, n):
        return None
    span = _span(g, m)
    wl, wr = n.operands
    l, s, r = g.type(wl).shape
    out = g.add("compose", [inv(g, g.add("blockdiag_batched", [wr], span=span), span),
                            g.add("perm", [], {"m": r, "n": l}, span=span),
                            inv(g, g.add("blockdiag_batched", [wl], span=span), span),
                            g.add("perm", [], {"m": l, "n": s}, span=span)], span=span)
    return transpose(g, out, span) if n.attrs.get("transposed") else out


INV_RULES = [
    # inv(X @ Y) = inv(X Y as operators), inv(c W) = inv(c W as an operator), ...
    _operator_form_rule("inv", _auto),
    # inv(inv(A)) = A
    Rule("inv-involution", "inv(inv(A)) = A", ("inv", ("inv", "A")), lambda g, m: m["A"]),
    # inv(I) = I
    Rule("inv-eye", "inv(I) = I", ("inv", ("eye",)), lambda g, m: g[m["_"]].operands[0], where=_auto),
    # inv(Q) = Qᵀ for an orthogonal Q (Householder products, permutations, ...)
    Rule("inv-orthogonal", "inv(Q) = Qᵀ for orthogonal Q", ("inv", "A"),
         lambda g, m: transpose(g, m["A"], _span(g, m)),
         where=lambda g, m: _auto(g, m) and "orthogonal" in g.type(m["A"]).props),
    # inv(diag(d)) = diag(1/d)
    Rule("inv-diag", "inv(diag(d)) = diag(1/d)", ("inv", ("diag", "d")), _inv_diag, where=_auto),
    # inv(cA) = (1/c) inv(A)
    Rule("inv-scale", "inv(cA) = (1/c) inv(A)", ("inv", ("scale", "A")), _inv_scale, where=_auto),
    # inv(A ⊗ B) = inv(A) ⊗ inv(B)
    Rule("inv-kron", "inv(A⊗B) = inv(A)⊗inv(B)", ("inv", ("kron", "*xs")), _inv_parts("kron"), where=_auto),
    # inv(blockdiag(A, B)) = blockdiag(inv(A), inv(B))
    Rule("inv-blockdiag", "inv(blockdiag(A, B)) = blockdiag(inv(A), inv(B))", ("inv", ("blockdiag", "*xs")),
         _inv_parts("blockdiag"), where=_auto),
    # inv(AB) = inv(B) inv(A)
    Rule("inv-compose", "inv(AB) = inv(B) inv(A) (square factors)", ("inv", ("compose", "*xs")), _inv_compose,
         where=_auto),
    # inv(A + UVᵀ) = A⁻¹ - A⁻¹U (I + VᵀA⁻¹U)⁻¹ VᵀA⁻¹
    Rule("inv-woodbury", "inv(A + UVᵀ) = A⁻¹ - A⁻¹U (I + VᵀA⁻¹U)⁻¹ VᵀA⁻¹ (A = diag, kron, ...)",
         ("inv", ("sum", "*xs")), _inv_woodbury, where=_auto),
    # inv(circulant(c)) = circulant(ifft(1/fft(c)))
    Rule("inv-circulant", "inv(circulant(c)) = circulant(ifft(1 / fft(c)))", ("inv", ("circulant", "c")),
         _inv_circulant, where=_auto),
    # inv(P₁ L P₂ R) = R⁻¹ P₂ᵀ L⁻¹ P₁ᵀ
    Rule("inv-monarch", "inv(monarch(L, R)) = blockdiag(R)⁻¹ P₂ᵀ blockdiag(L)⁻¹ P₁ᵀ",
         ("inv", ("monarch", "L", "R")), _inv_monarch, where=_auto),
]


# ---- log-determinants ----------------------------------------------------------------------------------

def _logdet(g, a, span):
    return g.add("logdet", [a], span=span)


def _ld_kron(g, m):
    """logdet(A ⊗ B) = n_B logdet(A) + n_A logdet(B) (square factors; N / n_i for more)."""
    xs = m["xs"]
    if not _all_square(g, xs):
        return None
    span = _span(g, m)
    sizes = [g.type(x).rows for x in xs]
    terms = []
    for i, x in enumerate(xs):
        others = sp.Integer(1)
        for j, s in enumerate(sizes):
            if j != i:
                others = others * s
        terms.append(dimscale(g, _logdet(g, x, span), others, span))
    return tadd(g, terms, span)


def _ld_sum_of(g, m):
    """logdet(blockdiag(A, B)) = logdet(A) + logdet(B); logdet(AB) = logdet(A) + logdet(B) (square factors)."""
    xs = m["xs"]
    if not _all_square(g, xs) or not _no_batch(g, xs):
        return None
    return tadd(g, [_logdet(g, x, _span(g, m)) for x in xs], _span(g, m))


def _ld_diag(g, m):
    """logdet(diag(d)) = Σ log |d_i|."""
    span = _span(g, m)
    return g.add("tsum", [g.add("ewise", [m["d"]], {"fn": "logabs"}, span=span)], span=span)


def _ld_zero(g, m):
    """logdet(Q) = 0 for an orthogonal Q."""
    t = g.type(m["_"])
    return fill(g, t.shape, 0.0, t.dtype, _span(g, m))


def _ld_scale(g, m):
    """logdet(cA) = n log |c| + logdet(A)."""
    span = _span(g, m)
    s = g[g[m["_"]].operands[0]]
    t = g.type(m["_"])
    c = s.attrs["c"]
    if c == 0:          # log 0: decline (logdet of the zero matrix is computed as written)
        return None
    ld = _logdet(g, m["A"], span)
    if abs(c) == 1.0:
        return ld
    return tadd(g, [ld, dimscale(g, fill(g, t.shape, math.log(abs(c)), t.dtype, span), g.type(m["A"]).rows, span)],
                span)


def _ld_triangular(g, m):
    """logdet(T) = Σ log |T_ii| for a triangular T."""
    span = _span(g, m)
    d = g.add("diag_of", [m["A"]], span=span)
    return g.add("tsum", [g.add("ewise", [d], {"fn": "logabs"}, span=span)], span=span)


def _ld_lemma(g, m):
    """logdet(A + UVᵀ) = logdet(A) + logdet(I + Vᵀ A⁻¹ U) (matrix determinant lemma)."""
    split = _lowrank_split(g, m["xs"])
    if split is None:
        return None
    span = _span(g, m)
    lows, rest = split
    u, v = _lowrank_parts(g, lows, span)
    a = _rest(g, rest, span)
    _, _, _, c = _capacitance(g, a, u, v, span)
    return tadd(g, [_logdet(g, a, span), _logdet(g, c, span)], span)


def _ld_monarch(g, m):
    """logdet(P₁ blockdiag(L) P₂ blockdiag(R)) = logdet(blockdiag(L)) + logdet(blockdiag(R)) (square blocks)."""
    n = g[g[m["_"]].operands[0]]
    if not _monarch_square(g, n):
        return None
    span = _span(g, m)
    return tadd(g, [_logdet(g, g.add("blockdiag_batched", [w], span=span), span) for w in n.operands], span)


LOGDET_RULES = [
    # logdet(X @ Y) = logdet(X Y as operators), ...
    _operator_form_rule("logdet"),
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
    Rule("logdet-scale", "logdet(cA) = n log |c| + logdet(A)", ("logdet", ("scale", "A")), _ld_scale),
    # logdet(Aᵀ) = logdet(A)
    Rule("logdet-transpose", "logdet(Aᵀ) = logdet(A)", ("logdet", ("transpose", "A")),
         lambda g, m: _logdet(g, m["A"], _span(g, m))),
    # logdet(inv(A)) = -logdet(A)
    Rule("logdet-inv", "logdet(inv(A)) = -logdet(A)", ("logdet", ("inv", "A")),
         lambda g, m: tscale(g, _logdet(g, m["A"], _span(g, m)), -1.0, _span(g, m))),
    # logdet(A + UVᵀ) = logdet(A) + logdet(I + VᵀA⁻¹U)
    Rule("logdet-lemma", "logdet(A + UVᵀ) = logdet(A) + logdet(I + VᵀA⁻¹U) (determinant lemma)",
         ("logdet", ("sum", "*xs")), _ld_lemma),
    # logdet(monarch(L, R)) = logdet(blockdiag(L)) + logdet(blockdiag(R))
    Rule("logdet-monarch", "logdet(monarch(L, R)) = logdet(blockdiag(L)) + logdet(blockdiag(R))",
         ("logdet", ("monarch", "L", "R")), _ld_monarch),
    # logdet(T) = Σ log|T_ii| for triangular T (after the structural rules above)
    Rule("logdet-triangular", "logdet(T) = Σ log |T_ii| for triangular T", ("logdet", "A"), _ld_triangular,
         where=lambda g, m: triangular(g, m["A"]) in ("lower", "upper") and g.kind(m["A"]) not in
         ("compose", "kron", "blockdiag", "scale", "transpose", "inv")),
]


# ---- diagonals --------------------------------------------------------------------------------------------

def _diag_of(g, a, span):
    return g.add("diag_of", [a], span=span)


def _diag_kron(g, m):
    """diag(A ⊗ B) = diag(A) ⊗ diag(B) (square factors)."""
    xs = m["xs"]
    if not _all_square(g, xs):
        return None
    return g.add("tkron", [_diag_of(g, x, _span(g, m)) for x in xs], span=_span(g, m))


def _diag_blockdiag(g, m):
    """diag(blockdiag(A, B)) = [diag(A), diag(B)] (square blocks)."""
    xs = m["xs"]
    if not _all_square(g, xs):
        return None
    return g.add("tconcat", [_diag_of(g, x, _span(g, m)) for x in xs], span=_span(g, m))


def _diag_sum(g, m):
    """diag(A + B) = diag(A) + diag(B)."""
    xs = m["xs"]
    if not _same_batch(g, xs):
        return None
    return tadd(g, [_diag_of(g, x, _span(g, m)) for x in xs], _span(g, m))


def _split_at_lowrank(g, xs):
    """(left factors, U, V, right factors) around the first low-rank factor of a product, or None."""
    for i, x in enumerate(xs):
        if g.kind(x) == "lowrank":
            u, v = g[x].operands
            return list(xs[:i]), u, v, list(xs[i + 1:])
    return None


def _product(g, xs, span):
    return xs[0] if len(xs) == 1 else g.add("compose", list(xs), span=span)


def _diag_compose_lowrank(g, m):
    """diag(L U Vᵀ R) = rowdot(L U, Rᵀ V): Σ_j (LU)_ij (RᵀV)_ij."""
    xs = m["xs"]
    split = _split_at_lowrank(g, xs)
    if split is None or not _no_batch(g, xs):
        return None
    span = _span(g, m)
    left, u, v, right = split
    lu = g.add("apply", [_product(g, left, span), u], span=span) if left else u
    rv = g.add("apply", [transpose(g, _product(g, right, span), span), v], span=span) if right else v
    return g.add("rowdot", [lu, rv], span=span)


def _dense_pair(g, xs):
    if len(xs) != 2 or not all(g.kind(x) == "dense" for x in xs) or not _no_batch(g, xs):
        return None
    return g[xs[0]].operands[0], g[xs[1]].operands[0]


def _diag_compose_dense(g, m):
    """diag(W₁ W₂) = rowdot(W₁, W₂ᵀ) for two matrices (no product formed)."""
    pair = _dense_pair(g, m["xs"])
    if pair is None:
        return None
    span = _span(g, m)
    return g.add("rowdot", [pair[0], g.add("tT", [pair[1]], span=span)], span=span)


DIAG_RULES = [
    # diag_of(X @ Y) = diag_of(X Y as operators), ...
    _operator_form_rule("diag_of"),
    # diag(diag(d)) = d
    Rule("diag_of-diag", "diag_of(diag(d)) = d", ("diag_of", ("diag", "d")), lambda g, m: m["d"]),
    # diag(I) = 1
    Rule("diag_of-eye", "diag_of(I) = 1", ("diag_of", ("eye",)),
         lambda g, m: fill(g, g.type(m["_"]).shape, 1.0, g.type(m["_"]).dtype, _span(g, m))),
    # diag(0) = 0
    Rule("diag_of-zeros", "diag_of(0) = 0", ("diag_of", ("zeros",)),
         lambda g, m: fill(g, g.type(m["_"]).shape, 0.0, g.type(m["_"]).dtype, _span(g, m))),
    # diag(A ⊗ B) = diag(A) ⊗ diag(B)
    Rule("diag_of-kron", "diag_of(A⊗B) = diag_of(A) ⊗ diag_of(B)", ("diag_of", ("kron", "*xs")), _diag_kron),
    # diag(blockdiag(A, B)) = [diag(A), diag(B)]
    Rule("diag_of-blockdiag", "diag_of(blockdiag(A, B)) = [diag_of(A), diag_of(B)]",
         ("diag_of", ("blockdiag", "*xs")), _diag_blockdiag),
    # diag(U Vᵀ)_i = Σ_j U_ij V_ij
    Rule("diag_of-lowrank", "diag_of(UVᵀ)_i = Σ_j U_ij V_ij", ("diag_of", ("lowrank", "U", "V")),
         lambda g, m: g.add("rowdot", [m["U"], m["V"]], span=_span(g, m))),
    # diag(A + B) = diag(A) + diag(B)
    Rule("diag_of-sum", "diag_of(A + B) = diag_of(A) + diag_of(B)", ("diag_of", ("sum", "*xs")), _diag_sum),
    # diag(cA) = c diag(A)
    Rule("diag_of-scale", "diag_of(cA) = c diag_of(A)", ("diag_of", ("scale", "A")),
         lambda g, m: tscale(g, _diag_of(g, m["A"], _span(g, m)), g[g[m["_"]].operands[0]].attrs["c"], _span(g, m))),
    # diag(Aᵀ) = diag(A)
    Rule("diag_of-transpose", "diag_of(Aᵀ) = diag_of(A)", ("diag_of", ("transpose", "A")),
         lambda g, m: _diag_of(g, m["A"], _span(g, m))),
    # diag(L U Vᵀ R) = rowdot(LU, RᵀV)
    Rule("diag_of-compose-lowrank", "diag_of(L UVᵀ R)_i = Σ_j (LU)_ij (RᵀV)_ij", ("diag_of", ("compose", "*xs")),
         _diag_compose_lowrank),
    # diag(W₁W₂)_i = Σ_j (W₁)_ij (W₂)_ji
    Rule("diag_of-compose-dense", "diag_of(W₁W₂)_i = Σ_j (W₁)_ij (W₂)_ji", ("diag_of", ("compose", "*xs")),
         _diag_compose_dense),
]


# ---- traces -------------------------------------------------------------------------------------------------

def _trace(g, a, span):
    return g.add("trace", [a], span=span)


def _tr_kron(g, m):
    """tr(A ⊗ B) = tr(A) tr(B) (square factors)."""
    xs = m["xs"]
    if not _all_square(g, xs):
        return None
    span = _span(g, m)
    out = _trace(g, xs[0], span)
    for x in xs[1:]:
        out = g.add("tmul", [out, _trace(g, x, span)], span=span)
    return out


def _tr_sum_of(check):
    """tr(blockdiag(A, B)) = tr(A) + tr(B) (square blocks); tr(A + B) = tr(A) + tr(B)."""
    def build(g, m):
        xs = m["xs"]
        if not check(g, xs):
            return None
        return tadd(g, [_trace(g, x, _span(g, m)) for x in xs], _span(g, m))
    return build


def _tr_eye(g, m):
    """tr(I_n) = n."""
    t = g.type(m["_"])
    span = _span(g, m)
    return dimscale(g, fill(g, t.shape, 1.0, t.dtype, span), g[g[m["_"]].operands[0]].attrs["n"], span)


def _tr_compose_lowrank(g, m):
    """tr(L U Vᵀ R) = tr(Vᵀ R L U) = Σ_ij V_ij (R L U)_ij (cyclic)."""
    xs = m["xs"]
    split = _split_at_lowrank(g, xs)
    if split is None or not _no_batch(g, xs):
        return None
    span = _span(g, m)
    left, u, v, right = split
    rest = right + left
    w = g.add("apply", [_product(g, rest, span), u], span=span) if rest else u
    return g.add("tsum", [g.add("rowdot", [v, w], span=span)], span=span)


def _tr_compose_dense(g, m):
    """tr(W₁W₂) = Σ_ij (W₁)_ij (W₂)_ji."""
    pair = _dense_pair(g, m["xs"])
    if pair is None:
        return None
    span = _span(g, m)
    return g.add("tsum", [g.add("rowdot", [pair[0], g.add("tT", [pair[1]], span=span)], span=span)], span=span)


TRACE_RULES = [
    # trace(X @ Y) = trace(X Y as operators), ...
    _operator_form_rule("trace"),
    # tr(A ⊗ B) = tr(A) tr(B)
    Rule("trace-kron", "tr(A⊗B) = tr(A) tr(B)", ("trace", ("kron", "*xs")), _tr_kron),
    # tr(blockdiag(A, B)) = tr(A) + tr(B)
    Rule("trace-blockdiag", "tr(blockdiag(A, B)) = tr(A) + tr(B)", ("trace", ("blockdiag", "*xs")),
         _tr_sum_of(_all_square)),
    # tr(A + B) = tr(A) + tr(B)
    Rule("trace-sum", "tr(A + B) = tr(A) + tr(B)", ("trace", ("sum", "*xs")), _tr_sum_of(_same_batch)),
    # tr(cA) = c tr(A)
    Rule("trace-scale", "tr(cA) = c tr(A)", ("trace", ("scale", "A")),
         lambda g, m: tscale(g, _trace(g, m["A"], _span(g, m)), g[g[m["_"]].operands[0]].attrs["c"], _span(g, m))),
    # tr(Aᵀ) = tr(A)
    Rule("trace-transpose", "tr(Aᵀ) = tr(A)", ("trace", ("transpose", "A")),
         lambda g, m: _trace(g, m["A"], _span(g, m))),
    # tr(I_n) = n
    Rule("trace-eye", "tr(I_n) = n", ("trace", ("eye",)), _tr_eye),
    # tr(0) = 0
    Rule("trace-zeros", "tr(0) = 0", ("trace", ("zeros",)),
         lambda g, m: fill(g, g.type(m["_"]).shape, 0.0, g.type(m["_"]).dtype, _span(g, m))),
    # tr(diag(d)) = Σ d_i
    Rule("trace-diag", "tr(diag(d)) = Σ d_i", ("trace", ("diag", "d")),
         lambda g, m: g.add("tsum", [m["d"]], span=_span(g, m))),
    # tr(UVᵀ) = Σ_ij U_ij V_ij
    Rule("trace-lowrank", "tr(UVᵀ) = Σ_ij U_ij V_ij", ("trace", ("lowrank", "U", "V")),
         lambda g, m: g.add("tsum", [g.add("rowdot", [m["U"], m["V"]], span=_span(g, m))], span=_span(g, m))),
    # tr(L UVᵀ R) = Σ_ij V_ij (RLU)_ij
    Rule("trace-compose-lowrank", "tr(L UVᵀ R) = tr(Vᵀ R L U) (cyclic)", ("trace", ("compose", "*xs")),
         _tr_compose_lowrank),
    # tr(W₁W₂) = Σ_ij (W₁)_ij (W₂)_ji
    Rule("trace-compose-dense", "tr(W₁W₂) = Σ_ij (W₁)_ij (W₂)_ji", ("trace", ("compose", "*xs")), _tr_compose_dense),
]


# ---- sums of diagonals (so that diag(d) + c I keeps a cheap inverse, e.g. for Woodbury) -------------------

def _diagonal_term(g, o):
    """(d, c) for c·diag(d), (None, c) for c·I, None for anything else."""
    c = 1.0
    if g.kind(o) == "scale":
        c, o = g[o].attrs["c"], g[o].operands[0]
    if g.kind(o) == "diag":
        return g[o].operands[0], c
    if g.kind(o) == "eye":
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

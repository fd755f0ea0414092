"""Rules for diagonals and traces (opdsl/kinds/linalg.py, docs/linalg.md).

Tables of identities in the style of passes/simplify.py: diag_of and trace of Kronecker products,
block diagonals, sums, scalars, transposes, identities and zeros, and of products that hold a
low-rank factor or are two matrices (read off row-wise dot products, never forming the product).
"""
from __future__ import annotations

from opdsl.kinds.linalg_analysis import all_square, no_batch
from opdsl.kinds.linalg_build import dimscale, fill, operator_form_rule, same_batch, span_of, tadd, tscale, transpose
from opdsl.kinds.rule import As, Rule, Window


# ---- diagonals --------------------------------------------------------------------------------------------

def _diag_of(g, a, span):
    return g.add("diag_of", [a], span=span)


def _diag_kron(g, m):
    """diag(A ⊗ B) = diag(A) ⊗ diag(B) (square factors)."""
    xs = m["xs"]
    if not all_square(g, xs):
        return None
    return g.add("tkron", [_diag_of(g, x, span_of(g, m)) for x in xs], span=span_of(g, m))


def _diag_blockdiag(g, m):
    """diag(blockdiag(A, B)) = [diag(A), diag(B)] (square blocks)."""
    xs = m["xs"]
    if not all_square(g, xs):
        return None
    return g.add("tconcat", [_diag_of(g, x, span_of(g, m)) for x in xs], span=span_of(g, m))


def _diag_sum(g, m):
    """diag(A + B) = diag(A) + diag(B)."""
    xs = m["xs"]
    if not same_batch(g, xs):
        return None
    return tadd(g, [_diag_of(g, x, span_of(g, m)) for x in xs], span_of(g, m))


# A product with a low-rank factor: L (the factors before the first one), U Vᵀ, R (the factors after).
LOWRANK_IN_PRODUCT = ("compose", Window(As("F", ("lowrank", "U", "V")), before="L", after="R"))
# A product of two matrices W₁ W₂ (tensors used as operators).
TWO_MATRICES = ("compose", As("A", ("dense", "W1")), As("B", ("dense", "W2")))


def _around_lowrank(g, m):
    """(left factors, U, V, right factors) of a LOWRANK_IN_PRODUCT match, or None for a batched product."""
    left, right = list(m["L"]), list(m["R"])
    if not no_batch(g, left + [m["F"]] + right):
        return None
    return left, m["U"], m["V"], right


def _two_matrices(g, m):
    """A TWO_MATRICES match is unbatched."""
    return no_batch(g, (m["A"], m["B"]))


def _product(g, xs, span):
    return xs[0] if len(xs) == 1 else g.add("compose", list(xs), span=span)


def _diag_compose_lowrank(g, m):
    """diag(L U Vᵀ R) = rowdot(L U, Rᵀ V): Σ_j (LU)_ij (RᵀV)_ij."""
    split = _around_lowrank(g, m)
    if split is None:
        return None
    span = span_of(g, m)
    left, u, v, right = split
    lu = g.add("apply", [_product(g, left, span), u], span=span) if left else u
    rv = g.add("apply", [transpose(g, _product(g, right, span), span), v], span=span) if right else v
    return g.add("rowdot", [lu, rv], span=span)


def _diag_compose_dense(g, m):
    """diag(W₁ W₂) = rowdot(W₁, W₂ᵀ) for two matrices (no product formed)."""
    span = span_of(g, m)
    return g.add("rowdot", [m["W1"], g.add("tT", [m["W2"]], span=span)], span=span)


DIAG_RULES = [
    # diag_of(X @ Y) = diag_of(X Y as operators), ...
    operator_form_rule("diag_of"),
    # diag(diag(d)) = d
    Rule("diag_of-diag", "diag_of(diag(d)) = d", ("diag_of", ("diag", "d")), lambda g, m: m["d"]),
    # diag(I) = 1
    Rule("diag_of-eye", "diag_of(I) = 1", ("diag_of", ("eye",)),
         lambda g, m: fill(g, g.type(m["_"]).shape, 1.0, g.type(m["_"]).dtype, span_of(g, m))),
    # diag(0) = 0
    Rule("diag_of-zeros", "diag_of(0) = 0", ("diag_of", ("zeros",)),
         lambda g, m: fill(g, g.type(m["_"]).shape, 0.0, g.type(m["_"]).dtype, span_of(g, m))),
    # diag(A ⊗ B) = diag(A) ⊗ diag(B)
    Rule("diag_of-kron", "diag_of(A⊗B) = diag_of(A) ⊗ diag_of(B)", ("diag_of", ("kron", "*xs")), _diag_kron),
    # diag(blockdiag(A, B)) = [diag(A), diag(B)]
    Rule("diag_of-blockdiag", "diag_of(blockdiag(A, B)) = [diag_of(A), diag_of(B)]",
         ("diag_of", ("blockdiag", "*xs")), _diag_blockdiag),
    # diag(U Vᵀ)_i = Σ_j U_ij V_ij
    Rule("diag_of-lowrank", "diag_of(UVᵀ)_i = Σ_j U_ij V_ij", ("diag_of", ("lowrank", "U", "V")),
         lambda g, m: g.add("rowdot", [m["U"], m["V"]], span=span_of(g, m))),
    # diag(A + B) = diag(A) + diag(B)
    Rule("diag_of-sum", "diag_of(A + B) = diag_of(A) + diag_of(B)", ("diag_of", ("sum", "*xs")), _diag_sum),
    # diag(cA) = c diag(A)
    Rule("diag_of-scale", "diag_of(cA) = c diag_of(A)", ("diag_of", As("S", ("scale", "A"))),
         lambda g, m: tscale(g, _diag_of(g, m["A"], span_of(g, m)), g[m["S"]].attrs["c"], span_of(g, m))),
    # diag(Aᵀ) = diag(A)
    Rule("diag_of-transpose", "diag_of(Aᵀ) = diag_of(A)", ("diag_of", ("transpose", "A")),
         lambda g, m: _diag_of(g, m["A"], span_of(g, m))),
    # diag(L U Vᵀ R) = rowdot(LU, RᵀV)
    Rule("diag_of-compose-lowrank", "diag_of(L UVᵀ R)_i = Σ_j (LU)_ij (RᵀV)_ij", ("diag_of", LOWRANK_IN_PRODUCT),
         _diag_compose_lowrank),
    # diag(W₁W₂)_i = Σ_j (W₁)_ij (W₂)_ji
    Rule("diag_of-compose-dense", "diag_of(W₁W₂)_i = Σ_j (W₁)_ij (W₂)_ji", ("diag_of", TWO_MATRICES),
         _diag_compose_dense, where=_two_matrices),
]


# ---- traces -------------------------------------------------------------------------------------------------

def _trace(g, a, span):
    return g.add("trace", [a], span=span)


def _tr_kron(g, m):
    """tr(A ⊗ B) = tr(A) tr(B) (square factors)."""
    xs = m["xs"]
    if not all_square(g, xs):
        return None
    span = span_of(g, m)
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
        return tadd(g, [_trace(g, x, span_of(g, m)) for x in xs], span_of(g, m))
    return build


def _tr_eye(g, m):
    """tr(I_n) = n."""
    t = g.type(m["_"])
    span = span_of(g, m)
    return dimscale(g, fill(g, t.shape, 1.0, t.dtype, span), g[m["I"]].attrs["n"], span)


def _tr_compose_lowrank(g, m):
    """tr(L U Vᵀ R) = tr(Vᵀ R L U) = Σ_ij V_ij (R L U)_ij (cyclic)."""
    split = _around_lowrank(g, m)
    if split is None:
        return None
    span = span_of(g, m)
    left, u, v, right = split
    rest = right + left
    w = g.add("apply", [_product(g, rest, span), u], span=span) if rest else u
    return g.add("tsum", [g.add("rowdot", [v, w], span=span)], span=span)


def _tr_compose_dense(g, m):
    """tr(W₁W₂) = Σ_ij (W₁)_ij (W₂)_ji."""
    span = span_of(g, m)
    return g.add("tsum", [g.add("rowdot", [m["W1"], g.add("tT", [m["W2"]], span=span)], span=span)], span=span)


TRACE_RULES = [
    # trace(X @ Y) = trace(X Y as operators), ...
    operator_form_rule("trace"),
    # tr(A ⊗ B) = tr(A) tr(B)
    Rule("trace-kron", "tr(A⊗B) = tr(A) tr(B)", ("trace", ("kron", "*xs")), _tr_kron),
    # tr(blockdiag(A, B)) = tr(A) + tr(B)
    Rule("trace-blockdiag", "tr(blockdiag(A, B)) = tr(A) + tr(B)", ("trace", ("blockdiag", "*xs")),
         _tr_sum_of(all_square)),
    # tr(A + B) = tr(A) + tr(B)
    Rule("trace-sum", "tr(A + B) = tr(A) + tr(B)", ("trace", ("sum", "*xs")), _tr_sum_of(same_batch)),
    # tr(cA) = c tr(A)
    Rule("trace-scale", "tr(cA) = c tr(A)", ("trace", As("S", ("scale", "A"))),
         lambda g, m: tscale(g, _trace(g, m["A"], span_of(g, m)), g[m["S"]].attrs["c"], span_of(g, m))),
    # tr(Aᵀ) = tr(A)
    Rule("trace-transpose", "tr(Aᵀ) = tr(A)", ("trace", ("transpose", "A")),
         lambda g, m: _trace(g, m["A"], span_of(g, m))),
    # tr(I_n) = n
    Rule("trace-eye", "tr(I_n) = n", ("trace", As("I", ("eye",))), _tr_eye),
    # tr(0) = 0
    Rule("trace-zeros", "tr(0) = 0", ("trace", ("zeros",)),
         lambda g, m: fill(g, g.type(m["_"]).shape, 0.0, g.type(m["_"]).dtype, span_of(g, m))),
    # tr(diag(d)) = Σ d_i
    Rule("trace-diag", "tr(diag(d)) = Σ d_i", ("trace", ("diag", "d")),
         lambda g, m: g.add("tsum", [m["d"]], span=span_of(g, m))),
    # tr(UVᵀ) = Σ_ij U_ij V_ij
    Rule("trace-lowrank", "tr(UVᵀ) = Σ_ij U_ij V_ij", ("trace", ("lowrank", "U", "V")),
         lambda g, m: g.add("tsum", [g.add("rowdot", [m["U"], m["V"]], span=span_of(g, m))], span=span_of(g, m))),
    # tr(L UVᵀ R) = Σ_ij V_ij (RLU)_ij
    Rule("trace-compose-lowrank", "tr(L UVᵀ R) = tr(Vᵀ R L U) (cyclic)", ("trace", LOWRANK_IN_PRODUCT),
         _tr_compose_lowrank),
    # tr(W₁W₂) = Σ_ij (W₁)_ij (W₂)_ji
    Rule("trace-compose-dense", "tr(W₁W₂) = Σ_ij (W₁)_ij (W₂)_ji", ("trace", TWO_MATRICES), _tr_compose_dense,
         where=_two_matrices),
]

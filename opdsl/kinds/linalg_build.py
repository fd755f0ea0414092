"""What the linear-algebra rules build with: small graph constructors and guards shared by the
rule tables (passes/linalg_rules.py, inverse_rules.py, diagonal_rules.py) and by the rules a kind
carries (kinds/monarch.py, kinds/fftconv.py).

Builders take the graph, their operands and the span of the matched node; `span_of(g, m)` is that
span and `auto(g, m)` the guard of the inverse rules: an explicit method (inv(A, method=lu |
cholesky | cg)) asks for that method on A as written, so the rules leave such an inv alone.
"""
from __future__ import annotations

import sympy as sp

from .rule import Rule


def span_of(g, m):
    """The span of the matched node."""
    return g[m["_"]].span


def auto(g, m):
    """The matched inv uses method=auto (the rules may restructure it)."""
    return g[m["_"]].attrs.get("method", "auto") == "auto"


def same_batch(g, ops):
    b = g.type(ops[0]).batch
    return all(len(g.type(o).batch) == len(b) and all(g.dims.equal(x, y) for x, y in zip(g.type(o).batch, b))
               for o in ops)


def inv(g, a, span):
    return g.add("inv", [a], {"method": "auto"}, span=span)


def logdet(g, a, span):
    return g.add("logdet", [a], span=span)


def transpose(g, a, span):
    return g.add("transpose", [a], span=span)


def fill(g, shape, value, dtype, span):
    from .base import default_dtype
    return g.add("tfill", [], {"shape": tuple(shape), "value": float(value), "dtype": dtype or default_dtype(g)},
                 span=span)


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


# ---- matrices written as tensor expressions --------------------------------------------------------------

def as_operator(g, t, span):
    """The operator form of the matrix expression t (a tensor used as a matrix), or None: each tensor
    kind's `operator_form` (dense(X @ Y) = X dense(Y), dense(cW) = c dense(W), ...)."""
    if len(g.type(t).shape) != 2:
        return None
    return g.spec(t).operator_form(g, t, span)


def operator_form_rule(fn, where=None):
    """fn(dense(t)) = fn(the operator form of t): the rules of fn then see the structure."""
    def build(g, m):
        if where is not None and not where(g, m):
            return None
        op = as_operator(g, m["T"], span_of(g, m))
        if op is None:
            return None
        n = g[m["_"]]
        return g.add(fn, [op] + list(n.operands[1:]), n.attrs, span=n.span)

    return Rule(f"{fn}-of-matrix-expression",
                f"{fn}(X @ Y), {fn}(cW), {fn}(Wᵀ), {fn}(V + W) of matrices = {fn} of the same operators",
                (fn, ("dense", "T")), build)


__all__ = ["span_of", "auto", "same_batch", "inv", "logdet", "transpose", "fill", "tadd", "tscale", "dimscale",
           "as_operator", "operator_form_rule"]

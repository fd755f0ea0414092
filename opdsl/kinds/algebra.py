"""Operator algebra: products, sums, scaling and transposition."""
from __future__ import annotations

from functools import reduce

import numpy as np

from ..errors import ShapeError
from ..primitives import broadcast
from .base import Kind, OpType, join_dtype, op_type, register
from .fft_algebra import combine, unary
from .linalg_analysis import (all_psd, cheap_inverse, is_gram, psd, flip, less, lowrank_split, operands_triangular, singular_reason,
                              square, triangular)
from .linalg_solve import materialize

# A property survives a product / sum / transpose when every operand has it.
PRODUCT_KEEPS = frozenset({"orthogonal", "diagonal", "permutation", "invertible"})
SUM_KEEPS = frozenset({"symmetric", "diagonal", "psd"})
TRANSPOSE_KEEPS = frozenset({"orthogonal", "diagonal", "symmetric", "psd", "permutation", "invertible"})


def common(types, keep):
    props = set(keep)
    for t in types:
        props &= set(t.props)
    return frozenset(props)


@register
class Compose(Kind):
    """`A @ B @ ...`: the product of operators, applied right to left."""

    name = "compose"
    examples = ("input A : [4, 3]\ninput B : [3, 5]\ninput x : [5, 2]\nexport y = (A @ B) @ x",)
    arity = (2, None)

    def infer(self, g, ops, attrs, span):
        ts = [op_type(g, o, span) for o in ops]
        for i, (a, b) in enumerate(zip(ts, ts[1:])):
            if not g.dims.equal(a.cols, b.rows):
                raise ShapeError(
                    f"cannot multiply operators {a} and {b}: {a.cols} columns against {b.rows} rows",
                    span, notes=[(f"factor {i + 1} {a}", g[ops[i]].span), (f"factor {i + 2} {b}", g[ops[i + 1]].span)]
                    if g[ops[i]].span and g[ops[i + 1]].span else None)
        batch = reduce(broadcast, (t.batch for t in ts), ())
        return OpType(ts[0].rows, ts[-1].cols, batch, join_dtype(*(t.dtype for t in ts)),
                      common(ts, PRODUCT_KEEPS))

    def dense(self, g, v, vals):
        return reduce(np.matmul, vals)

    def flops(self, g, v, k):
        return sum(g.spec(o).flops(g, o, k) for o in g[v].operands)

    def lower(self, lw, v, x):
        for o in reversed(lw.src[v].operands):
            x = lw.apply(o, x)
        return x

    def fft_tree(self, g, v, conj, leaves):     # spectra multiply
        return combine(g, g[v].operands, conj, leaves, "mul")

    def transpose(self, g, v):
        n = g[v]
        return g.add("compose", [g.add("transpose", [o], span=n.span) for o in reversed(n.operands)], span=n.span)

    infer_from_types = True

    def chain_parts(self, g, v):
        return ("product", g[v].operands)

    def triangular_through(self, g, v):
        return operands_triangular(g, g[v].operands)

    def psd_through(self, g, v):                # X Xᵀ, Xᵀ X
        ops = g[v].operands
        return len(ops) == 2 and is_gram(g, *ops)

    def singular(self, g, v):
        t = g.type(v)
        ops = g[v].operands
        for o in ops[:-1]:
            if less(g, g.type(o).cols, t.rows):
                return f"the product passes through {g.type(o).cols} < {t.rows} dimensions"
        for o in ops:
            if square(g, o):
                why = singular_reason(g, o)
                if why:
                    return why
        return None

    def cheap_inverse(self, g, v):              # the product of the inverses, in reverse order
        return all(square(g, o) and cheap_inverse(g, o) for o in g[v].operands)


@register
class Sum(Kind):
    """`A + B + ...` of operators with one shape."""

    name = "sum"
    examples = ("input A : [4, 3]\ninput B : [4, 3]\ninput x : [3, 2]\nexport y = (A + B - A) @ x",)
    arity = (2, None)

    def infer(self, g, ops, attrs, span):
        ts = [op_type(g, o, span) for o in ops]
        for t in ts[1:]:
            if not (g.dims.equal(t.rows, ts[0].rows) and g.dims.equal(t.cols, ts[0].cols)):
                raise ShapeError(f"cannot add operators of shapes {ts[0]} and {t}", span)
        batch = reduce(broadcast, (t.batch for t in ts), ())
        return OpType(ts[0].rows, ts[0].cols, batch, join_dtype(*(t.dtype for t in ts)), common(ts, SUM_KEEPS))

    def dense(self, g, v, vals):
        return reduce(np.add, vals)

    def flops(self, g, v, k):
        t = g.type(v)
        return sum(g.spec(o).flops(g, o, k) for o in g[v].operands) + (len(g[v].operands) - 1) * t.rows * k

    def lower(self, lw, v, x):
        ys = [lw.apply(o, x) for o in lw.src[v].operands]
        return reduce(lw.add, ys)

    def fft_tree(self, g, v, conj, leaves):     # spectra add
        return combine(g, g[v].operands, conj, leaves, "add")

    def transpose(self, g, v):
        n = g[v]
        return g.add("sum", [g.add("transpose", [o], span=n.span) for o in n.operands], span=n.span)

    infer_from_types = True

    def chain_parts(self, g, v):
        return None if g.type(v).batch else ("sum", g[v].operands)

    def operand_columns(self, g, v, k):
        return [k] * len(g[v].operands)

    def triangular_through(self, g, v):
        return operands_triangular(g, g[v].operands)

    def psd_through(self, g, v):
        return all_psd(g, g[v].operands)

    def cheap_inverse(self, g, v):              # a cheap part plus low-rank terms: Woodbury
        return lowrank_split(g, g[v].operands) is not None

    def matrix(self, lw, v, dtype):             # the sum of its terms' matrices
        parts = [materialize(lw, o, dtype) for o in lw.src[v].operands]
        return reduce(lw.add, parts)


@register
class Scale(Kind):
    """`c * A`: an operator times a number (attribute c)."""

    name = "scale"
    examples = ("input A : [4, 3]\ninput x : [3, 2]\nexport y = (-0.5 * kron(A, eye(1))) @ x",)

    def infer(self, g, ops, attrs, span):
        t = op_type(g, ops[0], span)
        props = set(t.props) & {"symmetric", "diagonal"}
        if attrs["c"] > 0 and "psd" in t.props:
            props.add("psd")
        if attrs["c"] != 0 and "invertible" in t.props:
            props.add("invertible")
        return OpType(t.rows, t.cols, t.batch, t.dtype, frozenset(props))

    def dense(self, g, v, vals):
        return g[v].attrs["c"] * vals[0]

    def flops(self, g, v, k):
        o = g[v].operands[0]
        return g.spec(o).flops(g, o, k) + g.type(v).rows * k

    def lower(self, lw, v, x):
        n = lw.src[v]
        return lw.scale(lw.apply(n.operands[0], x), n.attrs["c"])

    def fft_tree(self, g, v, conj, leaves):
        return unary(g, v, conj, leaves, lambda e: ("scale", float(g[v].attrs["c"]), e))

    def transpose(self, g, v):
        n = g[v]
        return g.add("scale", [g.add("transpose", [n.operands[0]], span=n.span)], n.attrs, span=n.span)

    infer_from_types = True

    def chain_parts(self, g, v):
        return ("scaled", g[v].operands[0], g[v].attrs["c"])

    def operand_columns(self, g, v, k):
        return [k]

    def triangular_through(self, g, v):
        return triangular(g, g[v].operands[0])

    def psd_through(self, g, v):
        n = g[v]
        return n.attrs["c"] > 0 and psd(g, n.operands[0])

    def singular(self, g, v):
        n = g[v]
        return "it is scaled by 0" if n.attrs["c"] == 0 else singular_reason(g, n.operands[0])

    def cheap_inverse(self, g, v):
        return cheap_inverse(g, g[v].operands[0])

    def matrix(self, lw, v, dtype):
        n = lw.src[v]
        return lw.scale(materialize(lw, n.operands[0], dtype), n.attrs["c"])


@register
class Transpose(Kind):
    """`A.T`.  Lowered by asking A's kind for its transpose (kind.transpose)."""

    name = "transpose"
    examples = ("input A : [4, 3]\ninput B : [2, 5]\ninput x : [8, 2]\nexport y = kron(A, B).T @ x",
                "input U : [6, 2]\ninput V : [4, 2]\ninput x : [6]\nexport y = lowrank(U, V).T @ x")

    def infer(self, g, ops, attrs, span):
        t = op_type(g, ops[0], span)
        return OpType(t.cols, t.rows, t.batch, t.dtype, common([t], TRANSPOSE_KEEPS))

    def dense(self, g, v, vals):
        return np.swapaxes(vals[0], -1, -2)

    def flops(self, g, v, k):
        # A transpose costs what its operand's transpose costs (Kind.transpose_flops: its own cost,
        # unless the kind's transpose is lowered another way).
        o = g[v].operands[0]
        return g.spec(o).transpose_flops(g, o, k)

    def fft_tree(self, g, v, conj, leaves):     # the conjugate spectrum
        o = g[v].operands[0]
        return g.spec(o).fft_tree(g, o, not conj, leaves)

    def lower(self, lw, v, x):
        a = lw.src[v].operands[0]
        if "symmetric" in lw.src.type(a).props:
            return lw.apply(a, x)
        t = lw.src.spec(a).transpose(lw.src, a)
        if t is None:
            from ..errors import BackendError
            raise BackendError(f"the transpose of {lw.src.kind(a)} has no lowering", lw.src[v].span)
        return lw.apply(t, x)

    def transpose(self, g, v):
        return g[v].operands[0]

    infer_from_types = True

    def operand_columns(self, g, v, k):
        return [k]

    def triangular_through(self, g, v):
        return flip(triangular(g, g[v].operands[0]))

    def singular(self, g, v):
        return singular_reason(g, g[v].operands[0])

    def cheap_inverse(self, g, v):
        return cheap_inverse(g, g[v].operands[0])

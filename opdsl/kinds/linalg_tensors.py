"""Small tensor-valued kinds that the linear-algebra rules build (passes/linalg_rules.py).

The rules for inverses, log-determinants, diagonals and traces (docs/linalg.md)
rewrite `logdet(kron(A, B))`, `diag_of(blockdiag(A, B))`, `inv(diag(d))`, ...
into expressions over vectors and scalars: the entrywise reciprocal of d, the
sum of a vector, the Kronecker product of two diagonals, a constant.  These
kinds hold those expressions; none of them has a constructor in the language
(users write inv / logdet / diag_of / trace), and each is exercised by the
catalogue through the programs in its `examples` whose rewriting builds it.

    ewise(x, fn)        entrywise fn: recip, log, logabs (log |x|), abs, neg
    tsum(x)             sum over the last axis: [..., n] -> [...]
    tmul(x, y)          entrywise product (same shape)
    tkron(a, b, ...)    Kronecker product of vectors (numpy.kron of 1-D arrays)
    tconcat(a, b, ...)  concatenation along the last axis
    rowdot(U, V)        row-wise dot products: [..., n, r] x [..., n, r] -> [..., n]
    tfill(shape, value) a constant tensor
    dimscale(x, c)      x times a dimension expression c (e.g. n_B in logdet(A ⊗ B) = n_B logdet A + ...)
    circ_inv(c)         first column of circulant(c)⁻¹ = irfft(1 / rfft(c))
"""
from __future__ import annotations

from functools import reduce

import numpy as np
import sympy as sp

from ..errors import ShapeError
from .base import Kind, TensorType, join_dtype, register, sym_prod, tensor_of_rank

# fn -> (numpy meaning, unary primitives applied in order)
EWISE = {
    "recip": (np.reciprocal, ("recip",)),
    "log": (np.log, ("log",)),
    "logabs": (lambda x: np.log(np.abs(x)), ("abs", "log")),
    "abs": (np.abs, ("abs",)),
    "neg": (np.negative, ("neg",)),
}


def _same_shape(g, a, b):
    return len(a) == len(b) and all(g.dims.equal(x, y) for x, y in zip(a, b))


def _tensor(g, v, span, what):
    t = g.type(v)
    if t.is_op:
        from ..errors import TypeError_
        raise TypeError_(f"{what} must be a tensor, got an operator {t}", span)
    return t


@register
class EWise(Kind):
    """`ewise(x, fn)`: fn applied to every entry (recip, log, logabs = log|x|, abs, neg)."""

    name = "ewise"
    produces = "tensor"
    examples = ("dim n = 5\ninput d : [n]\ninput x : [n, 2]\nexport y = inv(diag(d)) @ x",
                "input d : [4]\nexport y = logdet(diag(d))")

    def infer(self, g, ops, attrs, span):
        t = _tensor(g, ops[0], span, "ewise's operand")
        return TensorType(t.shape, t.dtype)

    def dense(self, g, v, vals):
        return EWISE[g[v].attrs["fn"]][0](vals[0])

    def flops(self, g, v, k=None):
        return sym_prod(g.type(v).shape) * len(EWISE[g[v].attrs["fn"]][1])

    def lower(self, lw, v, x=None):
        n = lw.src[v]
        y = lw.tensor(n.operands[0])
        for fn in EWISE[n.attrs["fn"]][1]:
            y = lw.prim("unary", y, fn=fn)
        return y


@register
class TSum(Kind):
    """`tsum(x)`: the sum over the last axis, [..., n] -> [...]."""

    name = "tsum"
    produces = "tensor"
    examples = ("input d : [6]\nexport y = trace(diag(d))",
                "input U : [5, 2]\ninput V : [5, 2]\nexport y = trace(lowrank(U, V))")

    def infer(self, g, ops, attrs, span):
        t = _tensor(g, ops[0], span, "tsum's operand")
        if not t.shape:
            raise ShapeError("tsum needs a tensor with at least one axis", span)
        return TensorType(t.shape[:-1], t.dtype)

    def dense(self, g, v, vals):
        return np.sum(vals[0], axis=-1)

    def flops(self, g, v, k=None):
        return sym_prod(g.type(g[v].operands[0]).shape)

    def lower(self, lw, v, x=None):
        return lw.prim("sum", lw.tensor(lw.src[v].operands[0]), axis=-1)


@register
class TMul(Kind):
    """`tmul(x, y)`: the entrywise product of two tensors of one shape (traces of Kronecker factors)."""

    name = "tmul"
    produces = "tensor"
    arity = (2, 2)
    examples = ("input A : [2, 2]\ninput B : [3, 3]\nexport y = trace(kron(A, B))",)

    def infer(self, g, ops, attrs, span):
        a, b = (_tensor(g, o, span, "tmul's operand") for o in ops)
        if not _same_shape(g, a.shape, b.shape):
            raise ShapeError(f"tmul needs tensors of one shape, got {a} and {b}", span)
        return TensorType(a.shape, join_dtype(a.dtype, b.dtype))

    def dense(self, g, v, vals):
        return vals[0] * vals[1]

    def flops(self, g, v, k=None):
        return sym_prod(g.type(v).shape)

    def lower(self, lw, v, x=None):
        a, b = lw.src[v].operands
        return lw.mul(lw.tensor(a), lw.tensor(b))


@register
class TKron(Kind):
    """`tkron(a, b, ...)`: the Kronecker product of vectors (the diagonal of a Kronecker product)."""

    name = "tkron"
    produces = "tensor"
    arity = (2, None)
    examples = ("input A : [2, 2]\ninput B : [3, 3]\ninput C : [2, 2]\nexport y = diag_of(kron(A, B, C))",)

    def infer(self, g, ops, attrs, span):
        ts = [tensor_of_rank(g, o, (1,), span, "tkron's operand") for o in ops]
        return TensorType((sym_prod(t.shape[0] for t in ts),), join_dtype(*(t.dtype for t in ts)))

    def dense(self, g, v, vals):
        return reduce(np.kron, vals)

    def flops(self, g, v, k=None):
        return g.type(v).shape[0] * (len(g[v].operands) - 1)

    def lower(self, lw, v, x=None):
        ops = [lw.tensor(o) for o in lw.src[v].operands]
        out = ops[0]
        for b in ops[1:]:
            na, nb = lw.shape(out)[0], lw.shape(b)[0]
            out = lw.reshape(lw.mul(lw.reshape(out, (na, 1)), lw.reshape(b, (1, nb))), (na * nb,))
        return out


@register
class TConcat(Kind):
    """`tconcat(a, b, ...)`: concatenation along the last axis (diagonals of blocks, Woodbury's [U1 U2])."""

    name = "tconcat"
    produces = "tensor"
    arity = (2, None)
    examples = ("input A : [2, 2]\ninput B : [3, 3]\nexport y = diag_of(blockdiag(A, B))",
                "input d : [6]\ninput U : [6, 1]\ninput V : [6, 1]\ninput P : [6, 2]\ninput Q : [6, 2]\n"
                "input x : [6, 2]\nexport y = inv(diag(d) + lowrank(U, V) + lowrank(P, Q)) @ x")

    def infer(self, g, ops, attrs, span):
        ts = [_tensor(g, o, span, "tconcat's operand") for o in ops]
        for t in ts[1:]:
            if len(t.shape) != len(ts[0].shape) or not _same_shape(g, t.shape[:-1], ts[0].shape[:-1]):
                raise ShapeError(f"tconcat needs tensors that differ in the last axis only, got {ts[0]} and {t}", span)
        last = sum((t.shape[-1] for t in ts), sp.Integer(0))
        return TensorType(ts[0].shape[:-1] + (last,), join_dtype(*(t.dtype for t in ts)))

    def dense(self, g, v, vals):
        return np.concatenate(vals, axis=-1)

    def flops(self, g, v, k=None):
        return 0

    def lower(self, lw, v, x=None):
        return lw.prim("concat", *[lw.tensor(o) for o in lw.src[v].operands], axis=-1)


@register
class RowDot(Kind):
    """`rowdot(U, V)`: Σ_j U[i, j] V[i, j], the diagonal of U Vᵀ ([..., n, r] x [..., n, r] -> [..., n])."""

    name = "rowdot"
    produces = "tensor"
    arity = (2, 2)
    examples = ("input U : [5, 2]\ninput V : [5, 2]\nexport y = diag_of(lowrank(U, V))",
                "input W : [4, 4]\ninput U : [4, 2]\ninput V : [4, 2]\nexport y = trace(W @ lowrank(U, V))")

    def infer(self, g, ops, attrs, span):
        a, b = (_tensor(g, o, span, "rowdot's operand") for o in ops)
        if len(a.shape) < 2 or not _same_shape(g, a.shape, b.shape):
            raise ShapeError(f"rowdot needs two matrices of one shape, got {a} and {b}", span)
        return TensorType(a.shape[:-1], join_dtype(a.dtype, b.dtype))

    def dense(self, g, v, vals):
        return np.sum(vals[0] * vals[1], axis=-1)

    def flops(self, g, v, k=None):
        return 2 * sym_prod(g.type(g[v].operands[0]).shape)

    def lower(self, lw, v, x=None):
        a, b = lw.src[v].operands
        return lw.prim("sum", lw.mul(lw.tensor(a), lw.tensor(b)), axis=-1)


@register
class TFill(Kind):
    """`tfill(shape, value)`: a constant tensor (0 = logdet of an orthogonal operator, 1 = diag of eye)."""

    name = "tfill"
    produces = "tensor"
    examples = ("dim n = 4\ninput V : [n, 2]\nexport y = logdet(householder(V))",
                "dim n = 5\nexport y = diag_of(eye(n))",
                "export y = trace(zeros(3, 3))")

    def infer(self, g, ops, attrs, span):
        return TensorType(tuple(attrs["shape"]), attrs["dtype"])

    def dense(self, g, v, vals):
        a = g[v].attrs
        return np.full([g.dims.value(s) for s in a["shape"]], float(a["value"]))

    def flops(self, g, v, k=None):
        return 0

    def lower(self, lw, v, x=None):
        a = lw.src[v].attrs
        return lw.prim("fill", shape=tuple(a["shape"]), value=float(a["value"]), dtype=a["dtype"])


@register
class DimScale(Kind):
    """`dimscale(x, c)`: x times the dimension expression c (an integer such as n_B or n·m)."""

    name = "dimscale"
    produces = "tensor"
    examples = ("dim a = 2\ndim b = 3\ninput A : [a, a]\ninput B : [b, b]\nexport y = logdet(kron(A, B))",
                "dim n\ninput d : [n]\nexport y = trace(eye(n) + diag(d))")

    def infer(self, g, ops, attrs, span):
        t = _tensor(g, ops[0], span, "dimscale's operand")
        return TensorType(t.shape, t.dtype)

    def dense(self, g, v, vals):
        return vals[0] * g.dims.value(g[v].attrs["c"])

    def flops(self, g, v, k=None):
        return sym_prod(g.type(v).shape)

    def lower(self, lw, v, x=None):
        n = lw.src[v]
        y = lw.tensor(n.operands[0])
        c = lw.dims.value(n.attrs["c"])
        if c is not None:
            return lw.scale(y, float(c))
        return lw.mul(y, lw.prim("fill", shape=(), value=sp.sympify(n.attrs["c"]), dtype=lw.dtype(y)))


@register
class CircInv(Kind):
    """`circ_inv(c)`: the first column of circulant(c)⁻¹, irfft(1 / rfft(c)) (c [..., n])."""

    name = "circ_inv"
    produces = "tensor"
    examples = ("input c : [8]\ninput x : [8, 2]\nexport y = inv(circulant(c)) @ x",
                "input c : [2, 5]\ninput x : [2, 5, 3]\nexport y = inv(circulant(c).T) @ x")

    def infer(self, g, ops, attrs, span):
        t = _tensor(g, ops[0], span, "circ_inv's operand")
        return TensorType(t.shape, t.dtype)

    def dense(self, g, v, vals):
        c = vals[0]
        return np.real(np.fft.ifft(1.0 / np.fft.fft(c, axis=-1), axis=-1))

    def flops(self, g, v, k=None):
        from .fftconv import fft_flops
        t = g.type(v)
        n = t.shape[-1]
        return sym_prod(t.shape[:-1]) * (2 * fft_flops(n) + 6 * n)

    def lower(self, lw, v, x=None):
        c = lw.tensor(lw.src[v].operands[0])
        n = lw.shape(c)[-1]
        spec = lw.prim("rfft", c, n=n)
        one = lw.prim("fill", shape=(), value=1.0, dtype=lw.dtype(c))
        return lw.prim("irfft", lw.prim("div", one, spec), n=n)

"""Tensor-valued nodes: inputs and params, applying an operator, tensor arithmetic."""
from __future__ import annotations

import numpy as np

from ..dims import fmt_shape
from ..errors import ShapeError, TypeError_
from ..primitives import broadcast
from .base import Kind, TensorType, register, sym_prod


@register
class Input(Kind):
    """`input x : [n, k]` or `param W : [n, n] = normal` — a function argument."""

    name = "input"
    examples = ("dim n = 5\ninput x : [n]\nexport y = x",)
    produces = "tensor"

    def infer(self, g, ops, attrs, span):
        return TensorType(tuple(attrs["shape"]), attrs["dtype"], frozenset(attrs.get("props", ())))

    def lower(self, lw, v, x=None):
        n = lw.src[v]
        extra = {"layout": n.attrs["layout"]} if "layout" in n.attrs else {}
        return lw.prim("arg", name=n.attrs["name"], shape=n.type.shape, dtype=n.type.dtype,
                       role=n.attrs["role"], **extra)

    def flops(self, g, v, k=None):
        return 0


def apply_shape(g, op_t, x_t, span, ops=None):
    """Matmul conventions: x is [n], [n, k] or [..., n, k]; the result has m in place of n."""
    s = x_t.shape
    if len(s) == 0:
        raise ShapeError("cannot apply an operator to a scalar", span)
    rows = s[0] if len(s) == 1 else s[-2]
    if not g.dims.equal(rows, op_t.cols):
        notes = []
        if ops is not None:
            for what, o in zip(("the operator", "the operand"), ops):
                if g[o].span is not None and g[o].span != span:
                    notes.append((f"{what} {g.type(o)} comes from here", g[o].span))
        where = "rows" if len(s) > 1 else "entries"
        raise ShapeError(
            f"cannot apply an operator {op_t} to a tensor {fmt_shape(s)}: the operator has "
            f"{op_t.cols} columns but the tensor has {rows} {where}",
            span, hint=f"the tensor's {'second-to-last' if len(s) > 1 else 'only'} dimension must equal "
            f"{op_t.cols}; check the declared shapes", notes=notes)
    if len(s) == 1:
        return op_t.batch + (op_t.rows,)
    try:
        batch = broadcast(op_t.batch, s[:-2])
    except ShapeError:
        raise ShapeError(f"batch dims {fmt_shape(op_t.batch)} and {fmt_shape(s[:-2])} do not broadcast", span)
    return batch + (op_t.rows, s[-1])


def _columns(shape):
    """The columns an operator is applied to in a tensor of this shape (the batch folded in)."""
    return sym_prod(shape[:-2]) * shape[-1] if len(shape) > 1 else 1


@register
class Apply(Kind):
    """`A @ x`: an operator applied to a tensor."""

    name = "apply"
    examples = (
        "dim n = 4\ninput W : [n, n]\ninput x : [n]\nexport y = W @ x",
        "dim n = 4\ndim k = 3\ninput W : [n, n]\ninput x : [2, 5, n, k]\nexport y = W @ x",
        "dim n = 4\ndim B\ninput W : [6, n]\ninput x : [n, B]\nexport y = W @ x",
    )
    produces = "tensor"

    def infer(self, g, ops, attrs, span):
        op_t, x_t = g.type(ops[0]), g.type(ops[1])
        from .base import join_dtype
        return TensorType(apply_shape(g, op_t, x_t, span, ops), join_dtype(op_t.dtype, x_t.dtype))

    def dense(self, g, v, vals):
        return np.matmul(vals[0], vals[1])

    def flops(self, g, v, k=None):
        op, x = g[v].operands
        return g.spec(op).flops(g, op, _columns(g.type(x).shape))

    def shard(self, g, v, sharded):
        """Applying an operator is where a split dim costs: a contracted one sums partial results
        over the mesh axis (all-reduce of the result), a mixed one gathers x first (all-gather);
        the operator's kinds say which, one mode per round (shard_mode).  x's columns split for free."""
        from ..sharding import Comm, itemsize, mode, rounds, symbols_of
        op, x = g[v].operands
        t_op, t_x, t_out = g.type(op), g.type(x), g.type(v)
        site = str(g[v].span or "")
        out = []
        for s, axis in sharded.items():
            for m in rounds(mode(g, op, s) if s in symbols_of(g, t_op) else "free"):
                if m == "psum":
                    out.append(Comm("all-reduce", axis, sym_prod(t_out.shape) * itemsize(t_out.dtype),
                                    f"the operator contracts the split dim {s}: partial products are summed", site))
                elif m == "gather":
                    out.append(Comm("all-gather", axis, sym_prod(t_x.shape) * itemsize(t_x.dtype),
                                    f"the operator mixes the split dim {s}: its operand is gathered", site))
        return out

    def dense_flops(self, g, v, dense):         # the operator's matrix times x's columns
        op, x = g[v].operands
        return g.spec(op).dense_apply_flops(g, op, _columns(g.type(x).shape), dense)

    def lower(self, lw, v, x=None):
        op, xv = lw.src[v].operands
        px = lw.tensor(xv)
        shape = lw.shape(px)
        if len(shape) == 1:
            y = lw.apply(op, lw.reshape(px, shape + (1,)))
            return lw.reshape(y, lw.shape(y)[:-1])
        if lw.is_split(shape[-1]):
            # columns split over a device mesh (opdsl/sharding.py): apply to [k, *b, n, 1], the
            # columns a leading batch axis, so no kind's reshape (kron's [pre, n_i, post*k]) merges
            # them with a split-free axis: each device applies the operator to its own columns
            r = len(shape)
            cols = lw.reshape(lw.permute(px, (r - 1,) + tuple(range(r - 1))), (shape[-1],) + shape[:-1] + (1,))
            y = lw.apply(op, cols)
            ys = lw.shape(y)
            y = lw.reshape(y, ys[:-1])
            return lw.permute(y, tuple(range(1, r)) + (0,))
        return lw.apply(op, px)

    infer_from_types = True

    def chain_parts(self, g, v):
        return ("applied",) + tuple(g[v].operands)

    def operator_form(self, g, v, span):
        x, y = g[v].operands          # dense(X @ Y) = X dense(Y), for an unbatched X and a matrix Y
        if g.type(x).batch or len(g.type(y).shape) != 2:
            return None
        return g.add("compose", [x, g.add("dense", [y], span=span)], span=span)


@register
class TAdd(Kind):
    """Elementwise sum of tensors of the same shape (`A @ x + B @ x`)."""

    name = "tadd"
    examples = ("dim n = 4\ninput A : [n, n]\ninput B : [n, n]\ninput x : [n, 3]\nexport y = A @ x + B @ x",)
    produces = "tensor"
    arity = (2, 2)

    def infer(self, g, ops, attrs, span):
        a, b = g.type(ops[0]), g.type(ops[1])
        if len(a.shape) != len(b.shape) or not all(g.dims.equal(x, y) for x, y in zip(a.shape, b.shape)):
            raise ShapeError(f"cannot add tensors of shapes {a} and {b}", span)
        from .base import join_dtype
        return TensorType(a.shape, join_dtype(a.dtype, b.dtype))

    def dense(self, g, v, vals):
        return vals[0] + vals[1]

    def flops(self, g, v, k=None):
        return sym_prod(g.type(v).shape)

    def lower(self, lw, v, x=None):
        a, b = lw.src[v].operands
        return lw.add(lw.tensor(a), lw.tensor(b))

    infer_from_types = True

    def chain_parts(self, g, v):
        return ("sum", g[v].operands)

    def operator_form(self, g, v, span):          # dense(V + W) = dense(V) + dense(W)
        return g.add("sum", [g.add("dense", [o], span=span) for o in g[v].operands], span=span)


@register
class TScale(Kind):
    """`c * x` for a tensor x and a number c."""

    name = "tscale"
    examples = ("dim n = 4\ninput x : [n, 3]\nexport y = 2.5 * x - x",)
    produces = "tensor"

    def infer(self, g, ops, attrs, span):
        return g.type(ops[0])

    def dense(self, g, v, vals):
        return g[v].attrs["c"] * vals[0]

    def flops(self, g, v, k=None):
        return sym_prod(g.type(v).shape)

    def lower(self, lw, v, x=None):
        return lw.scale(lw.tensor(lw.src[v].operands[0]), lw.src[v].attrs["c"])

    infer_from_types = True

    def chain_parts(self, g, v):
        return ("scaled", g[v].operands[0], g[v].attrs["c"])

    def operator_form(self, g, v, span):          # dense(cW) = c dense(W)
        return g.add("scale", [g.add("dense", [g[v].operands[0]], span=span)], {"c": g[v].attrs["c"]}, span=span)


@register
class TTranspose(Kind):
    """`W.T` for a tensor: swaps the last two axes (a view, no copy)."""

    name = "tT"
    examples = ("input K : [6, 4]\ninput V : [6, 3]\nexport y = K.T @ V",)
    produces = "tensor"

    def infer(self, g, ops, attrs, span):
        t = g.type(ops[0])
        if len(t.shape) < 2:
            raise TypeError_(f".T needs a matrix, got a tensor {t}", span,
                             hint="a vector has no transpose; use it as diag(d) or reshape it")
        return TensorType(t.shape[:-2] + (t.shape[-1], t.shape[-2]), t.dtype)

    def dense(self, g, v, vals):
        return np.swapaxes(vals[0], -1, -2)

    def flops(self, g, v, k=None):
        return 0

    def lower(self, lw, v, x=None):
        return lw.swap(lw.tensor(lw.src[v].operands[0]))

    infer_from_types = True

    def chain_parts(self, g, v):
        return ("transposed", g[v].operands[0])

    def operator_form(self, g, v, span):          # dense(Wᵀ) = dense(W)ᵀ
        return g.add("transpose", [g.add("dense", [g[v].operands[0]], span=span)], span=span)

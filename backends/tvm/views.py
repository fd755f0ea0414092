"""Views: primitives that only move data (reshape, permute, swap, slice, concat, flip, diagonal).

Each is one stage whose loads are index arithmetic; the scheduler inlines it into its consumers
(backends/tvm/schedule.py).  A complex operand gives a pair of views."""
from __future__ import annotations

from tvm import tirx

from opdsl.errors import BackendError

from .index import is_int, reshape_index
from .stages import VIEW, Cplx


def view(b, n, x, shape, index, keeps_last_axis):
    """A view stage (real or complex): out[i] = x[index(i)]."""
    base = n.name or "view"
    if isinstance(x, Cplx):
        re = b.compute(shape, lambda *i: x.re(*index(i)), base + "_re", VIEW, [x.re], keeps_last_axis=keeps_last_axis,
                       complex=True)
        im = b.compute(shape, lambda *i: x.im(*index(i)), base + "_im", VIEW, [x.im], keeps_last_axis=keeps_last_axis,
                       complex=True)
        return Cplx(re, im)
    return b.compute(shape, lambda *i: x(*index(i)), base, VIEW, [x], keeps_last_axis=keeps_last_axis)


def e_reshape(b, n, a):
    x = a[0]
    src = n.operands[0]
    out_sym, in_sym = b.sym_shape(n.id), b.sym_shape(src)
    out_te, in_te = b.shape(n.id), b.shape(src)
    return view(b, n, x, out_te, lambda i: reshape_index(b, i, out_sym, in_sym, out_te, in_te), True)


def e_permute(b, n, a):
    perm = tuple(n.attrs["perm"])
    shape = b.shape(n.id)

    def index(i):
        res = [None] * len(perm)
        for o, p in enumerate(perm):
            res[p] = i[o]
        return tuple(res)
    return view(b, n, a[0], shape, index, perm[-1] == len(perm) - 1)


def e_swap(b, n, a):
    return view(b, n, a[0], b.shape(n.id), lambda i: tuple(i[:-2]) + (i[-1], i[-2]), False)


def e_slice(b, n, a):
    shape = b.shape(n.id)
    nd = len(shape)
    ax = n.attrs["axis"] % nd
    start = b.dim(n.attrs["start"])

    def index(i):
        i = list(i)
        i[ax] = i[ax] + start
        return tuple(i)
    return view(b, n, a[0], shape, index, True)


def e_concat(b, n, a):
    shape = b.shape(n.id)
    nd = len(shape)
    ax = n.attrs["axis"] % nd
    offs = [0]
    for o in n.operands:
        offs.append(offs[-1] + b.dim(b.g.type(o).shape[ax]))
    complex_ = any(isinstance(x, Cplx) for x in a)
    base = n.name or "concat"

    def one(parts, suffix):
        def f(*i):
            def at(t):
                j = list(i)
                j[ax] = i[ax] - offs[t] if not is_int(offs[t], 0) else i[ax]
                return parts[t](*j)
            expr = at(len(parts) - 1)
            for t in range(len(parts) - 2, -1, -1):
                expr = tirx.if_then_else(i[ax] < offs[t + 1], at(t), expr)
            return expr
        return b.compute(shape, f, base + suffix, VIEW, parts, keeps_last_axis=(ax != nd - 1), complex=complex_)
    if complex_:
        xs = [x if isinstance(x, Cplx) else Cplx(x, None) for x in a]
        if any(x.im is None for x in xs):
            raise BackendError("concat of real and complex tensors is not supported by the tvm backend", n.span)
        return Cplx(one([x.re for x in xs], "_re"), one([x.im for x in xs], "_im"))
    return one(list(a), "")


def e_flip(b, n, a):
    shape = b.shape(n.id)
    nd = len(shape)
    ax = n.attrs["axis"] % nd
    ext = shape[ax]

    def index(i):
        i = list(i)
        i[ax] = ext - 1 - i[ax]
        return tuple(i)
    return view(b, n, a[0], shape, index, ax != nd - 1)


def e_diagonal(b, n, a):
    x = a[0]
    shape = b.shape(n.id)
    return view(b, n, x, shape, lambda i: tuple(i) + (i[-1],), False)

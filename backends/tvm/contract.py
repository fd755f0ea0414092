"""Contractions and reductions: matmul (with broadcast batch dims), einsum, sum, max, cumsum.

A contraction is one te.compute with a reduce axis per contracted letter; complex operands
(from rfft) are contracted two at a time as pairs of real tensors."""
from __future__ import annotations

import sympy as sp
from tvm import te, topi

from opdsl.errors import BackendError

from .index import const
from .stages import ELEMENTWISE, EXTERN, REAL, REDUCTION, Cplx, tensors_of
from .stages import numel_of as _numel_of


def e_matmul(b, n, a):
    sa, sb_ = b.sym_shape(n.operands[0]), b.sym_shape(n.operands[1])
    so = b.sym_shape(n.id)
    letters = "abcdefghijklmnopqrstuvw"
    nb = len(so) - 2
    batch = letters[:nb]
    # express the broadcast matmul as a contraction with explicit broadcast indices
    ta = "".join(batch[nb - (len(sa) - 2) + t] for t in range(len(sa) - 2))
    tb = "".join(batch[nb - (len(sb_) - 2) + t] for t in range(len(sb_) - 2))
    # a batch dim of size 1 against a larger one: index it at 0 (wrapped operand)
    xa = _Broadcast(a[0], sa, so, nb) if _needs_bcast(sa, so) else a[0]
    xb = _Broadcast(a[1], sb_, so, nb) if _needs_bcast(sb_, so) else a[1]
    return _contract_bcast(b, n, [xa, xb], [ta + "xz", tb + "zy"], batch + "xy", n.name or "matmul", so, [sa, sb_])


def _needs_bcast(s, so):
    nb = len(so) - 2
    off = nb - (len(s) - 2)
    return any(sp.sympify(d) == 1 and sp.sympify(so[t + off]) != 1 for t, d in enumerate(s[:-2]))


class _Broadcast:
    """An operand whose size-1 batch axes are read at index 0."""

    def __init__(self, x, s, so, nb):
        self.x = x
        off = nb - (len(s) - 2)
        self.zero = [sp.sympify(d) == 1 and sp.sympify(so[t + off]) != 1 for t, d in enumerate(s[:-2])] + [False, False]
        self.is_cplx = isinstance(x, Cplx)

    def part(self, t):
        zero = self.zero

        class P:
            op = t.op
            dtype = t.dtype

            def __call__(self, *i):
                return t(*(0 if z else j for z, j in zip(zero, i)))
        return P()


def _contract_bcast(b, n, xs, terms, out, base, so, shapes):
    """_contract where operands may be _Broadcast wrappers."""
    real = []
    for x in xs:
        if isinstance(x, _Broadcast):
            if x.is_cplx:
                real.append(Cplx(x.part(x.x.re), x.part(x.x.im)))
            else:
                real.append(x.part(x.x))
        else:
            real.append(x)
    # sizes come from the node's operand shapes; broadcast letters take the output's size
    return _contract_sized(b, n, real, terms, out, base, so, shapes)


def _contract_sized(b, n, a, terms, out, base, so, shapes):
    sizes = {}
    for c, d in zip(out, so):
        sizes[c] = b.dim(d)
    for term, s in zip(terms, shapes):
        for c, d in zip(term, s):
            if c not in sizes:
                sizes[c] = b.dim(d)
    red = [c for c in dict.fromkeys("".join(terms)) if c not in out]
    shape = tuple(sizes[c] for c in out)
    last = out[-1]
    vec = set()
    for term, x in zip(terms, a):
        if term and term[-1] == last:
            for t in tensors_of(x):
                vec.add(t.op.name)
    cplx = any(isinstance(x, Cplx) for x in a)
    dt = REAL.get(b.g.type(n.id).dtype, b.g.type(n.id).dtype)

    def load(x, term, env):
        v = x(*(env[c] for c in term))
        return v.astype(dt) if x.dtype != dt else v

    def make(parts_fn, suffix):
        def f(*i):
            rs = {c: te.reduce_axis((0, b.extent(sizes[c])), name=c + "_r") for c in red}
            env = dict(zip(out, i))
            env.update(rs)
            expr = parts_fn(env)
            return te.sum(expr, axis=list(rs.values())) if rs else expr
        reads = []
        for x in a:
            reads.extend(tensors_of(x))
        return b.compute(shape, f, base + suffix, REDUCTION if red else ELEMENTWISE, reads, vec_inputs=vec,
                         complex=cplx)
    if not cplx:
        def prod(env):
            expr = None
            for term, x in zip(terms, a):
                v = load(x, term, env)
                expr = v if expr is None else expr * v
            return expr
        return make(prod, "")
    (x, y), (tx, ty) = a, terms

    def part(v, which, term, env):
        if isinstance(v, Cplx):
            return load(v.re if which == "re" else v.im, term, env)
        return load(v, term, env) if which == "re" else None

    def re_f(env):
        r = part(x, "re", tx, env) * part(y, "re", ty, env)
        xi, yi = part(x, "im", tx, env), part(y, "im", ty, env)
        if xi is not None and yi is not None:
            r = r - xi * yi
        return r

    def im_f(env):
        ts = []
        yi, xi = part(y, "im", ty, env), part(x, "im", tx, env)
        if yi is not None:
            ts.append(part(x, "re", tx, env) * yi)
        if xi is not None:
            ts.append(xi * part(y, "re", ty, env))
        return ts[0] + ts[1] if len(ts) == 2 else ts[0]
    return Cplx(make(re_f, "_re"), make(im_f, "_im"))


def e_einsum(b, n, a):
    spec = n.attrs["spec"].replace(" ", "")
    ins, out = spec.split("->")
    terms = ins.split(",")
    if len(terms) != len(a):
        raise BackendError(f"einsum {spec!r} with {len(a)} operands", n.span)
    if any(isinstance(x, Cplx) for x in a) and len(a) != 2:
        raise BackendError("the tvm backend contracts complex tensors two at a time (primitive 'einsum')", n.span)
    shapes = [b.sym_shape(o) for o in n.operands]
    so = b.sym_shape(n.id)
    if not out:
        raise BackendError("einsum to a scalar is not supported by the tvm backend (primitive 'einsum')", n.span)
    return _contract_sized(b, n, list(a), terms, out, n.name or "einsum", so, shapes)


def e_sum(b, n, a):
    x = a[0]
    if isinstance(x, Cplx):
        raise BackendError("the tvm backend cannot sum a complex tensor (primitive 'sum')", n.span)
    s_in = b.shape(n.operands[0])
    nd = len(s_in)
    ax = n.attrs["axis"] % nd
    keep = bool(n.attrs.get("keepdims"))
    shape = b.shape(n.id)

    def f(*i):
        r = te.reduce_axis((0, b.extent(s_in[ax])), name="r")
        i = list(i)
        if keep:
            i[ax] = r
        else:
            i.insert(ax, r)
        return te.sum(x(*i), axis=r)
    vec = {x.op.name} if ax != nd - 1 else set()
    return b.compute(shape, f, n.name or "sum", REDUCTION, [x], vec_inputs=vec)


def e_cumsum(b, n, a):
    x = a[0]
    nd = len(b.g.type(n.id).shape)
    ax = n.attrs["axis"] % nd

    def one(t, suffix):
        out = (topi.gpu.cumsum if b.gpu else topi.cumsum)(t, axis=ax)
        name = out.op.name
        st = b.record(name, EXTERN, [t], numel=_numel_of(out))
        st.complex = isinstance(x, Cplx)
        return out
    if isinstance(x, Cplx):
        return Cplx(one(x.re, "_re"), one(x.im, "_im"))
    return one(x, "")


def e_max(b, n, a):
    x = a[0]
    if isinstance(x, Cplx):
        raise BackendError("the tvm backend cannot take the max of a complex tensor (primitive 'max')", n.span)
    s_in = b.shape(n.operands[0])
    nd = len(s_in)
    ax = n.attrs["axis"] % nd
    keep = bool(n.attrs.get("keepdims"))

    def f(*i):
        r = te.reduce_axis((0, b.extent(s_in[ax])), name="r")
        i = list(i)
        if keep:
            i[ax] = r
        else:
            i.insert(ax, r)
        return te.max(x(*i), axis=r)
    vec = {x.op.name} if ax != nd - 1 else set()
    return b.compute(b.shape(n.id), f, n.name or "max", REDUCTION, [x], vec_inputs=vec)


def _kernel_value(b, n, a):
    """(k(i, j): s-less kernel value of row i of X and row j of Y as a TE expression, rows, m) for
    kernel_apply and kernel_matrix.  The d coordinates of the distance are unrolled, so d must be
    known at compile time."""
    x, y, ls = a[0], a[1], a[-2]
    if any(isinstance(t, Cplx) for t in a):
        raise BackendError(f"the tvm backend has no complex {n.kind}", n.span)
    rows, d = b.shape(n.operands[0])
    m = b.shape(n.operands[1])[0]
    if not isinstance(d, int):
        raise BackendError("the tvm backend needs the point dimension d of kernel(X, Y) known at compile time",
                           n.span, hint="declare it: `dim d = 3`")
    per_dim = b.shape(n.operands[-2])[0] != 1          # ARD: one lengthscale per coordinate
    family = n.attrs["family"]
    dt = x.dtype

    def r2(i, j):
        acc = None
        for t in range(d):
            scale = ls[t if per_dim else 0]
            diff = x[i, t] / scale - y[j, t] / scale
            acc = diff * diff if acc is None else acc + diff * diff
        return acc

    def kern(i, j):
        q = r2(i, j)
        if family == "rbf":
            return te.exp(q * const(-0.5, dt))
        r = te.sqrt(te.max(q, const(1e-30, dt)))
        c = {"matern12": 1.0, "matern32": 3 ** 0.5, "matern52": 5 ** 0.5}[family]
        e = te.exp(r * const(-c, dt))
        if family == "matern12":
            return e
        poly = const(1.0, dt) + r * const(c, dt)
        if family == "matern52":
            poly = poly + q * const(5.0 / 3.0, dt)
        return poly * e
    return kern, rows, m


def e_kernel_apply(b, n, a):
    """s K(X, Y) V as one reduction over Y's points with the kernel evaluated inside it, the way
    KeOps does: nothing n x m is stored."""
    x, y, v, ls, s = a
    kern, rows, m = _kernel_value(b, n, a)
    k = b.shape(n.operands[2])[-1]

    def f(i, c):
        j = te.reduce_axis((0, b.extent(m)), name="j")
        return te.sum(kern(i, j) * v[j, c], axis=j)
    base = n.name or "kernel"
    out = b.compute((rows, k), f, base + "_sum", REDUCTION, [x, y, v, ls])
    return b.compute((rows, k), lambda i, c: out[i, c] * s[0], base, ELEMENTWISE, [out, s])


def e_kernel_matrix(b, n, a):
    """s K(X, Y) [n, m], each entry computed where it is stored."""
    x, y, ls, s = a
    kern, rows, m = _kernel_value(b, n, a)
    return b.compute((rows, m), lambda i, j: kern(i, j) * s[0], n.name or "kernel_matrix", ELEMENTWISE, [x, y, ls, s])

"""Primitive IR -> TVM Tensor Expressions: one TE stage per primitive.

`build_export(g, name)` turns one export of a primitive graph into TE tensors
(placeholders for the arguments, one `te.compute` per primitive) and records,
for every stage, what the scheduler needs to know: its role (view,
elementwise, reduction, ...), the primitive and source line it came from, and
which stages consume it.

Dims: concrete and derived-from-concrete dims become integers; a free dim
becomes one `te.var` (int32) shared by every shape that mentions it, so a
program with free dims compiles once to a kernel that takes any size
(TVM binds the var from the argument's shape and checks the others).

Complex values (the output of rfft) are pairs of real tensors (re, im); the
primitives that may meet them (views, add/sub/mul/div/scale, matmul, einsum,
irfft) handle pairs, the others refuse with a BackendError naming themselves.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import sympy as sp
import tvm
from tvm import te, topi, tirx

from opdsl.errors import BackendError, clip

from .pycodegen import Names

REAL = {"complex64": "float32", "complex128": "float64"}

# Roles a stage can have; the scheduler decides per role.
VIEW = "view"              # pure data movement: reshape, permute, swap, slice, concat
CONST = "const"            # eye, zeros: no reads
ELEMENTWISE = "elementwise"  # add, mul, unary, ...: one output element from the same element of each input
REDUCTION = "reduction"    # matmul, einsum, sum
EXTERN = "extern"          # cumsum (a sequential scan, written by topi as an opaque loop)
FFT_STAGE = "fft"          # one radix-2 butterfly stage: read twice, so never inlined


@dataclass
class Cplx:
    re: te.Tensor
    im: te.Tensor

    @property
    def shape(self):
        return self.re.shape


@dataclass
class StageInfo:
    """What the scheduler knows about one te.compute (block of the same name)."""

    name: str
    role: str
    prim: str
    node: int
    line: str = ""                 # "file:line  source text" the primitive came from
    inputs: list = field(default_factory=list)     # names of the stages/args it reads
    consumers: list = field(default_factory=list)  # names of the stages that read it
    # reductions: for each input, whether that input is indexed by the innermost output axis
    # (the axis a CPU schedule vectorizes); a view feeding it must then keep that axis contiguous
    vec_inputs: set = field(default_factory=set)
    # views: whether consecutive elements along the last axis stay consecutive in memory
    keeps_last_axis: bool = True
    complex: bool = False
    dtype: str = "float32"


class Builder:
    """Builds the TE graph of one export of a primitive graph."""

    def __init__(self, g, export: str, gpu: bool = False, dims=None):
        self.g = g
        self.gpu = gpu
        self.export = export
        self.dims = dims if dims is not None else g.dims    # with values for free dims: a specialized kernel
        self.vars: dict = {}
        self.names = Names(("main",))
        self.stages: dict[str, StageInfo] = {}
        self.args: list = []          # (name, te placeholder, info dict)
        self._node = None
        self._subs: dict = {}
        self.consts: list = []        # (name, te placeholder, numpy value): constants passed to the kernel

    # ---- dims -----------------------------------------------------------
    def subs(self, e):
        """dims.subs, memoized (it simplifies, which is slow)."""
        e = sp.sympify(e)
        hit = self._subs.get(e)
        if hit is None:
            hit = self._subs[e] = self.dims.subs(e)
        return hit

    def dim(self, e):
        """A sympy dim expression as an int (when known) or a TE int32 expression."""
        e = self.subs(e)
        if not e.free_symbols:
            return int(e)
        return self._texpr(e)

    def _texpr(self, e):
        e = sp.sympify(e)
        if e.is_Integer:
            return int(e)
        if e.is_Symbol:
            v = self.vars.get(e)
            if v is None:
                v = self.vars[e] = te.var(e.name, "int32")
            return v
        num, den = sp.fraction(sp.together(e))
        if den != 1:
            return tirx.floordiv(self._texpr(num), self._texpr(den))
        if e.is_Add:
            out = 0
            for a in e.args:
                out = out + self._texpr(a)
            return out
        if e.is_Mul:
            out = 1
            for a in e.args:
                out = out * self._texpr(a)
            return out
        if e.is_Pow and e.exp.is_Integer and e.exp > 0:
            out = 1
            b = self._texpr(e.base)
            for _ in range(int(e.exp)):
                out = out * b
            return out
        raise BackendError(f"the tvm backend cannot express the dimension {e}", self._span())

    def shape(self, v) -> tuple:
        return tuple(self.dim(d) for d in self.g.type(v).shape)

    def sym_shape(self, v) -> tuple:
        return tuple(self.subs(d) for d in self.g.type(v).shape)

    def is_one(self, d) -> bool:
        return sp.sympify(d) == 1

    def _span(self):
        return self.g[self._node].span if self._node is not None else None

    # ---- stages -----------------------------------------------------------
    def fresh(self, base):
        return self.names.fresh(base)

    def compute(self, shape, fcompute, base, role, reads=(), **info):
        name = self.fresh(base)
        t = te.compute(shape, fcompute, name=name)
        self.record(name, role, reads, dtype=str(t.dtype), **info)
        return t

    def record(self, name, role, reads=(), **info):
        n = self.g[self._node]
        line = ""
        if n.span is not None and n.span.source_line():
            line = f"{n.span.file}:{n.span.line}  {clip(n.span.source_line().strip())}"   # one per stage
        ins = []
        for r in reads:
            for t in (r.re, r.im) if isinstance(r, Cplx) else (r,):
                ins.append(t.op.name)
        st = StageInfo(name, role, n.kind, n.id, line, ins, **info)
        self.stages[name] = st
        for i in ins:
            if i in self.stages:
                self.stages[i].consumers.append(name)
        return st

    # ---- the graph ----------------------------------------------------------
    def build(self):
        g = self.g
        root = g.exports[self.export]
        vals: dict[int, object] = {}
        for v in g.live([root]):
            n = g[v]
            self._node = v
            if n.kind == "arg":
                shape = self.shape(v)
                ph = te.placeholder(shape, n.attrs["dtype"], name=self.fresh(n.attrs["name"]))
                self.args.append((n.attrs["name"], ph))
                vals[v] = ph
                continue
            emit = EMIT.get(n.kind)
            if emit is None:
                raise BackendError(f"the tvm backend has no primitive {n.kind!r}", n.span,
                                   hint="use backend='torch' or 'numpy' for this program")
            base = n.name if n.name else None
            self._base = base
            vals[v] = emit(self, n, [vals[o] for o in n.operands])
        # a trailing reshape of a computed stage is left to the caller: the kernel writes the
        # stage itself into the output's memory (row-major, so the same bytes), no copy pass
        self.out_view = None
        while g[root].kind == "reshape" and not isinstance(vals[g[root].operands[0]], Cplx) \
                and vals[g[root].operands[0]].op.name in self.stages \
                and g[g[root].operands[0]].kind != "arg":
            if self.out_view is None:
                self.out_view = tuple(g.type(root).shape)
            root = g[root].operands[0]
        self.kernel_root = root
        out = vals[root]
        self._node = root
        if isinstance(out, Cplx):
            raise BackendError(f"export {self.export!r} is complex-valued; the tvm backend returns real tensors",
                               g[root].span)
        if g[root].kind == "arg" or out.op.name not in self.stages:
            # an export that is an argument (or a stage we did not create) gets a copy stage
            src = out
            out = self.compute(src.shape, lambda *i: src(*i), self.export, ELEMENTWISE, [src])
        # kernel parameters in the order of the export's signature (unused ones included)
        have = dict(self.args)
        params = []
        for a, shape, dtype, _role in g.meta["signatures"][self.export]:
            ph = have.get(a)
            if ph is None:
                ph = te.placeholder(tuple(self.dim(d) for d in shape), dtype, name=self.fresh(a))
            params.append(ph)
        return params + [ph for _, ph, _ in self.consts], out


# ---- helpers -----------------------------------------------------------------

def _const(v, dtype):
    return tirx.const(v, dtype)


def _dtype(t):
    return t.dtype


def _bidx(idx, in_shape, out_shape):
    """Index into an operand of shape in_shape broadcast to out_shape (numpy rules)."""
    off = len(out_shape) - len(in_shape)
    out = []
    for t, d in enumerate(in_shape):
        o = out_shape[t + off]
        out.append(0 if (sp.sympify(d) == 1 and sp.sympify(o) != 1) else idx[t + off])
    return tuple(out)


def _parts(x):
    return (x.re, x.im) if isinstance(x, Cplx) else (x,)


def _base(b, n, default):
    return n.name or default


def _reshape_groups(b, out_shape, in_shape):
    """Group axes so that each group of output axes has the same size as a group of input axes."""
    hint = b.dims.hinted
    i = j = 0
    groups = []
    O, S = list(out_shape), list(in_shape)
    while i < len(O) and j < len(S):
        oi, sj = [i], [j]
        po, ps = O[i], S[j]
        i, j = i + 1, j + 1
        while sp.expand(po - ps) != 0:
            if hint(po) < hint(ps) and i < len(O):
                po = po * O[i]
                oi.append(i)
                i += 1
            elif j < len(S):
                ps = ps * S[j]
                sj.append(j)
                j += 1
            else:
                return None
        groups.append((oi, sj))
    rest_o, rest_s = list(range(i, len(O))), list(range(j, len(S)))
    if any(not b.is_one(O[t]) for t in rest_o) or any(not b.is_one(S[t]) for t in rest_s):
        return None
    if groups:
        groups[-1] = (groups[-1][0] + rest_o, groups[-1][1] + rest_s)
    else:
        groups = [(rest_o, rest_s)]
    return groups


def _prod(xs):
    out = 1
    for x in xs:
        out = out * x
    return out


def _flatten(idx, sizes):
    flat = 0
    for i, s in zip(idx, sizes):
        flat = flat * s + i
    return flat


def _reshape_index(b, idx, out_sym, in_sym, out_te, in_te):
    groups = _reshape_groups(b, out_sym, in_sym)
    if groups is None:
        groups = [(list(range(len(out_sym))), list(range(len(in_sym))))]
    res = [None] * len(in_sym)
    for oi, sj in groups:
        if len(oi) == 1 and len(sj) == 1:
            res[sj[0]] = idx[oi[0]]
            continue
        keep_o = [t for t in oi if not b.is_one(out_sym[t])]
        keep_s = [t for t in sj if not b.is_one(in_sym[t])]
        for t in sj:
            res[t] = 0
        if not keep_s:
            continue
        if len(keep_o) == 1 and len(keep_s) == 1:
            res[keep_s[0]] = idx[keep_o[0]]
            continue
        flat = _flatten([idx[t] for t in keep_o], [out_te[t] for t in keep_o]) if keep_o else 0
        if len(keep_s) == 1:
            res[keep_s[0]] = flat
            continue
        sizes = [in_te[t] for t in keep_s]
        parts = []
        stride = 1
        for s in reversed(sizes[1:]):
            parts.append(tirx.floormod(tirx.floordiv(flat, stride) if not _is_int(stride, 1) else flat, s))
            stride = stride * s
        parts.append(tirx.floordiv(flat, stride))
        parts.reverse()
        for t, p in zip(keep_s, parts):
            res[t] = p
    return tuple(res)


def _is_int(x, v):
    return isinstance(x, int) and x == v


# ---- emit table: primitive -> TE -----------------------------------------------

def _view(b, n, x, shape, index, keeps_last_axis):
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
    return _view(b, n, x, out_te, lambda i: _reshape_index(b, i, out_sym, in_sym, out_te, in_te), True)


def e_permute(b, n, a):
    perm = tuple(n.attrs["perm"])
    shape = b.shape(n.id)

    def index(i):
        res = [None] * len(perm)
        for o, p in enumerate(perm):
            res[p] = i[o]
        return tuple(res)
    return _view(b, n, a[0], shape, index, perm[-1] == len(perm) - 1)


def e_swap(b, n, a):
    return _view(b, n, a[0], b.shape(n.id), lambda i: tuple(i[:-2]) + (i[-1], i[-2]), False)


def e_slice(b, n, a):
    shape = b.shape(n.id)
    nd = len(shape)
    ax = n.attrs["axis"] % nd
    start = b.dim(n.attrs["start"])

    def index(i):
        i = list(i)
        i[ax] = i[ax] + start
        return tuple(i)
    return _view(b, n, a[0], shape, index, True)


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
                j[ax] = i[ax] - offs[t] if not _is_int(offs[t], 0) else i[ax]
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


def e_eye(b, n, a):
    dt = n.attrs["dtype"]
    m = b.dim(n.attrs["n"])
    return b.compute((m, m), lambda i, j: tirx.Select(i == j, _const(1, dt), _const(0, dt)), n.name or "eye", CONST)


def e_zeros(b, n, a):
    dt = n.attrs["dtype"]
    return b.compute(b.shape(n.id), lambda *i: _const(0, dt), n.name or "zeros", CONST)


def _binary(op):
    def emit(b, n, a):
        x, y = a
        shape = b.shape(n.id)
        so = b.sym_shape(n.id)
        sx, sy = b.sym_shape(n.operands[0]), b.sym_shape(n.operands[1])
        base = n.name or op
        if isinstance(x, Cplx) or isinstance(y, Cplx):
            return _complex_binary(b, n, op, x, y, shape, so, sx, sy, base)
        dt = b.g.type(n.id).dtype
        x, y = _cast_to(x, dt), _cast_to(y, dt)
        f = {"add": lambda p, q: p + q, "sub": lambda p, q: p - q, "mul": lambda p, q: p * q,
             "div": lambda p, q: p / q}[op]
        return b.compute(shape, lambda *i: f(x(*_bidx(i, sx, so)), y(*_bidx(i, sy, so))), base, ELEMENTWISE,
                         [x, y])
    return emit


def _cast_to(x, dt):
    """Operands of mixed float widths: read the narrower one as the result dtype."""
    if x.dtype == dt:
        return x
    return _Cast(x, dt)


class _Cast:
    def __init__(self, t, dt):
        self.t, self.dtype = t, dt
        self.op = t.op
        self.shape = t.shape

    def __call__(self, *i):
        return self.t(*i).astype(self.dtype)


def _complex_binary(b, n, op, x, y, shape, so, sx, sy, base):
    def get(v, s):
        if isinstance(v, Cplx):
            return (lambda i: v.re(*_bidx(i, s, so))), (lambda i: v.im(*_bidx(i, s, so)))
        return (lambda i: v(*_bidx(i, s, so))), None
    xr, xi = get(x, sx)
    yr, yi = get(y, sy)
    reads = [x, y]
    if op in ("add", "sub"):
        sgn = 1 if op == "add" else -1

        def im(i):
            a_ = xi(i) if xi else None
            c_ = yi(i) if yi else None
            if a_ is None:
                return c_ if sgn > 0 else -c_
            if c_ is None:
                return a_
            return a_ + c_ if sgn > 0 else a_ - c_
        re = b.compute(shape, lambda *i: xr(i) + yr(i) if sgn > 0 else xr(i) - yr(i), base + "_re", ELEMENTWISE,
                       reads, complex=True)
        imt = b.compute(shape, lambda *i: im(i), base + "_im", ELEMENTWISE, reads, complex=True)
        return Cplx(re, imt)
    if op == "mul":
        def re_f(*i):
            r = xr(i) * yr(i)
            if xi and yi:
                r = r - xi(i) * yi(i)
            return r

        def im_f(*i):
            terms = []
            if yi:
                terms.append(xr(i) * yi(i))
            if xi:
                terms.append(xi(i) * yr(i))
            return terms[0] + terms[1] if len(terms) == 2 else terms[0]
        return Cplx(b.compute(shape, re_f, base + "_re", ELEMENTWISE, reads, complex=True),
                    b.compute(shape, im_f, base + "_im", ELEMENTWISE, reads, complex=True))
    if op == "div":
        if yi is None:
            return Cplx(b.compute(shape, lambda *i: xr(i) / yr(i), base + "_re", ELEMENTWISE, reads, complex=True),
                        b.compute(shape, lambda *i: xi(i) / yr(i), base + "_im", ELEMENTWISE, reads, complex=True))

        def den(i):
            return yr(i) * yr(i) + yi(i) * yi(i)

        def re_f(*i):
            r = xr(i) * yr(i)
            if xi:
                r = r + xi(i) * yi(i)
            return r / den(i)

        def im_f(*i):
            r = -xr(i) * yi(i)
            if xi:
                r = r + xi(i) * yr(i)
            return r / den(i)
        return Cplx(b.compute(shape, re_f, base + "_re", ELEMENTWISE, reads, complex=True),
                    b.compute(shape, im_f, base + "_im", ELEMENTWISE, reads, complex=True))
    raise BackendError(f"the tvm backend cannot apply {op!r} to complex tensors", n.span)


def e_scale(b, n, a):
    x = a[0]
    c = float(n.attrs["c"])
    shape = b.shape(n.id)
    base = n.name or "scale"
    if isinstance(x, Cplx):
        dt = x.re.dtype
        return Cplx(b.compute(shape, lambda *i: x.re(*i) * _const(c, dt), base + "_re", ELEMENTWISE, [x], complex=True),
                    b.compute(shape, lambda *i: x.im(*i) * _const(c, dt), base + "_im", ELEMENTWISE, [x], complex=True))
    return b.compute(shape, lambda *i: x(*i) * _const(c, x.dtype), base, ELEMENTWISE, [x])


UNARY = {
    "neg": lambda v, dt: -v,
    "exp": lambda v, dt: te.exp(v),
    "log": lambda v, dt: te.log(v),
    "sqrt": lambda v, dt: te.sqrt(v),
    "recip": lambda v, dt: _const(1, dt) / v,
    "relu": lambda v, dt: te.max(v, _const(0, dt)),
    "abs": lambda v, dt: te.abs(v),
    "square": lambda v, dt: v * v,
    "elu1": lambda v, dt: tirx.Select(v >= _const(0, dt), v + _const(1, dt), te.exp(te.min(v, _const(0, dt)))),
}


def e_unary(b, n, a):
    x = a[0]
    fn = n.attrs["fn"]
    shape = b.shape(n.id)
    base = n.name or fn
    if isinstance(x, Cplx):
        if fn == "neg":
            return Cplx(b.compute(shape, lambda *i: -x.re(*i), base + "_re", ELEMENTWISE, [x], complex=True),
                        b.compute(shape, lambda *i: -x.im(*i), base + "_im", ELEMENTWISE, [x], complex=True))
        if fn == "abs":
            return b.compute(shape, lambda *i: te.sqrt(x.re(*i) * x.re(*i) + x.im(*i) * x.im(*i)), base,
                             ELEMENTWISE, [x])
        raise BackendError(f"the tvm backend cannot apply unary {fn!r} to a complex tensor", n.span)
    f = UNARY.get(fn)
    if f is None:
        raise BackendError(f"the tvm backend has no unary function {fn!r} (primitive 'unary')", n.span)
    return b.compute(shape, lambda *i: f(x(*i), x.dtype), base, ELEMENTWISE, [x])


def e_cast(b, n, a):
    x = a[0]
    if isinstance(x, Cplx):
        raise BackendError("the tvm backend cannot cast a complex tensor (primitive 'cast')", n.span)
    dt = n.attrs["dtype"]
    return b.compute(b.shape(n.id), lambda *i: x(*i).astype(dt), n.name or "cast", ELEMENTWISE, [x])


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
            for t in _parts(x):
                vec.add(t.op.name)
    cplx = any(isinstance(x, Cplx) for x in a)
    dt = REAL.get(b.g.type(n.id).dtype, b.g.type(n.id).dtype)

    def load(x, term, env):
        v = x(*(env[c] for c in term))
        return v.astype(dt) if x.dtype != dt else v

    def make(parts_fn, suffix):
        def f(*i):
            rs = {c: te.reduce_axis((0, sizes[c]), name=c + "_r") for c in red}
            env = dict(zip(out, i))
            env.update(rs)
            expr = parts_fn(env)
            return te.sum(expr, axis=list(rs.values())) if rs else expr
        reads = []
        for x in a:
            reads.extend(_parts(x))
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
        r = te.reduce_axis((0, s_in[ax]), name="r")
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
        st = b.record(name, EXTERN, [t])
        st.complex = isinstance(x, Cplx)
        return out
    if isinstance(x, Cplx):
        return Cplx(one(x.re, "_re"), one(x.im, "_im"))
    return one(x, "")


# ---- FFT: radix-2 stages, Bluestein for other lengths ---------------------------------
#
# A power-of-two length n is a bit-reversal (a view) and log2(n) radix-2
# butterfly stages, each one te.compute over the whole tensor.  Any other
# length uses Bluestein's algorithm: the DFT as a convolution with a chirp,
# done with three radix-2 FFTs of a power of two M >= 2n - 1.  Both are
# O(n log n); nothing falls back to an O(n^2) DFT matrix.

def _fft_size(b, n):
    m = b.dims.value(n.attrs["n"])
    if m is None:
        raise BackendError(f"the tvm backend needs a known FFT length for primitive {n.kind!r}, got n = {n.attrs['n']}",
                           n.span, hint="give the dim a value (dim n = 1024 or --dim n=1024)")
    if m < 1:
        raise BackendError(f"primitive {n.kind!r} needs a positive length, got n = {m}", n.span)
    return m


def _bitrev(p, bits):
    r = 0
    for k in range(bits):
        r = r + (((p >> k) & 1) << (bits - 1 - k))
    return r


def _zeros_like(b, shape, dt, base):
    return b.compute(shape, lambda *i: _const(0, dt), base, CONST)


def _radix2(b, base, re, im, shape_b, size, dt, inverse):
    """Unnormalized DFT (inverse: exp(+2 pi i tk/n)) of [*shape_b, size], size a power of two.

    One te.extern: per row (rows in parallel) a bit-reversed copy, then log2(size) in-place
    butterfly passes, with the twiddles read from a table computed once per call."""
    bits = size.bit_length() - 1
    if bits == 0:
        return re, im
    half = size // 2
    sign = 1.0 if inverse else -1.0
    tw_re = b.compute((half,), _twiddle(te.cos, 1.0, size, dt), f"{base}_tw_re", FFT_STAGE)
    tw_im = b.compute((half,), _twiddle(te.sin, sign, size, dt), f"{base}_tw_im", FFT_STAGE)
    rows = _prod(shape_b)
    shape = tuple(shape_b) + (size,)

    def gen(ins, outs):
        from tvm.script.ir_builder import IRBuilder
        from tvm.script.ir_builder import tirx as T
        with IRBuilder() as ib:
            xr, xi, wr, wi = (T.buffer_proxy(x) for x in ins)
            yr, yi = (T.buffer_proxy(x) for x in outs)
            with T.parallel(0, rows) as r:
                o = r * size
                with T.serial(0, size) as p:
                    src = o + _bitrev(p, bits)
                    yr[o + p] = xr[src]
                    yi[o + p] = xi[src]
                tr = T.buffer_proxy(T.decl_buffer([1], dt, scope="local"))
                ti = T.buffer_proxy(T.decl_buffer([1], dt, scope="local"))
                with T.serial(0, bits) as s:
                    h = tirx.const(1, "int32") << s
                    with T.serial(0, half) as q:
                        k = tirx.floormod(q, h)
                        i = o + tirx.floordiv(q, h) * 2 * h + k
                        j = i + h
                        t = k * tirx.floordiv(tirx.const(half, "int32"), h)
                        tr[0] = yr[j] * wr[t] - yi[j] * wi[t]
                        ti[0] = yr[j] * wi[t] + yi[j] * wr[t]
                        yr[j] = yr[i] - tr[0]
                        yi[j] = yi[i] - ti[0]
                        yr[i] = yr[i] + tr[0]
                        yi[i] = yi[i] + ti[0]
        return ib.get()
    name = b.fresh(base + "_fft")
    from tvm.tirx import decl_buffer
    bufs = [decl_buffer(shape, dt, f"{name}_re"), decl_buffer(shape, dt, f"{name}_im")]
    outs = te.extern([shape, shape], [re, im, tw_re, tw_im], gen, dtype=[dt, dt], out_buffers=bufs,
                     name=name, tag=name)
    b.record(outs[0].op.name, EXTERN, [re, im, tw_re, tw_im], dtype=str(dt))
    return outs[0], outs[1]


def _twiddle(fn, sign, size, dt):
    def f(k):
        v = fn(_const(2 * math.pi / size, dt) * k.astype(dt))
        return v if sign == 1.0 else _const(sign, dt) * v
    return f


def _chirp(n, sign, dt, which, m_max):
    """cos / sin part of exp(sign * i * pi * (m^2 mod 2n) / n) at index m (0 <= m < m_max)."""
    # indices are int32: m * m overflows from m = 46341 on (wrong results from 65536 on, where
    # the product no longer fits 32 bits unsigned), so longer transforms square in int64
    wide = (m_max - 1) ** 2 >= 2 ** 31

    def f(m):
        sq = m.astype("int64") * m.astype("int64") if wide else m * m
        ang = _const(math.pi / n, dt) * tirx.floormod(sq, 2 * n).astype(dt)
        return te.cos(ang) if which == 0 else _const(sign, dt) * te.sin(ang)
    return f


# Loads under a condition go under tirx.if_then_else, not tirx.Select: a Select evaluates both
# arms, and TVM's simplifier rewrites each arm as if the condition were known (true in the first,
# false in the second), so an index that is safe as written (clamped, or mirrored into range) can
# become one that is in range only when the condition holds, yet is loaded when it does not.
# That read before the start of a buffer in the Bluestein FFT of irfft (issue 12: a segfault
# when the page before the buffer was unmapped).  if_then_else evaluates only the arm taken.  A
# Select (it vectorizes) may hold only loads valid at every index: _select_safe, in e_tril.


def _bluestein(b, base, re, im, shape_b, n, dt, inverse):
    """Unnormalized DFT of length n (any n) as a chirp convolution of power-of-two length M."""
    M = 1
    while M < 2 * n - 1:
        M *= 2
    sign = 1.0 if inverse else -1.0       # w_m = exp(sign * i * pi m^2 / n)
    wr, wi = _chirp(n, sign, dt, 0, M), _chirp(n, sign, dt, 1, M)
    zero = _const(0, dt)
    shape = tuple(shape_b) + (M,)

    def a_part(which):            # a[t] = x[t] w_t for t < n, 0 beyond (x is read only for t < n)
        def f(*i):
            t = i[-1]
            xr, xi = re(*i[:-1], t), im(*i[:-1], t)
            v = xr * wr(t) - xi * wi(t) if which == 0 else xr * wi(t) + xi * wr(t)
            return tirx.if_then_else(t < n, v, zero)
        return f
    ar = b.compute(shape, a_part(0), f"{base}_chirp_re", ELEMENTWISE, [re, im])
    ai = b.compute(shape, a_part(1), f"{base}_chirp_im", ELEMENTWISE, [re, im])

    def bb_part(which):           # conj(w_m) at m and at M - m (negative lags)
        def f(m):
            lag = tirx.Select(m < n, m, M - m)
            v = wr(lag) if which == 0 else -wi(lag)
            return tirx.Select(tirx.any(m < n, m > M - n), v, zero)
        return f
    br = b.compute((M,), bb_part(0), f"{base}_kernel_re", FFT_STAGE)
    bi = b.compute((M,), bb_part(1), f"{base}_kernel_im", FFT_STAGE)
    Ar, Ai = _radix2(b, base + "_a", ar, ai, shape_b, M, dt, False)
    Br, Bi = _radix2(b, base + "_b", br, bi, (), M, dt, False)

    def prod(which):
        def f(*i):
            k = i[-1]
            x_r, x_i, y_r, y_i = Ar(*i), Ai(*i), Br(k), Bi(k)
            return x_r * y_r - x_i * y_i if which == 0 else x_r * y_i + x_i * y_r
        return f
    cr = b.compute(shape, prod(0), f"{base}_prod_re", ELEMENTWISE, [Ar, Ai, Br, Bi])
    ci = b.compute(shape, prod(1), f"{base}_prod_im", ELEMENTWISE, [Ar, Ai, Br, Bi])
    Cr, Ci = _radix2(b, base + "_c", cr, ci, shape_b, M, dt, True)
    inv = _const(1.0 / M, dt)
    out = tuple(shape_b) + (n,)

    def fin(which):               # X[k] = w_k c[k] / M
        def f(*i):
            k = i[-1]
            xr, xi = Cr(*i) * inv, Ci(*i) * inv
            return xr * wr(k) - xi * wi(k) if which == 0 else xr * wi(k) + xi * wr(k)
        return f
    return (b.compute(out, fin(0), f"{base}_out_re", ELEMENTWISE, [Cr, Ci]),
            b.compute(out, fin(1), f"{base}_out_im", ELEMENTWISE, [Cr, Ci]))


def _dft(b, base, re, im, shape_b, n, dt, inverse):
    if n & (n - 1) == 0:
        return _radix2(b, base, re, im, shape_b, n, dt, inverse)
    return _bluestein(b, base, re, im, shape_b, n, dt, inverse)


def e_rfft(b, n, a):
    x = a[0]
    if isinstance(x, Cplx):
        raise BackendError("primitive 'rfft' needs a real input", n.span)
    size = _fft_size(b, n)
    xs = b.shape(n.operands[0])
    m, shape_b, dt = xs[-1], xs[:-1], x.dtype
    base = n.name or "rfft"
    shape = tuple(shape_b) + (size,)
    zero = _const(0, dt)
    if isinstance(m, int) and m == size:
        re = x
    else:
        def pad(*i):
            return tirx.if_then_else(i[-1] < m, x(*i[:-1], tirx.min(i[-1], m - 1)), zero)
        re = b.compute(shape, pad, base + "_pad", VIEW, [x])
    im = _zeros_like(b, shape, dt, base + "_zero")
    Xr, Xi = _dft(b, base, re, im, shape_b, size, dt, False)
    half = size // 2 + 1
    out = tuple(shape_b) + (half,)
    return Cplx(b.compute(out, lambda *i: Xr(*i), base + "_re", VIEW, [Xr], complex=True),
                b.compute(out, lambda *i: Xi(*i), base + "_im", VIEW, [Xi], complex=True))


def e_irfft(b, n, a):
    x = a[0]
    if not isinstance(x, Cplx):
        raise BackendError("primitive 'irfft' needs a complex input", n.span)
    size = _fft_size(b, n)
    xs = b.shape(n.operands[0])
    m, shape_b, dt = xs[-1], xs[:-1], x.re.dtype
    base = n.name or "irfft"
    zero = _const(0, dt)
    half = size // 2
    shape = tuple(shape_b) + (size,)

    def spectrum(part, conj):     # the Hermitian spectrum of length n from its first n//2 + 1 entries
        def f(*i):
            k = i[-1]
            mirrored = k > half
            src = tirx.Select(mirrored, size - k, k)          # in [0, size // 2]: arithmetic only
            v = part(*i[:-1], tirx.min(src, m - 1))
            if conj:                                            # the sign, not the load, is selected
                v = v * tirx.Select(mirrored, _const(-1, dt), _const(1, dt))
            return tirx.if_then_else(src < m, v, zero)
        return f
    yr = b.compute(shape, spectrum(x.re, False), base + "_full_re", VIEW, [x.re], keeps_last_axis=False)
    yi = b.compute(shape, spectrum(x.im, True), base + "_full_im", VIEW, [x.im], keeps_last_axis=False)
    Yr, _ = _dft(b, base, yr, yi, shape_b, size, dt, True)
    inv = _const(1.0 / size, dt)
    return b.compute(shape, lambda *i: Yr(*i) * inv, base, ELEMENTWISE, [Yr])


# ---- the primitives of the structured families ------------------------------------------

def e_max(b, n, a):
    x = a[0]
    if isinstance(x, Cplx):
        raise BackendError("the tvm backend cannot take the max of a complex tensor (primitive 'max')", n.span)
    s_in = b.shape(n.operands[0])
    nd = len(s_in)
    ax = n.attrs["axis"] % nd
    keep = bool(n.attrs.get("keepdims"))

    def f(*i):
        r = te.reduce_axis((0, s_in[ax]), name="r")
        i = list(i)
        if keep:
            i[ax] = r
        else:
            i.insert(ax, r)
        return te.max(x(*i), axis=r)
    vec = {x.op.name} if ax != nd - 1 else set()
    return b.compute(b.shape(n.id), f, n.name or "max", REDUCTION, [x], vec_inputs=vec)


def e_tril(b, n, a):
    x = a[0]
    if isinstance(x, Cplx):
        raise BackendError("the tvm backend cannot apply primitive 'tril' to a complex tensor", n.span)
    k = int(n.attrs.get("k", 0))
    fill = float(n.attrs.get("fill", 0.0))
    dt = x.dtype
    fv = tirx.const(fill, dt) if math.isfinite(fill) else _inf(dt, fill)
    # a Select vectorizes; it is safe when x's loads are valid at every index (see _select_safe)
    pick = tirx.Select if _select_safe(b, x) else tirx.if_then_else
    return b.compute(b.shape(n.id), lambda *i: pick(i[-1] - i[-2] <= k, x(*i), fv), n.name or "tril",
                     ELEMENTWISE, [x])


_RESOLVABLE = {"Select", "Min", "Max", "FloorDiv", "FloorMod"}


def _select_safe(b, t) -> bool:
    """Whether tensor t, inlined into an arm of a Select, loads only at indices valid for every
    index of t: t is an argument or a stage never inlined (a matmul: what every kind masks), or an
    elementwise / constant stage over such tensors with no condition, clamp or modulus that TVM
    could resolve under the Select's condition (see _chirp)."""
    import tvm_ffi
    st = b.stages.get(t.op.name)
    if st is None or st.role in (REDUCTION, EXTERN, FFT_STAGE):
        return True
    if st.role not in (ELEMENTWISE, CONST):
        return False
    found = []

    def visit(v):
        name = type(v).__name__
        if name in _RESOLVABLE or (name == "Call" and str(v.op.name) == "prim.if_then_else"):
            found.append(name)
    tvm_ffi.structural_walk(list(t.op.body), visit)
    return not found and all(_select_safe(b, u) for u in t.op.input_tensors)


def _inf(dt, sign):
    return tirx.infinity(dt) if sign > 0 else -tirx.infinity(dt)


def e_flip(b, n, a):
    shape = b.shape(n.id)
    nd = len(shape)
    ax = n.attrs["axis"] % nd
    ext = shape[ax]

    def index(i):
        i = list(i)
        i[ax] = ext - 1 - i[ax]
        return tuple(i)
    return _view(b, n, a[0], shape, index, ax != nd - 1)


def e_shift(b, n, a):
    x = a[0]
    c = float(n.attrs["c"])
    if isinstance(x, Cplx):
        raise BackendError("the tvm backend cannot apply primitive 'shift' to a complex tensor", n.span)
    return b.compute(b.shape(n.id), lambda *i: x(*i) + _const(c, x.dtype), n.name or "shift", ELEMENTWISE, [x])


def e_tri(b, n, a):
    dt = n.attrs["dtype"]
    k = int(n.attrs.get("k", 0))
    rows, cols = b.dim(n.attrs["n"]), b.dim(n.attrs["m"])
    return b.compute((rows, cols), lambda i, j: tirx.Select(j <= i + k, _const(1, dt), _const(0, dt)),
                     n.name or "tri", CONST)


def e_orf(b, n, a):
    """The FAVOR+ features are drawn with numpy at compile time and passed to the kernel as a constant."""
    from opdsl.primitives import orthogonal_features
    m, d = b.dims.value(n.attrs["m"]), b.dims.value(n.attrs["d"])
    if m is None or d is None:
        raise BackendError("primitive 'orf' needs known sizes in the tvm backend", n.span)
    dt = n.attrs["dtype"]
    value = orthogonal_features(m, d, n.attrs["seed"]).astype(dt)
    name = b.fresh(f"orf_{m}x{d}_seed{int(n.attrs['seed'])}")
    ph = te.placeholder((m, d), dt, name=name)
    b.consts.append((name, ph, value))
    return ph


def e_diagonal(b, n, a):
    x = a[0]
    shape = b.shape(n.id)
    return _view(b, n, x, shape, lambda i: tuple(i) + (i[-1],), False)


def e_fill(b, n, a):
    dt = n.attrs["dtype"]
    v = sp.sympify(n.attrs["value"])
    if v.free_symbols:
        val = b.dim(v)
        value = (lambda: _as(val, dt)) if not isinstance(val, int) else (lambda: _const(val, dt))
    else:
        value = (lambda: _const(float(v), dt))
    return b.compute(b.shape(n.id), lambda *i: value(), n.name or "fill", CONST)


def _as(e, dt):
    return e.astype(dt)


EMIT = {
    "eye": e_eye,
    "zeros": e_zeros,
    "reshape": e_reshape,
    "permute": e_permute,
    "swap": e_swap,
    "matmul": e_matmul,
    "einsum": e_einsum,
    "add": _binary("add"),
    "sub": _binary("sub"),
    "mul": _binary("mul"),
    "div": _binary("div"),
    "scale": e_scale,
    "unary": e_unary,
    "sum": e_sum,
    "cumsum": e_cumsum,
    "concat": e_concat,
    "slice": e_slice,
    "rfft": e_rfft,
    "irfft": e_irfft,
    "cast": e_cast,
    "max": e_max,
    "tril": e_tril,
    "flip": e_flip,
    "shift": e_shift,
    "tri": e_tri,
    "orf": e_orf,
    "diagonal": e_diagonal,
    "fill": e_fill,
}

from .tvm_linalg import LINALG_EMIT  # noqa: E402  (it builds on the helpers above)

EMIT.update(LINALG_EMIT)

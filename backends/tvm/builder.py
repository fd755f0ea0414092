"""Primitive IR -> TVM Tensor Expressions: one TE stage per primitive.

`Builder(g, export).build()` turns one export of a primitive graph into TE tensors
(placeholders for the arguments, one `te.compute` per primitive, through the emit
table in emit.py) and records, for every stage, what the scheduler needs to know
(stages.StageInfo): its role (view, elementwise, reduction, ...), the primitive and
source line it came from, and which stages consume it.

Dims: concrete and derived-from-concrete dims become integers; a free dim
becomes one `te.var` (int32) shared by every shape that mentions it, so a
program with free dims compiles once to a kernel that takes any size
(TVM binds the var from the argument's shape and checks the others).

Index width: TE's index arithmetic follows the dtype of the shapes.  An export with a value of
WIDE_ELEMENTS (2³¹) elements or more — exact attention at L = 16384 with 8 heads has an
8 × 16384² score tensor — is built with int64 shapes, loop variables and free-dim vars, so its
flattened offsets do not wrap; every other export keeps int32 (narrower, faster indexing).

Complex values (the output of rfft) are pairs of real tensors (stages.Cplx); the
primitives that may meet them (views, add/sub/mul/div/scale, matmul, einsum,
irfft) handle pairs, the others refuse with a BackendError naming themselves.
"""
from __future__ import annotations

import sympy as sp
from tvm import te, tirx

from opdsl.errors import BackendError, clip

from ..pynames import Names
from .emit import EMIT
from .stages import ELEMENTWISE, Cplx, StageInfo, numel as _numel


WIDE_ELEMENTS = 2 ** 31       # a value this large needs 64-bit indices (tests lower it to cover the int64 paths)


class Builder:
    """Builds the TE graph of one export of a primitive graph."""

    def __init__(self, g, export: str, gpu: bool = False, dims=None):
        self.g = g
        self.gpu = gpu
        self.export = export
        self.dims = dims if dims is not None else g.dims    # with values for free dims: a specialized kernel
        self.vars: dict = {}
        self._subs: dict = {}
        self.index = "int64" if self._largest() >= WIDE_ELEMENTS else "int32"
        self.names = Names(("main",))
        self.stages: dict[str, StageInfo] = {}
        self.args: list = []          # (name, te placeholder, info dict)
        self._node = None
        self.consts: list = []        # (name, te placeholder, numpy value): constants passed to the kernel

    # ---- dims -----------------------------------------------------------
    def subs(self, e):
        """dims.subs, memoized (it simplifies, which is slow)."""
        e = sp.sympify(e)
        hit = self._subs.get(e)
        if hit is None:
            hit = self._subs[e] = self.dims.subs(e)
        return hit

    def _largest(self) -> int:
        """Elements of the export's largest value whose size is known (free dims: unknown, skipped;
        a free-dim kernel specialized to a call's sizes is built with them known)."""
        most = 0
        for v in self.g.live([self.g.exports[self.export]]):
            n = sp.Integer(1)
            for d in self.g.type(v).shape:
                n = n * self.subs(d)
            if not n.free_symbols:
                most = max(most, int(n))
        return most

    def dim(self, e):
        """A sympy dim expression as an int (when known) or a TE expression (free dims)."""
        e = self.subs(e)
        if not e.free_symbols:
            return int(e)
        return self._texpr(e)

    def extent(self, n):
        """A size as TE takes it for a stage's shape or a reduction's range: of the index width (a
        Python int would make an int32 extent, and so int32 loop variables and offsets)."""
        return tirx.IntImm("int64", n) if self.index == "int64" and isinstance(n, int) else n

    def extents(self, shape) -> tuple:
        return tuple(self.extent(n) for n in shape)

    def _texpr(self, e):
        e = sp.sympify(e)
        if e.is_Integer:
            return int(e)
        if e.is_Symbol:
            v = self.vars.get(e)
            if v is None:
                v = self.vars[e] = te.var(e.name, self.index)
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
        t = te.compute(self.extents(shape), fcompute, name=name)
        self.record(name, role, reads, dtype=str(t.dtype), numel=_numel(shape), **info)
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
            if n.is_arg:
                shape = self.shape(v)
                ph = te.placeholder(self.extents(shape), n.attrs["dtype"], name=self.fresh(n.attrs["name"]))
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
                and not g[g[root].operands[0]].is_arg:
            if self.out_view is None:
                self.out_view = tuple(g.type(root).shape)
            root = g[root].operands[0]
        self.kernel_root = root
        out = vals[root]
        self._node = root
        if isinstance(out, Cplx):
            raise BackendError(f"export {self.export!r} is complex-valued; the tvm backend returns real tensors",
                               g[root].span)
        if g[root].is_arg or out.op.name not in self.stages:
            # an export that is an argument (or a stage we did not create) gets a copy stage
            src = out
            out = self.compute(src.shape, lambda *i: src(*i), self.export, ELEMENTWISE, [src])
        self.out_name = out.op.name
        # kernel parameters in the order of the export's signature (unused ones included)
        have = dict(self.args)
        params = []
        for a, shape, dtype, _role in g.meta["signatures"][self.export]:
            ph = have.get(a)
            if ph is None:
                ph = te.placeholder(self.extents(tuple(self.dim(d) for d in shape)), dtype, name=self.fresh(a))
            params.append(ph)
        return params + [ph for _, ph, _ in self.consts], out

"""Constants and elementwise primitives: eye, zeros, tri, fill, the FAVOR+ features, add / sub /
mul / div (with numpy broadcasting, real or complex), scale, shift, unary functions, cast, tril."""
from __future__ import annotations

import math

import sympy as sp
from tvm import te, tirx

from opdsl.errors import BackendError

from .index import broadcast_index, const, infinity
from .stages import CONST, ELEMENTWISE, EXTERN, FFT_STAGE, REDUCTION, Cplx


def e_eye(b, n, a):
    dt = n.attrs["dtype"]
    m = b.dim(n.attrs["n"])
    return b.compute((m, m), lambda i, j: tirx.Select(i == j, const(1, dt), const(0, dt)), n.name or "eye", CONST)


def e_zeros(b, n, a):
    dt = n.attrs["dtype"]
    return b.compute(b.shape(n.id), lambda *i: const(0, dt), n.name or "zeros", CONST)


def binary(op):
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
        return b.compute(shape, lambda *i: f(x(*broadcast_index(i, sx, so)), y(*broadcast_index(i, sy, so))), base, ELEMENTWISE,
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
            return (lambda i: v.re(*broadcast_index(i, s, so))), (lambda i: v.im(*broadcast_index(i, s, so)))
        return (lambda i: v(*broadcast_index(i, s, so))), None
    rule = _COMPLEX.get(op)
    if rule is None:
        raise BackendError(f"the tvm backend cannot apply {op!r} to complex tensors", n.span)
    re_f, im_f = rule(*get(x, sx), *get(y, sy))
    reads = [x, y]
    return Cplx(b.compute(shape, re_f, base + "_re", ELEMENTWISE, reads, complex=True),
                b.compute(shape, im_f, base + "_im", ELEMENTWISE, reads, complex=True))


# (real, imaginary) parts of x op y from the parts of x and y; a missing imaginary part (None) is a
# real operand, so a real times a complex tensor costs two products, not four
def _c_addsub(sgn):
    def parts(xr, xi, yr, yi):
        def im(*i):
            a_ = xi(i) if xi else None
            c_ = yi(i) if yi else None
            if a_ is None:
                return c_ if sgn > 0 else -c_
            if c_ is None:
                return a_
            return a_ + c_ if sgn > 0 else a_ - c_
        return (lambda *i: xr(i) + yr(i) if sgn > 0 else xr(i) - yr(i)), im
    return parts


def _c_mul(xr, xi, yr, yi):
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
    return re_f, im_f


def _c_div(xr, xi, yr, yi):
    if yi is None:
        return (lambda *i: xr(i) / yr(i)), (lambda *i: xi(i) / yr(i))

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
    return re_f, im_f


_COMPLEX = {"add": _c_addsub(1), "sub": _c_addsub(-1), "mul": _c_mul, "div": _c_div}


def e_scale(b, n, a):
    x = a[0]
    c = float(n.attrs["c"])
    shape = b.shape(n.id)
    base = n.name or "scale"
    if isinstance(x, Cplx):
        dt = x.re.dtype
        return Cplx(b.compute(shape, lambda *i: x.re(*i) * const(c, dt), base + "_re", ELEMENTWISE, [x], complex=True),
                    b.compute(shape, lambda *i: x.im(*i) * const(c, dt), base + "_im", ELEMENTWISE, [x], complex=True))
    return b.compute(shape, lambda *i: x(*i) * const(c, x.dtype), base, ELEMENTWISE, [x])


UNARY = {
    "neg": lambda v, dt: -v,
    "exp": lambda v, dt: te.exp(v),
    "log": lambda v, dt: te.log(v),
    "sqrt": lambda v, dt: te.sqrt(v),
    "recip": lambda v, dt: const(1, dt) / v,
    "relu": lambda v, dt: te.max(v, const(0, dt)),
    "abs": lambda v, dt: te.abs(v),
    "square": lambda v, dt: v * v,
    "elu1": lambda v, dt: tirx.Select(v >= const(0, dt), v + const(1, dt), te.exp(te.min(v, const(0, dt)))),
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


def e_tril(b, n, a):
    x = a[0]
    if isinstance(x, Cplx):
        raise BackendError("the tvm backend cannot apply primitive 'tril' to a complex tensor", n.span)
    k = int(n.attrs.get("k", 0))
    fill = float(n.attrs.get("fill", 0.0))
    dt = x.dtype
    fv = tirx.const(fill, dt) if math.isfinite(fill) else infinity(dt, fill)
    # a Select vectorizes; it is safe when x's loads are valid at every index (see _select_safe)
    pick = tirx.Select if _select_safe(b, x) else tirx.if_then_else
    return b.compute(b.shape(n.id), lambda *i: pick(i[-1] - i[-2] <= k, x(*i), fv), n.name or "tril",
                     ELEMENTWISE, [x])


_RESOLVABLE = {"Select", "Min", "Max", "FloorDiv", "FloorMod"}


def _select_safe(b, t) -> bool:
    """Whether tensor t, inlined into an arm of a Select, loads only at indices valid for every
    index of t: t is an argument or a stage never inlined (a matmul: what every kind masks), or an
    elementwise / constant stage over such tensors with no condition, clamp or modulus that TVM
    could resolve under the Select's condition (see the note on conditional loads in fft.py)."""
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


def e_shift(b, n, a):
    x = a[0]
    c = float(n.attrs["c"])
    if isinstance(x, Cplx):
        raise BackendError("the tvm backend cannot apply primitive 'shift' to a complex tensor", n.span)
    return b.compute(b.shape(n.id), lambda *i: x(*i) + const(c, x.dtype), n.name or "shift", ELEMENTWISE, [x])


def e_tri(b, n, a):
    dt = n.attrs["dtype"]
    k = int(n.attrs.get("k", 0))
    rows, cols = b.dim(n.attrs["n"]), b.dim(n.attrs["m"])
    return b.compute((rows, cols), lambda i, j: tirx.Select(j <= i + k, const(1, dt), const(0, dt)),
                     n.name or "tri", CONST)


def e_const(b, n, a):
    """A constant is computed with numpy at compile time (primitives.const_value) and passed to the
    kernel as an argument after the export's own; the manifest holds its data."""
    from opdsl.primitives import const_value
    dt = n.attrs["dtype"]
    value = const_value(n.attrs["expr"]).astype(dt)
    name = b.fresh(n.attrs["name"])
    ph = te.placeholder(b.extents(value.shape), dt, name=name)
    b.consts.append((name, ph, value))
    return ph


def e_fill(b, n, a):
    dt = n.attrs["dtype"]
    if dt.startswith("complex"):             # complex zeros (a spectrum's): a pair of real fills
        if float(sp.sympify(n.attrs["value"])) != 0.0:
            raise BackendError("the tvm backend fills complex tensors with zeros only (primitive 'fill')", n.span)
        real = "float64" if dt == "complex128" else "float32"
        base = n.name or "fill"
        return Cplx(b.compute(b.shape(n.id), lambda *i: const(0, real), base + "_re", CONST, complex=True),
                    b.compute(b.shape(n.id), lambda *i: const(0, real), base + "_im", CONST, complex=True))
    v = sp.sympify(n.attrs["value"])
    if v.free_symbols:
        val = b.dim(v)
        value = (lambda: _as(val, dt)) if not isinstance(val, int) else (lambda: const(val, dt))
    else:
        value = (lambda: const(float(v), dt))
    return b.compute(b.shape(n.id), lambda *i: value(), n.name or "fill", CONST)


def _as(e, dt):
    return e.astype(dt)

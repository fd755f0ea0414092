"""rfft and irfft: radix-2 stages, Bluestein for other lengths; rfftn and irfftn from them (the
1-d transform along the last axis, complex DFTs along the others, each axis moved last as a view).

A power-of-two length n is a bit-reversal (a view) and log2(n) radix-2
butterfly stages, each one te.compute over the whole tensor.  Any other
length uses Bluestein's algorithm: the DFT as a convolution with a chirp,
done with three radix-2 FFTs of a power of two M >= 2n - 1.  Both are
O(n log n); nothing falls back to an O(n^2) DFT matrix.
"""
from __future__ import annotations

import math

from tvm import te, tirx

from opdsl.errors import BackendError

from .index import const, prod
from .stages import CONST, ELEMENTWISE, EXTERN, FFT_STAGE, VIEW, Cplx
from .stages import numel_of as _numel_of


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
    return b.compute(shape, lambda *i: const(0, dt), base, CONST)


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
    rows = prod(shape_b)
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
    b.record(outs[0].op.name, EXTERN, [re, im, tw_re, tw_im], dtype=str(dt), complex=True,
             numel=_numel_of(outs[0]))
    return outs[0], outs[1]


def _twiddle(fn, sign, size, dt):
    def f(k):
        v = fn(const(2 * math.pi / size, dt) * k.astype(dt))
        return v if sign == 1.0 else const(sign, dt) * v
    return f


def _chirp(n, sign, dt, which, m_max):
    """cos / sin part of exp(sign * i * pi * (m^2 mod 2n) / n) at index m (0 <= m < m_max)."""
    # indices are int32: m * m overflows from m = 46341 on (wrong results from 65536 on, where
    # the product no longer fits 32 bits unsigned), so longer transforms square in int64
    wide = (m_max - 1) ** 2 >= 2 ** 31

    def f(m):
        sq = m.astype("int64") * m.astype("int64") if wide else m * m
        ang = const(math.pi / n, dt) * tirx.floormod(sq, 2 * n).astype(dt)
        return te.cos(ang) if which == 0 else const(sign, dt) * te.sin(ang)
    return f


# Loads under a condition go under tirx.if_then_else, not tirx.Select: a Select evaluates both
# arms, and TVM's simplifier rewrites each arm as if the condition were known (true in the first,
# false in the second), so an index that is safe as written (clamped, or mirrored into range) can
# become one that is in range only when the condition holds, yet is loaded when it does not.
# That read before the start of a buffer in the Bluestein FFT of irfft (issue 12: a segfault
# when the page before the buffer was unmapped).  if_then_else evaluates only the arm taken.  A
# Select (it vectorizes) may hold only loads valid at every index: elementwise._select_safe, in e_tril.


def _bluestein(b, base, re, im, shape_b, n, dt, inverse):
    """Unnormalized DFT of length n (any n) as a chirp convolution of power-of-two length M."""
    M = 1
    while M < 2 * n - 1:
        M *= 2
    sign = 1.0 if inverse else -1.0       # w_m = exp(sign * i * pi m^2 / n)
    wr, wi = _chirp(n, sign, dt, 0, M), _chirp(n, sign, dt, 1, M)
    zero = const(0, dt)
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
    inv = const(1.0 / M, dt)
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


def _rfft_last(b, base, x, shape_b, m, size, dt):
    """The rfft of real x [*shape_b, m] along its last axis, zero-padded (or cut) to `size`: Cplx
    [*shape_b, size // 2 + 1]."""
    shape = tuple(shape_b) + (size,)
    zero = const(0, dt)
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


def _irfft_last(b, base, x, shape_b, m, size, dt, scale=1.0):
    """The irfft (times `scale`) along the last axis of Cplx x [*shape_b, m], its Hermitian spectrum
    of length `size` from the first size // 2 + 1 entries (zeros past m): real [*shape_b, size]."""
    zero = const(0, dt)
    half = size // 2
    shape = tuple(shape_b) + (size,)

    def spectrum(part, conj):     # the Hermitian spectrum of length n from its first n//2 + 1 entries
        def f(*i):
            k = i[-1]
            mirrored = k > half
            src = tirx.Select(mirrored, size - k, k)          # in [0, size // 2]: arithmetic only
            v = part(*i[:-1], tirx.min(src, m - 1))
            if conj:                                            # the sign, not the load, is selected
                v = v * tirx.Select(mirrored, const(-1, dt), const(1, dt))
            return tirx.if_then_else(src < m, v, zero)
        return f
    yr = b.compute(shape, spectrum(x.re, False), base + "_full_re", VIEW, [x.re], keeps_last_axis=False)
    yi = b.compute(shape, spectrum(x.im, True), base + "_full_im", VIEW, [x.im], keeps_last_axis=False)
    Yr, _ = _dft(b, base, yr, yi, shape_b, size, dt, True)
    inv = const(scale / size, dt)
    return b.compute(shape, lambda *i: Yr(*i) * inv, base, ELEMENTWISE, [Yr])


def e_rfft(b, n, a):
    x = a[0]
    if isinstance(x, Cplx):
        raise BackendError("primitive 'rfft' needs a real input", n.span)
    size = _fft_size(b, n)
    xs = b.shape(n.operands[0])
    return _rfft_last(b, n.name or "rfft", x, xs[:-1], xs[-1], size, x.dtype)


def e_irfft(b, n, a):
    x = a[0]
    if not isinstance(x, Cplx):
        raise BackendError("primitive 'irfft' needs a complex input", n.span)
    size = _fft_size(b, n)
    xs = b.shape(n.operands[0])
    return _irfft_last(b, n.name or "irfft", x, xs[:-1], xs[-1], size, x.re.dtype)


def _along(b, base, x, shape, axis, size, dt, inverse):
    """The complex DFT (unnormalized) of Cplx x [*shape] along `axis`, zero-padded or cut to `size`:
    the axis moved last (a view), the radix-2 / Bluestein stages, moved back."""
    nd = len(shape)
    m = shape[axis]
    moved = tuple(shape[:axis]) + tuple(shape[axis + 1:]) + (size,)
    zero = const(0, dt)

    def fetch(part):
        def f(*i):
            idx = list(i[:-1])
            t = i[-1]
            v = part(*(idx[:axis] + [tirx.min(t, m - 1)] + idx[axis:]))
            return v if (isinstance(m, int) and m >= size) else tirx.if_then_else(t < m, v, zero)
        return f
    re = b.compute(moved, fetch(x.re), base + "_mv_re", VIEW, [x.re], keeps_last_axis=False)
    im = b.compute(moved, fetch(x.im), base + "_mv_im", VIEW, [x.im], keeps_last_axis=False)
    Xr, Xi = _dft(b, base, re, im, moved[:-1], size, dt, inverse)
    back = tuple(shape[:axis]) + (size,) + tuple(shape[axis + 1:])

    def put(part):
        def f(*i):
            idx = list(i)
            t = idx.pop(axis)
            return part(*(idx + [t]))
        return f
    return Cplx(b.compute(back, put(Xr), base + "_bk_re", VIEW, [Xr], complex=True, keeps_last_axis=axis == nd - 1),
                b.compute(back, put(Xi), base + "_bk_im", VIEW, [Xi], complex=True, keeps_last_axis=axis == nd - 1))


def _sizes(b, n):
    out = []
    for v in n.attrs["s"]:
        m = b.dims.value(v)
        if m is None or m < 1:
            raise BackendError(f"the tvm backend needs known positive FFT sizes for primitive {n.kind!r}, got "
                               f"{n.attrs['s']}", n.span, hint="give the dims values")
        out.append(int(m))
    return out


def e_rfftn(b, n, a):
    """rfftn over the last len(s) axes: the rfft along the last, then complex DFTs along the others."""
    x = a[0]
    if isinstance(x, Cplx):
        raise BackendError("primitive 'rfftn' needs a real input", n.span)
    s = _sizes(b, n)
    xs = list(b.shape(n.operands[0]))
    base = n.name or "rfftn"
    out = _rfft_last(b, base, x, xs[:-1], xs[-1], s[-1], x.dtype)
    shape = xs[:-1] + [s[-1] // 2 + 1]
    for j in range(2, len(s) + 1):
        ax = len(shape) - j
        out = _along(b, f"{base}_ax{ax}", out, shape, ax, s[-j], x.dtype, False)
        shape[ax] = s[-j]
    return out


def e_irfftn(b, n, a):
    """irfftn: inverse complex DFTs along all but the last of the axes, then the irfft along it (the
    1 / Π s normalization at the end)."""
    x = a[0]
    if not isinstance(x, Cplx):
        raise BackendError("primitive 'irfftn' needs a complex input", n.span)
    s = _sizes(b, n)
    xs = list(b.shape(n.operands[0]))
    dt = x.re.dtype
    base = n.name or "irfftn"
    scale = 1.0
    for j in range(2, len(s) + 1):
        ax = len(xs) - j
        x = _along(b, f"{base}_ax{ax}", x, xs, ax, s[-j], dt, True)
        xs[ax] = s[-j]
        scale /= s[-j]
    return _irfft_last(b, base, x, xs[:-1], xs[-1], s[-1], dt, scale)

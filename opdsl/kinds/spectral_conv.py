"""Spectral convolutions, the FNO layer's linear part: `spectral_conv(W, n1, ..., nd)` (docs/conv.md;
neuraloperator's SpectralConv, Li et al. 2021).

On a flattened image [c_in, n1, ..., nd] (channels first): the rfftn of each input channel, the
kept modes multiplied by complex weights that mix the channels, zeros elsewhere, the irfftn:

    y[o] = irfftn( Σ_i W[o, i] · rfftn(x[i]) on the kept modes )

W holds real and imaginary parts in its last axis (size 2).  1-d: W [c_out, c_in, m, 2], modes
0..m−1.  2-d: W [c_out, c_in, 2 m1, m2, 2] — the first m1 entries along axis 2 for rows 0..m1−1,
the next m1 for rows n1−m1..n1−1 (the FNO code's weights1 / weights2), columns 0..m2−1 of the half
spectrum; in d dims every axis but the last keeps its m lowest and m highest frequencies.  The
transpose uses the conjugate weights with the channels swapped.  Needs 2 m ≤ n (m ≤ n // 2 + 1
on the last axis).
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from .base import Kind, OpType, register, sym_prod, tensor_of_rank
from .fftconv import fft_flops
from .grid import moveaxis


def _kept(sizes, modes):
    """Per axis the (lo, hi) index ranges of the kept frequencies (hi None on the last axis)."""
    out = [((0, m), (n - m, n)) for n, m in zip(sizes[:-1], modes[:-1])]
    return out + [((0, modes[-1]), None)]


def spectral_np(w, x, sizes):
    """The layer on one image x [c_in, n1..nd] (numpy, float64)."""
    d = len(sizes)
    wc = w[..., 0] + 1j * w[..., 1]
    modes = [s // 2 for s in wc.shape[2:-1]] + [wc.shape[-1]]
    spec = np.fft.rfftn(x, axes=tuple(range(1, d + 1)))
    out = np.zeros((w.shape[0],) + spec.shape[1:], complex)
    kept = _kept(sizes, modes)
    for corner in np.ndindex(*([2] * (d - 1))):
        src = tuple(slice(*kept[i][c]) for i, c in enumerate(corner)) + (slice(0, modes[-1]),)
        wsel = tuple(slice(c * modes[i], (c + 1) * modes[i]) for i, c in enumerate(corner)) + (slice(None),)
        out[(slice(None),) + src] = np.einsum("i...,oi...->o...", spec[(slice(None),) + src],
                                              wc[(slice(None), slice(None)) + wsel])
    return np.fft.irfftn(out, s=sizes, axes=tuple(range(1, d + 1)))


@register
class SpectralConv(Kind):
    """`spectral_conv(W, n1, ..., nd)`: the FNO spectral convolution (module doc)."""

    name = "spectral_conv"
    constructors = ("spectral_conv",)
    params = ("W", "n")
    examples = (
        "input W : [3, 2, 4, 2]\ninput x : [2, 24, 2]\ninput y : [36, 1]\n"
        "export f = spectral_conv(W, 12) @ x\nexport t = spectral_conv(W, 12).T @ y",
        "input W : [2, 2, 4, 3, 2]\ninput x : [2, 80, 1]\ninput y : [80, 2]\n"
        "export f = spectral_conv(W, 8, 5) @ x\nexport t = spectral_conv(W, 8, 5).T @ y",
    )

    def sample(self, n, tag):
        return None               # TVM (which the random programs also run on) refuses rfftn by name

    def construct(self, b, args, kwargs, span):
        b.no_kwargs(self, kwargs)
        if len(args) < 2:
            raise ShapeError("spectral_conv(W, n1, ..., nd) needs the grid sizes", span,
                             hint="e.g. spectral_conv(W, 64) for W [c_out, c_in, modes, 2] on 64 points")
        w = b.tensor(args[0], range(4, 11), "spectral_conv's weights W")
        sizes = tuple(b.dim(a) for a in args[1:])
        return b.add(self.name, [w], {"sizes": sizes, "T": False}, span=span)

    def _modes(self, g, v):
        ws = g.type(g[v].operands[0]).shape
        d = len(g[v].attrs["sizes"])
        return tuple([ws[2 + i] / 2 for i in range(d - 1)] + [ws[-2]])

    def infer(self, g, ops, attrs, span):
        sizes = attrs["sizes"]
        d = len(sizes)
        w = tensor_of_rank(g, ops[0], (d + 3,), span, f"spectral_conv's weights W for a {d}-d grid")
        if g.dims.value(w.shape[-1]) != 2:
            raise ShapeError(f"spectral_conv's W holds real and imaginary parts in its last axis (size 2), got {w}",
                             span)
        for i, n in enumerate(sizes):
            mv, nv = g.dims.value(w.shape[2 + i]), g.dims.value(n)
            if mv is None or nv is None:
                raise ShapeError("spectral_conv needs concrete grid sizes and modes", span)
            last = i == d - 1
            if (not last and (mv % 2 or mv > nv)) or (last and mv > nv // 2 + 1):
                raise ShapeError(f"spectral_conv: axis {i + 1} keeps {mv} modes of a grid of {nv}: "
                                 + ("W's axis must be 2 m with 2 m <= n (m low and m high frequencies)" if not last
                                    else "at most n // 2 + 1 on the last axis"), span)
        co, ci = w.shape[0], w.shape[1]
        rows, cols = co * sym_prod(sizes), ci * sym_prod(sizes)
        if attrs["T"]:
            rows, cols = cols, rows
        return OpType(rows, cols, (), w.dtype)

    def dense(self, g, v, vals):
        w = vals[0]
        sizes = tuple(int(g.dims.value(n)) for n in g[v].attrs["sizes"])
        ci = w.shape[1]
        eye = np.eye(ci * int(np.prod(sizes)))
        m = np.stack([spectral_np(w, e.reshape((ci,) + sizes), sizes).reshape(-1) for e in eye], axis=1)
        return m.T if g[v].attrs["T"] else m

    def flops(self, g, v, k):
        ws = g.type(g[v].operands[0]).shape
        n = sym_prod(g[v].attrs["sizes"])
        kept = sym_prod(ws[2:-1])
        return k * (ws[0] + ws[1]) * fft_flops(n) + 8 * k * ws[0] * ws[1] * kept

    def transpose(self, g, v):
        n = g[v]
        return g.add(self.name, list(n.operands), {**n.attrs, "T": not n.attrs["T"]}, span=n.span)

    def lower(self, lw, v, x):
        node = lw.src[v]
        sizes, T = node.attrs["sizes"], node.attrs["T"]
        d = len(sizes)
        w = lw.tensor(node.operands[0])
        co, ci = lw.shape(w)[0], lw.shape(w)[1]
        modes = [int(lw.dims.value(m)) for m in self._modes(lw.src, v)]
        dtype = lw.dtype(x) if lw.dtype(x) in ("float32", "float64") else "float32"
        w = w if lw.dtype(w) == dtype else lw.prim("cast", w, dtype=dtype)
        wc = lw.prim("complex", w, conj=bool(T))                           # Wᵀ: the conjugate weights
        c_in, c_out = (co, ci) if T else (ci, co)
        xs = lw.shape(x)
        b, k = xs[:-2], xs[-1]
        nb = len(b)
        xi = moveaxis(lw, lw.reshape(x, tuple(b) + (c_in,) + tuple(sizes) + (k,)), nb + 1 + d, nb)
        if lw.dtype(xi) != dtype:
            xi = lw.prim("cast", xi, dtype=dtype)
        spec = lw.prim("rfftn", xi, s=tuple(sizes))                      # [*b, k, c_in, n1, .., nd/2+1]
        axes = [nb + 2 + i for i in range(d)]
        kept = _kept(sizes, modes)
        for i, ax in enumerate(axes):                                    # the kept modes, lows then highs
            lo = lw.prim("slice", spec, axis=ax, start=kept[i][0][0], stop=kept[i][0][1])
            spec = lo if kept[i][1] is None else lw.prim(
                "concat", lo, lw.prim("slice", spec, axis=ax, start=kept[i][1][0], stop=kept[i][1][1]), axis=ax)
        letters = "abcdefgh"[:d]
        batch = "pqrstuvwxyz"[:nb + 1]
        rule = (f"{batch}o{letters},oi{letters}->{batch}i{letters}" if T else
                f"{batch}i{letters},oi{letters}->{batch}o{letters}")
        y = lw.einsum(rule, spec, wc)
        for i, ax in enumerate(axes[:-1]):                               # zeros between the lows and the highs
            m = modes[i]
            s = list(lw.shape(y))
            s[ax] = sizes[i] - 2 * m
            parts = [lw.prim("slice", y, axis=ax, start=0, stop=m)]
            if lw.dims.value(s[ax]) != 0:
                parts.append(lw.prim("fill", shape=tuple(s), value=0.0, dtype=lw.dtype(y)))
            parts.append(lw.prim("slice", y, axis=ax, start=m, stop=2 * m))
            y = lw.prim("concat", *parts, axis=ax)
        y = lw.prim("irfftn", y, s=tuple(sizes))                         # the last axis zero-padded by irfftn
        y = lw.reshape(moveaxis(lw, y, nb, nb + 1 + d), tuple(b) + (c_out * sym_prod(sizes), k))
        return y if lw.dtype(y) == lw.dtype(x) else lw.prim("cast", y, dtype=lw.dtype(x))

"""N-d convolutions with modes, strides and channels: `conv(h, n1, ..., nd, mode=, stride=)`
(docs/conv.md; PyLops' Convolve2D, CoLA's ConvolveND, a CNN / MgNO layer's convolution).

The operator acts on a row-major flattened image [c_in, n1, ..., nd] (channels first; without
channels, [n1, ..., nd]), as `kron` does: the last axis varies fastest.

- h : [k1, ..., kd] — one kernel; h : [c_out, c_in, k1, ..., kd] — channels: output channel o is
  Σ_i h[o, i] * x[i] (a CNN convolution; PyTorch's conv2d weight layout, but a convolution, not a
  correlation: conv2d(x, flip(h)) is this).
- mode: `full`, `same`, `valid` are scipy.signal.convolve(x, h, mode) on each image (same: centred,
  the full output from (k − 1) // 2 on; valid: needs k <= n); `circular` is the periodic convolution
  scipy.ndimage.convolve(x, h, mode="wrap"): y[i] = Σ_j h[j] x[(i + k // 2 − j) mod n] (needs k <= n).
- stride=s keeps every s-th output along each axis, from the first (a multigrid restriction); the
  transpose scatters them back between zeros (the prolongation, a transposed convolution).

Lowered through N-d real FFTs (`rfftn` / `irfftn`): the image and the kernel zero-padded to a
5-smooth length L >= n + k − 1 (n for circular: the kernel rotated by its centre instead), multiplied
per frequency (summing input channels: an einsum), transformed back and sliced; the transpose
correlates (the kernel reversed) and crops.  The dense meaning is scipy's, on the identity's columns.
"""
from __future__ import annotations

import numpy as np
import sympy as sp

from ..errors import ShapeError, TypeError_
from .base import Kind, OpType, register, sym_prod, tensor_of_rank
from .fft_algebra import leaf
from .fftconv import HALF, fast_length, fft_flops
from .grid import every, moveaxis, pad, roll, spread

MODES = ("same", "full", "valid", "circular")


def out_size(n, k, mode):
    return {"full": n + k - 1, "same": n, "valid": n - k + 1, "circular": n}[mode]


def first(k, mode):
    """Where the mode's output starts in the full convolution (circular: its kernel is rotated)."""
    return {"full": 0, "same": (k - 1) // 2, "valid": k - 1, "circular": 0}[mode]


def strided(m, s):
    """How many of m outputs stride s keeps: indices 0, s, 2s, ... < m."""
    return m if s == 1 else sp.floor((m + s - 1) / s)


def conv_np(h, x, mode, stride, channels):
    """The dense meaning on one image x [c_in?, n1, ..., nd] (float64)."""
    import scipy.ndimage
    import scipy.signal
    d = h.ndim - (2 if channels else 0)

    def one(hk, xk):
        if mode == "circular":
            return scipy.ndimage.convolve(xk, hk, mode="wrap")
        return scipy.signal.convolve(xk, hk, mode=mode, method="direct")
    if channels:
        y = np.stack([sum(one(h[o, i], x[i]) for i in range(h.shape[1])) for o in range(h.shape[0])])
    else:
        y = one(h, x)
    return y[(Ellipsis,) + (slice(None, None, stride),) * d]


def _contract_windows(lw, x, axes, kv, window, h, channels, transposed):
    """im2col: per kernel tap, its window of x [*b, k, c, n..] (window(i, axis, w, tap[i]) along each
    grid axis) with a taps axis inserted after the channels, the windows side by side [*b, k, c, T, m..],
    then one contraction with h [c_out, c_in, T] over channels and taps (the transpose contracts the
    output channels); the result moved back to [*b, c·Πm, k] order (before its final reshape).
    With one channel in and out, the windows scaled by their taps are summed instead."""
    co, ci = channels
    nb, d = axes[0] - 2, len(axes)
    taps = []
    for tap in np.ndindex(*kv):
        w = x
        for i, ax in enumerate(axes):
            w = window(i, ax, w, int(tap[i]))
        taps.append(w)
    if lw.dims.value(co) == 1 and lw.dims.value(ci) == 1:
        # One channel: Σ_tap h[tap] · window_tap, accumulated — no im2col copies.  Each window is a
        # strided view; the copies side by side cost 2.4x F.conv2d (512², 5 x 5; `cat` 74% of the
        # time), the accumulation 1.2x (the torch backend writes it as addcmul_ into one result).
        hf = lw.reshape(h, (int(np.prod(kv)),))
        y = None
        for t, w in enumerate(taps):
            term = lw.mul(w, lw.prim("slice", hf, axis=0, start=t, stop=t + 1))   # [1]: broadcast
            y = term if y is None else lw.add(y, term)
        return moveaxis(lw, y, nb, nb + 1 + d)
    windows = []
    for w in taps:
        shape = list(lw.shape(w))
        windows.append(lw.reshape(w, tuple(shape[:nb + 2]) + (1,) + tuple(shape[nb + 2:])))
    cols = windows[0] if len(windows) == 1 else lw.prim("concat", *windows, axis=nb + 2)
    letters, batch = "abcdefgh"[:d], "pqrstuvwxyz"[:nb + 1]
    rule = (f"{batch}ot{letters},oit->{batch}i{letters}" if transposed else
            f"{batch}it{letters},oit->{batch}o{letters}")
    y = lw.einsum(rule, cols, lw.reshape(h, (co, ci, int(np.prod(kv)))))
    return moveaxis(lw, y, nb, nb + 1 + d)


def conv_matrix(h, grid, mode, stride, channels):
    """The dense matrix of the operator (conv_np on every basis image at once: the images stacked
    along a leading axis that a kernel of size 1 there leaves alone)."""
    import scipy.ndimage
    import scipy.signal
    ci = h.shape[1] if channels else 1
    d = len(grid)
    n = ci * int(np.prod(grid))
    basis = np.eye(n).reshape((n, ci) + tuple(grid))
    hh = h if channels else h[None, None]
    outs = []
    for o in range(hh.shape[0]):
        acc = 0.0
        for i in range(ci):
            k = hh[o, i][None]
            acc = acc + (scipy.ndimage.convolve(basis[:, i], k, mode="wrap") if mode == "circular" else
                         scipy.signal.convolve(basis[:, i], k, mode=mode))
        outs.append(acc[(slice(None),) + (slice(None, None, stride),) * d])
    return np.stack(outs, axis=1).reshape(n, -1).T


@register
class ConvND(Kind):
    """`conv(h, n1, ..., nd, mode=same|full|valid|circular, stride=s)`: h [k1..kd] or [c_out, c_in, k1..kd]."""

    name = "convnd"
    constructors = ()             # built by conv(...) with sizes for several axes, mode= or stride=
    examples = (
        "input h : [3, 3]\ninput x : [30, 2]\nexport y = conv(h, 5, 6, mode=same) @ x\n"
        "export z = conv(h, 5, 6, mode=same).T @ x",
        "input h : [2, 3]\ninput x : [20, 1]\ninput u : [35, 2]\ninput v : [9, 1]\n"
        "export f = conv(h, 4, 5, mode=full) @ x\nexport ft = conv(h, 4, 5, mode=full).T @ u\n"
        "export va = conv(h, 4, 5, mode=valid) @ x\nexport vt = conv(h, 4, 5, mode=valid).T @ v",
        "input h : [4, 3]\ninput x : [2, 35, 2]\nexport y = conv(h, 7, 5, mode=circular) @ x\n"
        "export z = conv(h, 7, 5, mode=circular).T @ x",
        # channels and stride 2 (a restriction), its transpose (a prolongation), a 3-d kernel
        "input h : [3, 2, 3, 3]\ninput x : [2, 98, 1]\ninput y : [48, 2]\n"
        "export r = conv(h, 7, 7, mode=same, stride=2) @ x\nexport p = conv(h, 7, 7, mode=same, stride=2).T @ y",
        "input h : [2, 2, 3]\ninput x : [60, 2]\ninput w : [4, 2]\nexport y = conv(h, 3, 4, 5, mode=same) @ x\n"
        "export z = conv(h, 3, 4, 5, mode=valid, stride=2).T @ w",
        "input h : [2, 3, 4]\ninput x : [27, 2]\nexport y = conv(h, 9, mode=full, stride=3) @ x\n"
        "export z = conv(h, 9, mode=circular, stride=2).T @ (conv(h, 9, mode=circular, stride=2) @ x)",
    )

    def sample(self, n, tag):
        return None               # TVM (which the random programs also run on) refuses rfftn by name

    def build(self, b, args, kwargs, span):
        """From conv(h, n1, ..., nd, mode=..., stride=...) (kinds/fftconv.Conv dispatches here)."""
        for key, val in kwargs.items():
            if key not in ("mode", "stride"):
                raise TypeError_(f"conv(h, n1, ..., nd, ...) has no option {key!r}", val.span,
                                 hint="options: mode=same|full|valid|circular, stride=s (causal= is for the 1-d form)")
        h = b.tensor(args[0], range(1, 11), "conv's kernel h")
        sizes = tuple(b.dim(a) for a in args[1:])
        if not sizes:
            raise TypeError_("conv(h, n1, ..., nd, mode=...) needs the image sizes", span,
                             hint="e.g. conv(h, 64, 64, mode=same) for a 64 x 64 image")
        mode = b.word(kwargs["mode"], MODES, "conv mode") if "mode" in kwargs else "same"
        stride = 1
        if "stride" in kwargs:
            sv = b.num(kwargs["stride"])
            if float(sv) != int(sv) or int(sv) < 1:
                raise TypeError_(f"conv's stride must be a positive integer, got {sv:g}", kwargs["stride"].span)
            stride = int(sv)
        rank = len(b.g.type(h).shape)
        if rank not in (len(sizes), len(sizes) + 2):
            raise ShapeError(f"conv(h, {', '.join(str(s) for s in sizes)}) convolves {len(sizes)}-d images: h must be "
                             f"[k1, ..., k{len(sizes)}] or [c_out, c_in, k1, ..., k{len(sizes)}], got "
                             f"{b.g.type(h)}", args[0].span)
        attrs = {"sizes": sizes, "mode": mode, "stride": stride, "channels": rank == len(sizes) + 2, "T": False}
        return b.add(self.name, [h], attrs, span=span)

    def _dims(self, g, v):
        """(kernel sizes, image sizes, output sizes after the stride, c_in, c_out) as sympy values."""
        a = g[v].attrs
        hs = g.type(g[v].operands[0]).shape
        d = len(a["sizes"])
        ks = tuple(hs[-d:])
        ci, co = (hs[1], hs[0]) if a["channels"] else (1, 1)
        outs = tuple(strided(out_size(n, k, a["mode"]), a["stride"]) for n, k in zip(a["sizes"], ks))
        return ks, tuple(a["sizes"]), outs, ci, co

    def infer(self, g, ops, attrs, span):
        h = tensor_of_rank(g, ops[0], range(1, 11), span, "conv's kernel h")
        d = len(attrs["sizes"])
        ks = h.shape[-d:]
        for n, k in zip(attrs["sizes"], ks):
            kv, nv = g.dims.value(k), g.dims.value(n)
            if attrs["mode"] in ("valid", "circular") and kv is not None and nv is not None and kv > nv:
                raise ShapeError(f"conv(..., mode={attrs['mode']}) needs a kernel no longer than the image: "
                                 f"k = {kv} > n = {nv}", span, hint="use mode=full or mode=same")
            if kv is None:
                raise ShapeError(f"conv(h, n1, ..., nd) needs concrete kernel sizes, got h {h}", span,
                                 hint="the centre of the kernel must be known at compile time")
        ci, co = (h.shape[1], h.shape[0]) if attrs["channels"] else (1, 1)
        outs = tuple(strided(out_size(n, k, attrs["mode"]), attrs["stride"]) for n, k in zip(attrs["sizes"], ks))
        rows, cols = co * sym_prod(outs), ci * sym_prod(attrs["sizes"])
        if attrs["T"]:
            rows, cols = cols, rows
        return OpType(rows, cols, (), h.dtype)

    def dense(self, g, v, vals):
        a = g[v].attrs
        sizes = tuple(int(g.dims.value(n)) for n in a["sizes"])
        m = conv_matrix(vals[0], sizes, a["mode"], a["stride"], a["channels"])
        return m.T if a["T"] else m

    def _costs(self, g, v, k, transposed=None):
        """(direct, FFT) FLOPs of an apply to k columns (`transposed`: of the node's transpose when it
        differs from its own orientation): the sliding window's Πk taps per output it computes (the
        image's points for the transpose, the kept outputs forward), channels mixed at each, against
        the transforms of the image, the kernel and the result."""
        ks, sizes, outs, ci, co = self._dims(g, v)
        T = g[v].attrs["T"] if transposed is None else transposed
        direct = 2 * ci * co * sym_prod(ks) * sym_prod(sizes if T else outs) * k
        L = sym_prod(n + kk - 1 for n, kk in zip(sizes, ks))
        return direct, (ci * co + k * (ci + co)) * fft_flops(L) + 4 * k * ci * co * L

    def _direct(self, g, v, k, transposed=None):
        """Whether the sliding window is the cheaper lowering."""
        from ..cost import Evaluator
        ev = Evaluator(g.dims)
        direct, fft = self._costs(g, v, k, transposed)
        return ev.num(direct) <= ev.num(fft)

    def flops(self, g, v, k):
        direct, fft = self._costs(g, v, k)
        return direct if self._direct(g, v, k) else fft

    def transpose_flops(self, g, v, k):
        T = not g[v].attrs["T"]
        direct, fft = self._costs(g, v, k, T)
        return direct if self._direct(g, v, k, T) else fft

    def transpose(self, g, v):
        n = g[v]
        return g.add(self.name, list(n.operands), {**n.attrs, "T": not n.attrs["T"]}, span=n.span)

    def fft_tree(self, g, v, conj, leaves):        # circular, one channel, stride 1: F⁻¹ diag(fftn h) F
        a = g[v].attrs
        if a["mode"] != "circular" or a["stride"] != 1 or a["channels"]:
            return None
        h = g[v].operands[0]
        return leaf(leaves, (h,), tuple(g.type(h).shape), a["sizes"], conj != a["T"])

    # ---- lowering -------------------------------------------------------------------------
    def _lengths(self, lw, ks, sizes, outs, mode, s):
        """The FFT lengths: n for circular, else a 5-smooth L >= n + k − 1 + (s − 1) (room for the
        strided slice from the mode's first output)."""
        if mode == "circular":
            return tuple(sizes)
        out = []
        for n, k in zip(sizes, ks):
            need = lw.dims.value(n + k - 1 + (s - 1))
            out.append(sp.Integer(fast_length(need)) if need is not None else n + k - 1 + (s - 1))
        return tuple(out)

    def _kernel(self, lw, h, ks, Ls, mode, d, reverse):
        """The kernel as a [c_out, c_in, L1, ..., Ld] tensor whose rfftn is the operator's spectrum:
        zero-padded to L (rfftn pads it), rotated by its centre k // 2 for circular; `reverse`: the
        transpose's, h[(−j) mod L] (the conjugate spectrum: a correlation)."""
        if mode != "circular" and not reverse:
            return h
        for i in range(d):
            ax = len(lw.shape(h)) - d + i
            h = pad(lw, h, ax, 0, Ls[i] - ks[i])
            if mode == "circular":
                h = roll(lw, h, ax, int(lw.dims.value(ks[i])) // 2)
            if reverse:                                  # h[(−j) mod L]: flip, then roll right by one
                h = roll(lw, lw.prim("flip", h, axis=ax), ax, Ls[i] - 1)
        return h

    def lower(self, lw, v, x):
        node = lw.src[v]
        a = node.attrs
        mode, s, d = a["mode"], a["stride"], len(a["sizes"])
        ks, sizes, outs, ci, co = self._dims(lw.src, v)
        h = lw.tensor(node.operands[0])
        if not a["channels"]:
            h = lw.reshape(h, (1, 1) + tuple(ks))
        from ..cost import Evaluator
        ev = Evaluator(lw.dims)
        direct, fft = (ev.num(c) for c in self._costs(lw.src, v, lw.shape(x)[-1]))
        what = f"conv {'x'.join(str(k_) for k_ in ks)}{' transposed' if a['T'] else ''}"
        if self._direct(lw.src, v, lw.shape(x)[-1]):
            lw.note(f"{what}: the sliding window ({direct:.3g} FLOPs), not FFTs ({fft:.3g})"
                    + (f"; stride {s}: only the kept outputs" if s > 1 and not a["T"] else ""))
            return self._lower_direct_t(lw, v, x, h) if a["T"] else self._lower_direct(lw, v, x, h)
        lw.note(f"{what}: N-d FFTs ({fft:.3g} FLOPs), not the sliding window ({direct:.3g})")
        out_dtype = lw.dtype(x)
        if out_dtype in HALF or lw.dtype(h) in HALF:       # FFTs of half precision are not portable
            x, h = lw.prim("cast", x, dtype="float32"), lw.prim("cast", h, dtype="float32")
        Ls = self._lengths(lw, ks, sizes, outs, mode, s)
        xs = lw.shape(x)
        b, k = xs[:-2], xs[-1]
        nb = len(b)
        c_in, c_out, n_in = (co, ci, outs) if a["T"] else (ci, co, sizes)
        x = moveaxis(lw, lw.reshape(x, tuple(b) + (c_in,) + tuple(n_in) + (k,)), nb + 1 + d, nb)   # [*b, k, c, n..]
        axes = [nb + 2 + i for i in range(d)]
        if a["T"]:                    # scatter the kept outputs back to their places in the length-L axes
            for i, ax in enumerate(axes):
                x = spread(lw, x, ax, s)
                start = first(int(lw.dims.value(ks[i])), mode)
                span = s * outs[i]
                if mode == "circular":
                    x = lw.prim("slice", x, axis=ax, start=0, stop=sizes[i]) if s > 1 else x
                else:
                    x = pad(lw, x, ax, start, Ls[i] - start - span)
        spec_h = lw.prim("rfftn", self._kernel(lw, h, ks, Ls, mode, d, a["T"]), s=Ls)
        spec_x = lw.prim("rfftn", x, s=Ls)
        letters = "abcdefgh"[:d]
        batch = "pqrstuvwxyz"[:nb + 1]
        spec = (f"{batch}o{letters},oi{letters}->{batch}i{letters}" if a["T"] else
                f"{batch}i{letters},oi{letters}->{batch}o{letters}")
        y = lw.prim("irfftn", lw.einsum(spec, spec_x, spec_h), s=Ls)
        for i, ax in enumerate(axes):
            if a["T"]:
                if mode != "circular":
                    y = lw.prim("slice", y, axis=ax, start=0, stop=sizes[i])
                continue
            start = first(int(lw.dims.value(ks[i])), mode)
            span = s * outs[i]
            if mode == "circular":
                if s > 1:
                    y = pad(lw, y, ax, 0, span - sizes[i])
            else:
                y = lw.prim("slice", y, axis=ax, start=start, stop=start + span)
            y = every(lw, y, ax, s, outs[i])
        c_res, n_res = (ci, sizes) if a["T"] else (co, outs)
        y = lw.reshape(moveaxis(lw, y, nb, nb + 1 + d), tuple(b) + (c_res * sym_prod(n_res), k))
        if out_dtype in HALF:
            y = lw.prim("cast", y, dtype=out_dtype)
        return y

    def _direct_dims(self, lw, v, x):
        """What both sliding-window lowerings read: mode, stride, rank, grid and output sizes,
        channels, the kernel's sizes as ints, and x's batch dims and columns."""
        a = lw.src[v].attrs
        ks, sizes, outs, ci, co = self._dims(lw.src, v)
        xs = lw.shape(x)
        b = xs[:-2]
        return (a["mode"], a["stride"], len(a["sizes"]), sizes, outs, ci, co,
                [int(lw.dims.value(k_)) for k_ in ks], b, xs[-1], len(b))

    def _lower_direct(self, lw, v, x, h):
        """y[o, i] = Σ_taps Σ_c h[o, c, tap] x_ext[c, s·i + shift(tap)]: per kernel tap one strided
        window of the padded image (a slice and a view); the windows side by side (im2col), then one
        contraction over the channels and taps (a matrix product)."""
        mode, s, d, sizes, outs, ci, co, kv, b, k, nb = self._direct_dims(lw, v, x)
        x = moveaxis(lw, lw.reshape(x, tuple(b) + (ci,) + tuple(sizes) + (k,)), nb + 1 + d, nb)   # [*b, k, c, n..]
        axes = [nb + 2 + i for i in range(d)]
        bases = []
        for i, ax in enumerate(axes):         # x_ext[u] = x[u − (k − 1)] (zeros, or x wrapped, outside)
            P = kv[i] - 1
            start = (kv[i] // 2) if mode == "circular" else first(kv[i], mode)
            need = s * outs[i] + start + P          # the end of the first tap's window (s·m entries, viewed [m, s])
            if mode == "circular":
                tail = lw.prim("slice", x, axis=ax, start=sizes[i] - P, stop=sizes[i]) if P else None
                head = need - P - sizes[i]
                parts = ([tail] if tail is not None else []) + [x]
                if lw.dims.value(head) is None or lw.dims.value(head) > 0:
                    parts.append(lw.prim("slice", x, axis=ax, start=0, stop=head))
                x = parts[0] if len(parts) == 1 else lw.prim("concat", *parts, axis=ax)
            else:
                after = need - P - sizes[i]
                known = lw.dims.value(after)
                x = pad(lw, x, ax, P, max(known, 0) if known is not None else sp.Max(after, 0))
            bases.append(start + P)
        def window(i, ax, w, t):         # tap t's strided window along axis i
            lo = bases[i] - t
            return every(lw, lw.prim("slice", w, axis=ax, start=lo, stop=lo + s * outs[i]), ax, s, outs[i])
        y = _contract_windows(lw, x, axes, kv, window, h, (co, ci), False)
        return lw.reshape(y, tuple(b) + (co * sym_prod(outs), k))

    def _lower_direct_t(self, lw, v, x, h):
        """The transpose by a sliding window: x̄[i, p] = Σ_o Σ_taps h[o, i, tap] z_ext[o, p + tap], z the
        kept outputs spread back between zeros (stride), z_ext it shifted by the mode's first output
        (zero-padded; wrapped for circular): a correlation, one contraction over the windows (im2col)."""
        mode, s, d, sizes, outs, ci, co, kv, b, k, nb = self._direct_dims(lw, v, x)
        z = moveaxis(lw, lw.reshape(x, tuple(b) + (co,) + tuple(outs) + (k,)), nb + 1 + d, nb)    # [*b, k, o, m..]
        axes = [nb + 2 + i for i in range(d)]
        for i, ax in enumerate(axes):
            z = spread(lw, z, ax, s)                                  # s·m entries
            span, n, K = s * outs[i], sizes[i], kv[i]
            if mode == "circular":                                     # z_ext[u] = z[(u − K // 2) mod n]
                if s > 1:
                    z = lw.prim("slice", z, axis=ax, start=0, stop=n)
                c = K // 2
                parts = ([lw.prim("slice", z, axis=ax, start=n - c, stop=n)] if c else []) + [z] + \
                    ([lw.prim("slice", z, axis=ax, start=0, stop=K - 1 - c)] if K - 1 - c else [])
                z = parts[0] if len(parts) == 1 else lw.prim("concat", *parts, axis=ax)
            else:                                                      # z_ext[u] = z[u − start], length n + K − 1
                start = first(K, mode)
                after = n + K - 1 - start - span
                known = lw.dims.value(after)
                if known is not None and known < 0:
                    z = lw.prim("slice", z, axis=ax, start=0, stop=span + known)
                    after = 0
                z = pad(lw, z, ax, start, after if known is None else max(known, 0))
        def window(i, ax, w, t):         # tap t's window along axis i: a correlation
            return lw.prim("slice", w, axis=ax, start=t, stop=t + sizes[i])
        y = _contract_windows(lw, z, axes, kv, window, h, (co, ci), True)
        return lw.reshape(y, tuple(b) + (ci * sym_prod(sizes), k))

"""Toeplitz, circulant and convolution operators, applied through rfft / irfft.

All three are "lag" operators: entry (i, j) depends on i − j only.  Each is
described by a 1-D kernel w (the entries along the lags) and an offset:

    y[i] = Σ_j w[i − j + off] x[j]          (w[t] = 0 outside 0 <= t < len(w))

which is a slice of the full linear convolution w * x, computed as
irfft(rfft(w, N) · rfft(x, N), N)[off : off + m] for an FFT length N large
enough that the circular wrap-around misses the slice (N >= len(w) + n − 1 − off
and N >= off + m; the compiler picks the smallest 5-smooth such N).  A
circulant is the circular case: N = n and no slice.

- `circulant(c)`, c [..., n]: C[i, j] = c[(i − j) mod n]  (scipy.linalg.circulant: first column c).
- `toeplitz(c, r)`, c [..., m], r [..., n]: T[i, j] = c[i − j] for i >= j, r[j − i] for j > i
  (scipy.linalg.toeplitz: first column c, first row r; r[0] is ignored).
- `conv(h)`, `conv(h, n)`, `conv(h, causal=false)`, h [..., K]: the n x n (n = K by default)
  convolution with kernel h.  causal=true (default): y[i] = Σ_{j<=i} h[i − j] x[j], a
  lower-triangular Toeplitz matrix with first column h.  causal=false: the kernel is
  centred, y[i] = Σ_j h[i − j + (K − 1)//2] x[j], i.e. numpy.convolve(x, h, mode="same").

Leading dims of c, r, h are batch dims (one kernel per channel): conv(h) with
h [C, K] applied to x [B, C, K, k] filters channel c with h[c].  Transposes are
lag operators too (flip the kernel), so every transpose lowers.
See docs/families_attention_conv.md for the conventions with dense examples.
"""
from __future__ import annotations

import numpy as np
import sympy as sp

from ..errors import ShapeError, TypeError_, written
from ..primitives import broadcast
from .base import Kind, OpType, join_dtype, register, sym_prod, tensor_of_rank
from .linalg_build import auto, span_of
from .fft_algebra import leaf
from .grid import moveaxis, roll
from .rule import As, Rule

HALF = ("float16", "bfloat16")


def fast_length(n: int) -> int:
    """The smallest 5-smooth integer >= n (FFT libraries are fastest on 2^a 3^b 5^c)."""
    n = max(int(n), 1)
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            v = p35
            while v < n:
                v *= 2
            best = min(best, v)
            p35 *= 3
        p5 *= 5
    return best


def fft_flops(N):
    """~2.5 N log2 N for a real FFT of length N."""
    return sp.Rational(5, 2) * N * sp.log(N, 2)


def lag_matrix(w, off, m, n):
    """Dense [..., m, n]: M[i, j] = w[i − j + off] (0 outside the kernel)."""
    K = w.shape[-1]
    t = np.arange(m)[:, None] - np.arange(n)[None, :] + off
    inside = (t >= 0) & (t < K)
    return np.where(inside, w[..., np.clip(t, 0, K - 1)], 0.0)


def lower_lag(lw, w, off, K, n, m, x, circular=False):
    """(lag operator with kernel w [..., K] and offset off, m x n) @ x [*b, n, k], via FFTs."""
    s = lw.shape(x)
    b, k = s[:-2], s[-1]
    out_dtype = lw.dtype(x)
    if out_dtype in HALF or lw.dtype(w) in HALF:   # FFTs of half precision are not portable: use float32
        x, w = lw.prim("cast", x, dtype="float32"), lw.prim("cast", w, dtype="float32")
    one_col = lw.dims.value(k) == 1
    xt = lw.reshape(x, b + (1, n)) if one_col else lw.swap(x)          # [*b, k, n]: FFT along the last axis
    if circular:
        N = n
    else:
        need = [lw.dims.value(e) for e in (K + n - 1 - off, off + m)]
        N = fast_length(max(need)) if None not in need else sp.sympify(K + n - 1)
    ws = lw.shape(w)
    wh = lw.prim("rfft", lw.reshape(w, ws[:-1] + (1, ws[-1])), n=N)    # [..., 1, N/2 + 1]
    y = lw.prim("irfft", lw.mul(lw.prim("rfft", xt, n=N), wh), n=N)   # [*b', k, N]
    if not circular and not (lw.dims.value(off) == 0 and lw.dims.equal(m, N)):
        y = lw.prim("slice", y, axis=-1, start=off, stop=off + m)
    ys = lw.shape(y)
    y = lw.reshape(y, ys[:-2] + (m, 1)) if one_col else lw.swap(y)
    if out_dtype in HALF:
        y = lw.prim("cast", y, dtype=out_dtype)
    return y


def _kernel_batch(g, span, *types):
    out = ()
    for t in types:
        try:
            out = broadcast(out, t.shape[:-1])
        except ShapeError:
            raise ShapeError("the leading (channel) dims of the kernels do not broadcast", span) from None
    return tuple(out)


def lag_flops(g, v, k, K, n, m, circular):
    N = n if circular else K + n - 1
    return sym_prod(g.type(v).batch) * fft_flops(N) + k * (2 * fft_flops(N) + 3 * N)


def _circulant_nd(g, c, d, T):
    """The dense N-d circulant(s) [..., N, N] of first columns c [..., n1, .., nd]: column j is c
    shifted periodically to start at the multi-index j (F⁻¹ diag(fftn c) F on the grid)."""
    grid = c.shape[-d:]
    n = int(np.prod(grid))
    axes = tuple(range(-d, 0))
    eye = np.eye(n).reshape((n,) + grid)
    out = np.empty(c.shape[:-d] + (n, n))
    for b in np.ndindex(*c.shape[:-d]):
        cols = np.real(np.fft.ifftn(np.fft.fftn(c[b], axes=axes) * np.fft.fftn(eye, axes=axes), axes=axes))
        out[b] = cols.reshape(n, n).T
    return np.swapaxes(out, -1, -2) if T else out


def _inv_circulant(g, m):
    """inv(circulant(c)) = circulant(irfft(1 / rfft(c))) (FFT division); the same for its transpose."""
    n = g[m["C"]]
    return g.add("circulant", [g.add("circ_inv", [m["c"]], span=span_of(g, m))], n.attrs, span=span_of(g, m))


@register
class Circulant(Kind):
    """`circulant(c)`: C[i, j] = c[(i − j) mod n], c [..., n] (scipy.linalg.circulant); `circulant(c, ndim=d)`:
    the N-d circulant of c [..., n1, .., nd] (the periodic convolution with c on the d-dim grid)."""

    name = "circulant"
    constructors = ("circulant",)
    params = ("c",)
    options = ("ndim",)
    examples = (
        "input c : [5]\ninput x : [5, 2]\nexport y = circulant(c) @ x\nexport z = circulant(c).T @ x",
        "input c : [3, 6]\ninput x : [2, 3, 6, 1]\nexport y = circulant(c) @ x",
        "dim n = 6\ninput c : [n]\ninput d : [n]\ninput U : [n, 2]\ninput V : [n, 2]\ninput x : [n, 3]\n"
        "export y = (circulant(c) + diag(d)) @ x\nexport z = (circulant(c) @ lowrank(U, V)) @ x",
        "input c : [4]\ninput A : [2, 3]\ninput x : [12]\nexport y = kron(A, circulant(c)) @ x",
        # the N-d circulant (2-d and a batch of 2-d), its transpose, its shifted inverse and logdet
        "input c : [4, 5]\ninput b : [2, 3, 4]\ninput x : [20, 2]\ninput z : [2, 12, 1]\n"
        "export y = circulant(c, ndim=2) @ x\nexport t = circulant(c, ndim=2).T @ x\n"
        "export u = circulant(b, ndim=2) @ z",
    )

    def sample(self, n, tag):
        return f"input c{tag} : [{n}]", f"circulant(c{tag})"

    def construct(self, b, args, kwargs, span):
        b.arity(self, args, span, 1, 1)
        c = b.tensor(args[0], range(1, 9), "circulant's c")
        attrs = {"T": False}
        if "ndim" in kwargs:
            d = b.num(kwargs["ndim"])
            rank = len(b.g.type(c).shape)
            if float(d) != int(d) or not 1 <= int(d) <= rank:
                raise TypeError_(f"circulant's ndim must be an integer from 1 to the rank of c ({rank}), got {d:g}",
                                 kwargs["ndim"].span, hint="circulant(c, ndim=2) for c [n1, n2]: the 2-d circulant")
            if int(d) > 1:
                attrs["ndim"] = int(d)
        return b.add(self.name, [c], attrs, span=span)

    def infer(self, g, ops, attrs, span):
        c = tensor_of_rank(g, ops[0], range(1, 9), span, "circulant's c")
        d = attrs.get("ndim", 1)
        n = sym_prod(c.shape[-d:])
        return OpType(n, n, c.shape[:-d], c.dtype)

    def dense(self, g, v, vals):
        c = vals[0]
        if g[v].attrs.get("ndim", 1) > 1:
            return _circulant_nd(g, c, g[v].attrs["ndim"], g[v].attrs["T"])
        n = c.shape[-1]
        idx = (np.arange(n)[:, None] - np.arange(n)[None, :]) % n
        out = c[..., idx]
        return np.swapaxes(out, -1, -2) if g[v].attrs["T"] else out

    def flops(self, g, v, k):
        n = g.type(v).rows
        return lag_flops(g, v, k, n, n, n, True)

    def lower(self, lw, v, x):
        node = lw.src[v]
        c = lw.tensor(node.operands[0])
        if node.attrs.get("ndim", 1) > 1:
            return self._lower_nd(lw, node, c, x)
        n = lw.src.type(v).rows
        if node.attrs["T"]:       # Cᵀ = circulant(c[−i mod n]) = circulant([c0, c_{n−1}, ..., c1])
            rest = lw.prim("flip", lw.prim("slice", c, axis=-1, start=1, stop=n), axis=-1)
            c = lw.prim("concat", lw.prim("slice", c, axis=-1, start=0, stop=1), rest, axis=-1)
        return lower_lag(lw, c, 0, n, n, n, x, circular=True)

    def _lower_nd(self, lw, node, c, x):
        """rfftn of x on the grid (batch folded in front), times rfftn(c) (of c reversed for the
        transpose: the conjugate spectrum), irfftn."""
        d = node.attrs["ndim"]
        grid = tuple(lw.shape(c)[-d:])
        cb = tuple(lw.shape(c)[:-d])
        if node.attrs["T"]:
            for i in range(d):
                ax = len(lw.shape(c)) - d + i
                c = roll(lw, lw.prim("flip", c, axis=ax), ax, grid[i] - 1)
        xs = lw.shape(x)
        b, k = xs[:-2], xs[-1]
        xi = moveaxis(lw, lw.reshape(x, tuple(b) + grid + (k,)), len(b) + d, len(b))       # [*b, k, n1..nd]
        spec = lw.prim("rfftn", lw.reshape(c, cb + (1,) + grid), s=grid)                    # [.., 1, n1..]
        y = lw.prim("irfftn", lw.mul(lw.prim("rfftn", xi, s=grid), spec), s=grid)
        yb = tuple(lw.shape(y)[:-d - 1])
        return lw.reshape(moveaxis(lw, y, len(yb), len(yb) + d), yb + (sym_prod(grid), k))

    def transpose(self, g, v):
        node = g[v]
        return g.add(self.name, node.operands, {**node.attrs, "T": not node.attrs["T"]}, span=node.span)

    def cheap_inverse(self, g, v):              # a division in the Fourier domain
        return True

    def fft_tree(self, g, v, conj, leaves):     # its first column's spectrum, on its own grid
        if g.type(v).batch:
            return None
        c = g[v].operands[0]
        grid = tuple(g.type(c).shape[-g[v].attrs.get("ndim", 1):])
        return leaf(leaves, (c,), None, grid, conj != g[v].attrs["T"])

    rules = (
        # inv(circulant(c)) = circulant(ifft(1/fft(c))); the N-d one: inv-fft-diagonal (kinds/fftdiag.py)
        Rule("inv-circulant", "inv(circulant(c)) = circulant(ifft(1 / fft(c)))", ("inv", As("C", ("circulant", "c"))),
             _inv_circulant, where=lambda g, m: auto(g, m) and g[m["C"]].attrs.get("ndim", 1) == 1),
    )


@register
class Toeplitz(Kind):
    """`toeplitz(c, r)`: first column c [..., m], first row r [..., n] (scipy.linalg.toeplitz; r[0] ignored)."""

    name = "toeplitz"
    constructors = ("toeplitz",)
    params = ("c", "r")
    examples = (
        "input c : [4]\ninput r : [6]\ninput x : [6, 2]\ninput w : [4, 3]\n"
        "export y = toeplitz(c, r) @ x\nexport z = toeplitz(c, r).T @ w",
        "input c : [3, 5]\ninput r : [3, 5]\ninput x : [2, 3, 5, 2]\nexport y = toeplitz(c, r) @ x",
        "input c : [5]\ninput r : [5]\ninput d : [5]\ninput x : [5, 2]\n"
        "export y = (diag(d) @ toeplitz(c, r) + toeplitz(r, c)) @ x",
        "input c : [1]\ninput r : [3]\ninput x : [3, 2]\nexport y = toeplitz(c, r) @ x\n"
        "export z = toeplitz(r, c) @ (toeplitz(c, r) @ x)",
    )

    def sample(self, n, tag):
        return f"input c{tag} : [{n}]\ninput r{tag} : [{n}]", f"toeplitz(c{tag}, r{tag})"

    def construct(self, b, args, kwargs, span):
        b.no_kwargs(self, kwargs)
        b.arity(self, args, span, 2, 2)
        ops = [b.tensor(a, range(1, 9), f"toeplitz's {w}") for a, w in zip(args, ("c", "r"))]
        return b.add(self.name, ops, {"T": False}, span=span)

    def infer(self, g, ops, attrs, span):
        c = tensor_of_rank(g, ops[0], range(1, 9), span, "toeplitz's c")
        r = tensor_of_rank(g, ops[1], range(1, 9), span, "toeplitz's r")
        if len(c.shape) != len(r.shape) or not all(g.dims.equal(a, b) for a, b in zip(c.shape[:-1], r.shape[:-1])):
            cn, rn = written(g[ops[0]].span, "c"), written(g[ops[1]].span, "r")     # the user's names
            raise ShapeError(f"{written(span, 'toeplitz(c, r)')} needs {cn} and {rn} with the same leading (channel) "
                             f"dims, got {cn} {c} and {rn} {r}",
                             span)
        m, n = c.shape[-1], r.shape[-1]
        if attrs["T"]:
            m, n = n, m
        return OpType(m, n, c.shape[:-1], join_dtype(c.dtype, r.dtype))

    @staticmethod
    def kernel_np(c, r):
        """w = [r_{n−1}, ..., r_1, c_0, ..., c_{m−1}], off = n − 1."""
        return np.concatenate([np.flip(r[..., 1:], axis=-1), c], axis=-1), r.shape[-1] - 1

    def dense(self, g, v, vals):
        c, r = vals
        w, off = self.kernel_np(c, r)
        out = lag_matrix(w, off, c.shape[-1], r.shape[-1])
        return np.swapaxes(out, -1, -2) if g[v].attrs["T"] else out

    def flops(self, g, v, k):
        t = g.type(v)
        return lag_flops(g, v, k, t.rows + t.cols - 1, t.cols, t.rows, False)

    def lower(self, lw, v, x):
        node = lw.src[v]
        c, r = (lw.tensor(o) for o in node.operands)
        m, n = lw.shape(c)[-1], lw.shape(r)[-1]
        if lw.dims.value(n) == 1:
            w = c
        else:
            w = lw.prim("concat", lw.prim("flip", lw.prim("slice", r, axis=-1, start=1, stop=n), axis=-1), c, axis=-1)
        K = m + n - 1
        if node.attrs["T"]:       # Tᵀ[i, j] = w[j − i + n − 1] = flip(w)[i − j + m − 1]
            return lower_lag(lw, lw.prim("flip", w, axis=-1), m - 1, K, m, n, x)
        return lower_lag(lw, w, n - 1, K, n, m, x)

    def transpose(self, g, v):
        node = g[v]
        return g.add(self.name, node.operands, {"T": not node.attrs["T"]}, span=node.span)


@register
class Conv(Kind):
    """`conv(h, n=len(h), causal=true)`: the n x n convolution by the kernel h [..., K] (module doc)."""

    name = "conv"
    constructors = ("conv",)
    params = ("h", "n")
    options = ("causal", "mode", "stride")
    examples = (
        "input h : [8]\ninput x : [8, 3]\nexport y = conv(h) @ x\nexport z = conv(h).T @ x",
        "input h : [4]\ninput x : [10, 2]\nexport y = conv(h, 10) @ x\nexport z = conv(h, 10, causal=false) @ x",
        "input h : [5]\ninput x : [5, 2]\nexport y = conv(h, causal=false) @ x\n"
        "export z = conv(h, causal=false).T @ x",
        "input h : [3, 16]\ninput x : [2, 3, 16, 1]\ninput v : [3, 16, 2]\n"
        "export y = conv(h) @ x\nexport z = conv(h).T @ v",
        "dim n = 6\ninput h : [n]\ninput d : [n]\ninput U : [n, 2]\ninput V : [n, 2]\ninput x : [n, 2]\n"
        "export y = (conv(h) @ diag(d) + lowrank(U, V)) @ x\nexport z = (conv(h) @ conv(d)) @ x",
        "input h : [7]\ninput x : [3, 2]\nexport y = conv(h, 3, causal=false) @ x",
    )

    def sample(self, n, tag):
        return f"input h{tag} : [{n}]", f"conv(h{tag})"

    def construct(self, b, args, kwargs, span):
        if len(args) > 2 or "mode" in kwargs or "stride" in kwargs:     # the N-d form (kinds/convnd.py)
            from .base import REGISTRY
            return REGISTRY["convnd"].build(b, args, kwargs, span)
        b.arity(self, args, span, 1, 2)
        for key, val in kwargs.items():
            if key != "causal":
                raise TypeError_(f"conv(...) has no option {key!r}", val.span,
                                 hint="options: causal; or conv(h, n1, ..., nd, mode=..., stride=...)")
        h = b.tensor(args[0], range(1, 9), "conv's kernel h")
        attrs = {"causal": b.flag(kwargs["causal"]) if "causal" in kwargs else True, "T": False}
        if len(args) > 1:
            attrs["n"] = b.dim(args[1])
        return b.add(self.name, [h], attrs, span=span)

    def infer(self, g, ops, attrs, span):
        h = tensor_of_rank(g, ops[0], range(1, 9), span, "conv's kernel h")
        n = attrs.get("n", h.shape[-1])
        if not attrs["causal"] and g.dims.value(h.shape[-1]) is None:
            raise ShapeError(f"conv(h, causal=false) needs a concrete kernel length, got h {h}", span,
                             hint="the centre (K − 1)//2 must be known at compile time")
        props = frozenset() if not attrs["causal"] else frozenset({"upper" if attrs["T"] else "lower"})
        return OpType(n, n, h.shape[:-1], h.dtype, props)

    @staticmethod
    def offset(K, causal):
        return 0 if causal else (int(K) - 1) // 2

    def dense(self, g, v, vals):
        h = vals[0]
        a = g[v].attrs
        n = g.type(v).rows
        n = g.dims.value(n) if g.dims.value(n) is not None else h.shape[-1]
        out = lag_matrix(h, self.offset(h.shape[-1], a["causal"]), n, n)
        return np.swapaxes(out, -1, -2) if a["T"] else out

    def flops(self, g, v, k):
        K = g.type(g[v].operands[0]).shape[-1]
        n = g.type(v).rows
        return lag_flops(g, v, k, K, n, n, False)

    def lower(self, lw, v, x):
        node = lw.src[v]
        h = lw.tensor(node.operands[0])
        K = lw.shape(h)[-1]
        n = lw.src.type(v).rows
        off = 0 if node.attrs["causal"] else self.offset(lw.dims.value(K), False)
        if node.attrs["T"]:       # Mᵀ[i, j] = h[j − i + off] = flip(h)[i − j + K − 1 − off]
            return lower_lag(lw, lw.prim("flip", h, axis=-1), K - 1 - off, K, n, n, x)
        return lower_lag(lw, h, off, K, n, n, x)

    def transpose(self, g, v):
        node = g[v]
        return g.add(self.name, node.operands, dict(node.attrs, T=not node.attrs["T"]), span=node.span)

"""FFT-diagonal algebra: operators diagonalized by one N-d DFT (docs/conv.md).

Circular convolutions — `conv(h, n1, ..., nd, mode=circular)` (one channel, stride 1), 1-D
`circulant(c)`, and Kronecker products of circulants (`kron(circulant(a), circulant(b))` is the
2-D circulant of outer(a, b)) — are F⁻¹ diag(λ) F for the DFT F of their grid, and so is every sum,
product, scaling, transpose (conj λ) and inverse (1 / λ) of them with `c * eye(N)` (λ = c).  The
rules `inv-fft-diagonal` and `logdet-fft-diagonal` turn `inv(A)` and `logdet(A)` of such an A into
one `fftdiag` operator, whose spectrum is computed from the kernels' FFTs by that algebra: applied
as rfftn → × λ → irfftn, log-determined as Σ log |λ| over the full spectrum.  No N x N matrix: the
Tikhonov deconvolution inv(Hᵀ H + μ I) Hᵀ y of a circular blur H is three FFTs and a division.

An expression is a nested tuple (hashable, an attribute): ("k", i, conj) the i-th leaf's spectrum
(conj: of its transpose), ("eye",), ("scale", c, e), ("add", e, ...), ("mul", e, ...), ("inv", e).
A leaf (kinds/fft_algebra.py) is a conv kernel [k1..kd] rotated by its centre k // 2, or a
circulant's first column, on its own axes of the grid: a Kronecker product's factors each have theirs, (A ⊗ B) = (A ⊗ I)(I ⊗ B),
so kron(circulant(a), circulant(b)) is the 2-D circulant of outer(a, b) and kron(H₁ᵀH₁ + I, H₂) is
FFT-diagonal too.
"""
from __future__ import annotations

from functools import reduce

import numpy as np

from .base import Kind, OpType, TensorType, join_dtype, register, sym_prod
from .fft_algebra import fft_tree
from .fftconv import fft_flops
from .grid import moveaxis, pad, roll
from .linalg_build import auto, span_of
from .rule import Rule


def _fft_diagonal(g, m, compound=True):
    """The matched inv / logdet's operand is FFT-diagonal with a grid, and (compound) more than the
    bare circulant the rule inv-circulant already divides."""
    if not auto(g, m):
        return False
    a = g[m["_"]].operands[0]
    t = fft_tree(g, a)
    if t is None or t[2] is None:
        return False
    # a bare 1-d circulant: inv-circulant divides it already
    return not compound or t[0][0] != "k" or t[1][0][1] is not None or len(t[2]) > 1


def _node(g, m, kind, wrap):
    a = g[m["_"]].operands[0]
    expr, leaves, sizes = fft_tree(g, a)
    ops = [o for leaf in leaves for o in leaf[0]]
    attrs = {"expr": wrap(expr), "sizes": tuple(sizes), "T": False,
             "leaves": tuple((len(o), ks, off, tuple(own)) for o, ks, off, own in leaves)}
    return g.add(kind, ops, attrs, span=span_of(g, m))


# ---- the spectrum: numpy (the dense meaning) and primitives (the lowering) ------------------------

def _leaf_kernels_np(g, attrs, vals, shape):
    """Each leaf's kernel on the whole grid, rotated so that its DFT is the leaf's spectrum: on its own
    axes, a delta (1 at index 0) along the others."""
    out, i = [], 0
    for count, ks, off, own in attrs["leaves"]:
        own = tuple(int(g.dims.value(s)) for s in own)
        if ks is not None:                       # a convolution kernel, rotated by its centre
            h = vals[i]
            k = np.zeros(own)
            k[tuple(slice(0, s) for s in h.shape)] = h
            k = np.roll(k, [-(s // 2) for s in h.shape], axis=tuple(range(len(own))))
        else:
            k = vals[i]
        full = np.zeros(shape)
        full[(0,) * off + tuple(slice(None) for _ in own) + (0,) * (len(shape) - off - len(own))] = k
        out.append(full)
        i += count
    return out


# how each tag of an expression is evaluated, given the operations `f` of numpy or of the lowering
_EVAL = {
    "k": lambda e, f: f["leaf"](e[1], e[2]),
    "eye": lambda e, f: f["one"](),
    "scale": lambda e, f: f["scale"](_eval(e[2], f), e[1]),
    "inv": lambda e, f: f["inv"](_eval(e[1], f)),
    "add": lambda e, f: reduce(f["add"], [_eval(x, f) for x in e[1:]]),
    "mul": lambda e, f: reduce(f["mul"], [_eval(x, f) for x in e[1:]]),
}


def _eval(expr, f):
    return _EVAL[expr[0]](expr, f)


def spectrum_np(g, v, vals):
    attrs = g[v].attrs
    shape = tuple(int(g.dims.value(s)) for s in attrs["sizes"])
    kernels = [np.fft.fftn(k) for k in _leaf_kernels_np(g, attrs, vals, shape)]
    ops = {"leaf": lambda i, c: np.conj(kernels[i]) if c else kernels[i], "one": lambda: np.ones(shape),
           "add": np.add, "mul": np.multiply, "scale": lambda x, c: c * x, "inv": lambda x: 1.0 / x}
    return _eval(attrs["expr"], ops), shape


def _conj_expr(e):
    if e[0] == "k":
        return ("k", e[1], not e[2])
    if e[0] == "eye":
        return e
    if e[0] == "scale":
        return ("scale", e[1], _conj_expr(e[2]))
    return (e[0],) + tuple(_conj_expr(x) for x in e[1:])


def spectrum(lw, v, dtype):
    """The half spectrum [n1, ..., nd/2 + 1] (complex) of fftdiag node v, as primitives."""
    node = lw.src[v]
    attrs = node.attrs
    sizes = attrs["sizes"]
    d = len(sizes)
    kernels, i = [], 0
    for count, ks, off, own in attrs["leaves"]:
        k = lw.tensor(node.operands[i])
        if ks is not None:
            for ax in range(len(own)):
                k = roll(lw, pad(lw, k, ax, 0, own[ax] - ks[ax]), ax, int(lw.dims.value(ks[ax])) // 2)
        kernels.append((k if lw.dtype(k) == dtype else lw.prim("cast", k, dtype=dtype), off, own))
        i += count

    def leaf(j, conj):
        k, off, own = kernels[j]
        if conj:                                 # k[(−t) mod n] along its axes: the conjugate spectrum
            for ax in range(len(own)):
                k = roll(lw, lw.prim("flip", k, axis=ax), ax, own[ax] - 1)
        shape = (1,) * off + tuple(own) + (1,) * (d - off - len(own))     # a delta along the other axes
        return lw.prim("rfftn", lw.reshape(k, shape) if len(own) != d else k, s=tuple(sizes))

    def one():
        return lw.prim("fill", shape=(), value=1.0, dtype=dtype)
    return _eval(attrs["expr"], {"leaf": leaf, "one": one, "add": lw.add, "mul": lw.mul, "scale": lw.scale,
                                 "inv": lambda x: lw.prim("div", one(), x)})


@register
class FFTDiag(Kind):
    """F⁻¹ diag(λ) F on an N-d grid, λ an algebraic expression of circular kernels' spectra (module doc)."""

    name = "fftdiag"
    examples = (
        "input h : [3, 3]\ninput x : [48, 2]\nlet H = conv(h, 6, 8, mode=circular)\n"
        "export y = inv(H.T @ H + 0.5 * eye(48)) @ x\nexport z = logdet(H.T @ H + 0.5 * eye(48))",
        "input a : [4]\ninput b : [5]\ninput x : [20, 1]\nlet C = kron(circulant(a), circulant(b))\n"
        "export y = inv(C + 6 * eye(20)) @ x\nexport z = logdet(C.T @ C + eye(20))",
        "input c : [2, 3]\ninput x : [6, 2]\nlet C = circulant(c, ndim=2)\n"
        "export y = inv(2 * C.T + 7 * eye(6)).T @ x\nexport z = logdet(C @ C.T + eye(6))",
    )

    def sample(self, n, tag):
        return None

    def infer(self, g, ops, attrs, span):
        n = sym_prod(attrs["sizes"])
        return OpType(n, n, (), join_dtype(*(g.type(o).dtype for o in ops)))

    def dense(self, g, v, vals):
        spec, shape = spectrum_np(g, v, vals)
        n = int(np.prod(shape))
        eye = np.eye(n).reshape((n,) + shape)
        axes = tuple(range(1, len(shape) + 1))
        cols = np.real(np.fft.ifftn(spec * np.fft.fftn(eye, axes=axes), axes=axes)).reshape(n, n)
        return cols.T                             # row j of cols is the image of e_j: a column

    def flops(self, g, v, k):
        n = sym_prod(g[v].attrs["sizes"])
        return (2 * k + len(g[v].attrs["leaves"])) * fft_flops(n) + 8 * n * k

    def transpose(self, g, v):
        n = g[v]
        return g.add(self.name, list(n.operands), {**n.attrs, "expr": _conj_expr(n.attrs["expr"])}, span=n.span)

    def lower(self, lw, v, x):
        sizes = lw.src[v].attrs["sizes"]
        d = len(sizes)
        dtype = lw.dtype(x) if lw.dtype(x) in ("float32", "float64") else "float32"
        lw.note(f"{'inv' if lw.src[v].attrs['expr'][0] == 'inv' else 'f'} of an FFT-diagonal operator on a "
                f"{' x '.join(map(str, sizes))} grid: rfftn, × its spectrum, irfftn (no N x N matrix)")
        xs = lw.shape(x)
        b, k = xs[:-2], xs[-1]
        xi = moveaxis(lw, lw.reshape(x, tuple(b) + tuple(sizes) + (k,)), len(b) + d, len(b))
        y = lw.prim("irfftn", lw.mul(lw.prim("rfftn", xi, s=tuple(sizes)), spectrum(lw, v, dtype)), s=tuple(sizes))
        return lw.reshape(moveaxis(lw, y, len(b), len(b) + d), tuple(b) + (sym_prod(sizes), k))

    rules = (
        Rule("inv-fft-diagonal", "inv(F⁻¹ diag(λ) F) = F⁻¹ diag(1 / λ) F: sums, products, scalings, transposes "
             "and shifts c I of circular convolutions, one DFT diagonalizing them all",
             ("inv", "A"), lambda g, m: _node(g, m, "fftdiag", lambda e: ("inv", e)), where=_fft_diagonal),
        Rule("logdet-fft-diagonal", "logdet(F⁻¹ diag(λ) F) = Σ log |λ| over the full spectrum",
             ("logdet", "A"), lambda g, m: _node(g, m, "fftdiag_logdet", lambda e: e),
             where=lambda g, m: _fft_diagonal(g, m, compound=False)),
    )


@register
class FFTDiagLogdet(Kind):
    """Σ log |λ| over the N-d spectrum λ of an FFT-diagonal operator (a scalar)."""

    name = "fftdiag_logdet"
    produces = "tensor"
    examples = ("input c : [5]\nexport z = logdet(circulant(c) + 4 * eye(5))",)

    def sample(self, n, tag):
        return None

    def infer(self, g, ops, attrs, span):
        return TensorType((), join_dtype(*(g.type(o).dtype for o in ops)))

    def dense(self, g, v, vals):
        spec, _ = spectrum_np(g, v, vals)
        return np.sum(np.log(np.abs(spec)))

    def flops(self, g, v, k=None):
        return len(g[v].attrs["leaves"]) * fft_flops(sym_prod(g[v].attrs["sizes"]))

    def lower(self, lw, v, x=None):
        """The half spectrum's log |λ|, each entry counted twice except where the last axis is its own
        mirror (frequency 0 and, for an even length, n / 2): the full spectrum is conjugate-symmetric."""
        sizes = lw.src[v].attrs["sizes"]
        dtype = lw.src.type(v).dtype or "float32"
        logs = lw.prim("unary", lw.prim("unary", spectrum(lw, v, dtype), fn="abs"), fn="log")
        n = int(lw.dims.value(sizes[-1]))
        w = [1.0] + [2.0] * ((n - 1) // 2) + ([1.0] if n % 2 == 0 else [])
        weights = lw.prim("const", expr=f"np.array({w!r})", dtype=dtype, name=f"rfft_weights_{n}")
        total = lw.mul(logs, weights)
        while lw.shape(total):
            total = lw.prim("sum", total, axis=-1)
        return total

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
A leaf is a conv kernel [k1..kd] rotated by its centre k // 2, or a circulant's first column, on
its own axes of the grid: a Kronecker product's factors each have theirs, (A ⊗ B) = (A ⊗ I)(I ⊗ B),
so kron(circulant(a), circulant(b)) is the 2-D circulant of outer(a, b) and kron(H₁ᵀH₁ + I, H₂) is
FFT-diagonal too.
"""
from __future__ import annotations

import numpy as np

from .base import Kind, OpType, TensorType, join_dtype, register, sym_prod
from .fftconv import fft_flops
from .grid import moveaxis, pad, roll
from .linalg_build import auto, span_of
from .rule import Rule


def fft_tree(g, v, conj=False, leaves=None):
    """(expression, leaves, grid sizes or None) of operator v when it is FFT-diagonal (module doc),
    else None.  A leaf is [kind, operand ids, kernel sizes (conv) or None, offset, its own grid]:
    its kernel lives on axes offset.. of the whole grid (a Kronecker factor's), a delta along the
    others.  `conj`: of v's transpose."""
    leaves = [] if leaves is None else leaves
    n = g[v]
    kind = n.kind
    if kind == "convnd":
        a = n.attrs
        if a["mode"] != "circular" or a["stride"] != 1 or a["channels"]:
            return None
        ks = tuple(g.type(n.operands[0]).shape)
        leaves.append(["conv", (n.operands[0],), ks, 0, tuple(a["sizes"])])
        return ("k", len(leaves) - 1, conj != a["T"]), leaves, tuple(a["sizes"])
    if kind == "circulant" and not g.type(v).batch:
        grid = tuple(g.type(n.operands[0]).shape[-n.attrs.get("ndim", 1):])
        leaves.append(["circ", (n.operands[0],), None, 0, grid])
        return ("k", len(leaves) - 1, conj != n.attrs["T"]), leaves, grid
    if kind == "kron":          # (A ⊗ B) = (A ⊗ I)(I ⊗ B): each factor's spectrum on its own axes
        parts, sizes = [], ()
        for o in n.operands:
            before = len(leaves)
            sub = fft_tree(g, o, conj, leaves)
            if sub is None or g.type(o).batch:
                return None
            for leaf in leaves[before:]:
                leaf[3] += len(sizes)
            sizes += sub[2] if sub[2] is not None else (g.type(o).rows,)
            parts.append(sub[0])
        return ("mul", *parts), leaves, sizes
    if kind == "eye":
        return ("eye",), leaves, None
    if kind == "transpose":
        return fft_tree(g, n.operands[0], not conj, leaves)
    if kind in ("scale", "inv"):
        sub = fft_tree(g, n.operands[0], conj, leaves)
        if sub is None or (kind == "inv" and n.attrs.get("method", "auto") != "auto"):
            return None
        return (("scale", float(n.attrs["c"]), sub[0]) if kind == "scale" else ("inv", sub[0])), leaves, sub[2]
    if kind in ("sum", "compose"):
        parts, sizes = [], None
        for o in n.operands:
            sub = fft_tree(g, o, conj, leaves)
            if sub is None:
                return None
            if sub[2] is not None:
                if sizes is not None and (len(sizes) != len(sub[2]) or
                                          not all(g.dims.equal(p, q) for p, q in zip(sizes, sub[2]))):
                    return None                     # two grids: not one DFT
                sizes = sub[2]
            parts.append(sub[0])
        return ("add" if kind == "sum" else "mul", *parts), leaves, sizes
    return None


def _fft_diagonal(g, m, compound=True):
    """The matched inv / logdet's operand is FFT-diagonal with a grid, and (compound) more than the
    bare circulant the rule inv-circulant already divides."""
    if not auto(g, m):
        return False
    a = g[m["_"]].operands[0]
    t = fft_tree(g, a)
    return t is not None and t[2] is not None and (
        not compound or g[a].kind != "circulant" or g[a].attrs.get("ndim", 1) > 1)


def _node(g, m, kind, wrap):
    a = g[m["_"]].operands[0]
    expr, leaves, sizes = fft_tree(g, a)
    ops = [o for leaf in leaves for o in leaf[1]]
    attrs = {"expr": wrap(expr), "sizes": tuple(sizes), "T": False,
             "leaves": tuple((k, len(o), info, off, tuple(own)) for k, o, info, off, own in leaves)}
    return g.add(kind, ops, attrs, span=span_of(g, m))


# ---- the spectrum: numpy (the dense meaning) and primitives (the lowering) ------------------------

def _leaf_kernels_np(g, attrs, vals, shape):
    """Each leaf's kernel on the whole grid, rotated so that its DFT is the leaf's spectrum: on its own
    axes, a delta (1 at index 0) along the others."""
    out, i = [], 0
    for kind, count, ks, off, own in attrs["leaves"]:
        own = tuple(int(g.dims.value(s)) for s in own)
        if kind == "conv":
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


def _eval(expr, leaf, one, add, mul, scale, inv):
    op = expr[0]
    if op == "k":
        return leaf(expr[1], expr[2])
    if op == "eye":
        return one()
    if op == "scale":
        return scale(_eval(expr[2], leaf, one, add, mul, scale, inv), expr[1])
    if op == "inv":
        return inv(_eval(expr[1], leaf, one, add, mul, scale, inv))
    parts = [_eval(e, leaf, one, add, mul, scale, inv) for e in expr[1:]]
    out = parts[0]
    for p in parts[1:]:
        out = add(out, p) if op == "add" else mul(out, p)
    return out


def spectrum_np(g, v, vals):
    attrs = g[v].attrs
    shape = tuple(int(g.dims.value(s)) for s in attrs["sizes"])
    kernels = [np.fft.fftn(k) for k in _leaf_kernels_np(g, attrs, vals, shape)]
    return _eval(attrs["expr"], lambda i, c: np.conj(kernels[i]) if c else kernels[i], lambda: np.ones(shape),
                 np.add, np.multiply, lambda x, c: c * x, lambda x: 1.0 / x), shape


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
    for kind, count, ks, off, own in attrs["leaves"]:
        k = lw.tensor(node.operands[i])
        if kind == "conv":
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
    return _eval(attrs["expr"], leaf, one, lw.add, lw.mul, lw.scale,
                 lambda x: lw.prim("div", one(), x))


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

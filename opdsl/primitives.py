"""The primitive set: what lowering produces and what a backend implements.

Each primitive has a shape rule (``infer``) and a numpy meaning (``np``) used by
the primitive-level interpreter in the tests.  Backends (``opdsl.backends``)
hold one emit entry per primitive and nothing about operator kinds.

Shapes are tuples of sympy expressions over the program's dims.
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Callable

import numpy as np
import sympy as sp

from .dims import same_size

from .errors import ShapeError
from .ir import TensorType

PRIMS: dict[str, "Prim"] = {}


@dataclass
class Prim:
    name: str
    infer: Callable          # (g, operand types, attrs) -> shape tuple
    np: Callable             # (*arrays, **attrs) -> array
    doc: str = ""
    dtype: Callable | None = None   # (operand dtypes, attrs) -> dtype; default: widest operand

    def __post_init__(self):
        PRIMS[self.name] = self

    # Graph.add calls spec.infer(graph, operands, attrs, span)
    def infer_node(self, g, ops, attrs, span):
        ts = [g.type(o) for o in ops]
        shape = tuple(sp.sympify(d) for d in self.infer(g, ts, attrs))
        if self.dtype is not None:
            dt = self.dtype([t.dtype for t in ts], attrs)
        else:
            dt = _widest([t.dtype for t in ts]) or attrs.get("dtype", "float32")
        return TensorType(shape, dt)


_ORDER = {"float16": 0, "bfloat16": 0, "float32": 1, "float64": 2, "complex64": 3, "complex128": 4}


def _widest(dts):
    return max(dts, key=lambda d: _ORDER.get(d, 1)) if dts else None


class _Table(dict):
    """PRIMS viewed as a Graph registry (Graph.add calls registry[kind].infer)."""

    def __getitem__(self, k):
        p = PRIMS[k]
        return _Adapter(p)


@dataclass
class _Adapter:
    p: Prim

    def infer(self, g, ops, attrs, span):
        return self.p.infer_node(g, ops, attrs, span)


PRIM_REGISTRY = _Table()


def broadcast(a, b):
    """numpy broadcasting of two symbolic shapes."""
    out = []
    for i in range(max(len(a), len(b))):
        x = a[len(a) - 1 - i] if i < len(a) else 1
        y = b[len(b) - 1 - i] if i < len(b) else 1
        if x == 1 or (y != 1 and same_size(x, 1)):
            out.append(y)
        elif y == 1 or same_size(x, y) or same_size(y, 1):   # dims-aware: L and d match when both are 8
            out.append(x)
        else:
            raise ShapeError(f"internal: cannot broadcast {a} with {b}")
    return tuple(reversed(out))


def _matmul_shape(g, ts, attrs):
    a, b = ts[0].shape, ts[1].shape
    batch = broadcast(a[:-2], b[:-2])
    return batch + (a[-2], b[-1])


def _einsum_shape(g, ts, attrs):
    spec = attrs["spec"]
    ins, out = spec.split("->")
    sizes = {}
    for term, t in zip(ins.split(","), ts):
        for c, d in zip(term, t.shape):
            sizes.setdefault(c, d)
    return tuple(sizes[c] for c in out)


def _np_einsum(*xs, spec):
    return np.einsum(spec, *xs, optimize=True)


def _reduce_shape(g, ts, attrs):
    s = list(ts[0].shape)
    ax = attrs["axis"] % len(s)
    if attrs.get("keepdims"):
        s[ax] = 1
    else:
        del s[ax]
    return tuple(s)


def _concat_shape(g, ts, attrs):
    ax = attrs["axis"] % len(ts[0].shape)
    s = list(ts[0].shape)
    s[ax] = sum((t.shape[ax] for t in ts), sp.Integer(0))
    return tuple(s)


def _slice_shape(g, ts, attrs):
    s = list(ts[0].shape)
    ax = attrs["axis"] % len(s)
    s[ax] = sp.sympify(attrs["stop"]) - sp.sympify(attrs["start"])
    return tuple(s)


def _slice_np(x, axis, start, stop):
    idx = [slice(None)] * x.ndim
    idx[axis] = slice(int(start), int(stop))
    return x[tuple(idx)]


def _fft_shape(half):
    def rule(g, ts, attrs):
        s = list(ts[0].shape)
        s[-1] = attrs["n"] // 2 + 1 if half else attrs["n"]
        return tuple(s)
    return rule


def _complex(dts, attrs):
    return "complex128" if "float64" in dts else "complex64"


def _real(dts, attrs):
    return "float64" if "complex128" in dts else "float32"


UNARY = {
    "neg": np.negative, "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "recip": np.reciprocal,
    "relu": lambda x: np.maximum(x, 0), "abs": np.abs, "square": np.square,
    "elu1": lambda x: np.where(x >= 0, x + 1, np.exp(np.minimum(x, 0))),
}

Prim("arg", lambda g, ts, a: a["shape"], lambda **a: None, "a function argument",
     dtype=lambda d, a: a["dtype"])
Prim("eye", lambda g, ts, a: (a["n"], a["n"]), lambda n, dtype: np.eye(int(n), dtype=dtype),
     "identity matrix", dtype=lambda d, a: a["dtype"])
Prim("zeros", lambda g, ts, a: a["shape"], lambda shape, dtype: np.zeros([int(s) for s in shape], dtype),
     "zeros", dtype=lambda d, a: a["dtype"])
Prim("reshape", lambda g, ts, a: a["shape"], lambda x, shape: x.reshape([int(s) for s in shape]),
     "reshape (row-major), no copy when contiguous")
Prim("permute", lambda g, ts, a: tuple(ts[0].shape[i] for i in a["perm"]),
     lambda x, perm: np.transpose(x, perm), "axis permutation")
Prim("swap", lambda g, ts, a: ts[0].shape[:-2] + (ts[0].shape[-1], ts[0].shape[-2]),
     lambda x: np.swapaxes(x, -1, -2), "transpose of the last two axes (a view)")
Prim("matmul", _matmul_shape, np.matmul, "batched matrix product with broadcasting")
Prim("einsum", _einsum_shape, _np_einsum, "two-operand contraction")
Prim("add", lambda g, ts, a: broadcast(ts[0].shape, ts[1].shape), np.add, "broadcast add")
Prim("sub", lambda g, ts, a: broadcast(ts[0].shape, ts[1].shape), np.subtract, "broadcast subtract")
Prim("mul", lambda g, ts, a: broadcast(ts[0].shape, ts[1].shape), np.multiply, "broadcast multiply")
Prim("div", lambda g, ts, a: broadcast(ts[0].shape, ts[1].shape), np.divide, "broadcast divide")
Prim("scale", lambda g, ts, a: ts[0].shape, lambda x, c: x * np.asarray(c, x.dtype), "multiply by a constant")
Prim("unary", lambda g, ts, a: ts[0].shape, lambda x, fn: UNARY[fn](x), "elementwise function")
Prim("sum", _reduce_shape, lambda x, axis, keepdims=False: x.sum(axis=axis, keepdims=keepdims), "sum over an axis")
Prim("cumsum", lambda g, ts, a: ts[0].shape, lambda x, axis: np.cumsum(x, axis=axis), "inclusive prefix sum")
Prim("concat", _concat_shape, lambda *xs, axis: np.concatenate(xs, axis=axis), "concatenate")
Prim("slice", _slice_shape, _slice_np, "contiguous slice along one axis")
Prim("rfft", _fft_shape(True), lambda x, n: np.fft.rfft(x, n=int(n), axis=-1), "real FFT, last axis",
     dtype=_complex)
Prim("irfft", _fft_shape(False), lambda x, n: np.fft.irfft(x, n=int(n), axis=-1), "inverse real FFT, last axis",
     dtype=_real)
Prim("cast", lambda g, ts, a: ts[0].shape, lambda x, dtype: x.astype(dtype), "dtype conversion",
     dtype=lambda d, a: a["dtype"])


def _solve_triangular_np(a, b, upper=True):
    """Solve triu(a) x = b (tril when upper=False); the other triangle of a is ignored."""
    return np.linalg.solve(np.triu(a) if upper else np.tril(a), b)


Prim("solve_triangular",
     lambda g, ts, a: broadcast(ts[0].shape[:-2], ts[1].shape[:-2]) + ts[1].shape[-2:],
     _solve_triangular_np,
     "x with triu(A) x = B (tril(A) when upper=False), broadcast over batch dims; "
     "only the named triangle of A is read")


# ---- structured families: attention and FFT convolution (opdsl/kinds/attention.py, fftconv.py) ----

def _tril_np(x, k=0, fill=0.0):
    r, c = x.shape[-2], x.shape[-1]
    return np.where(np.tri(r, c, int(k), dtype=bool), x, np.asarray(fill, x.dtype))


# The FAVOR+ random features: m rows of blocks of d x d orthogonal matrices (QR of
# Gaussian draws with the signs of diag(R) fixed, so each row is uniform on the
# sphere), each row rescaled to the norm of a Gaussian vector: every row is N(0, I).  The
# backends emit ORF_NUMPY_EXPR verbatim, so the generated code rebuilds exactly
# these numbers from the seed (tests/test_families_attention_conv.py checks it).
ORF_NUMPY_EXPR = ("(lambda r: np.concatenate([(lambda qr: (qr[0] * np.sign(np.diag(qr[1]))).T)"
                  "(np.linalg.qr(r.standard_normal(({d}, {d})))) for _ in range({blocks})])[:{m}] "
                  "* np.linalg.norm(r.standard_normal(({m}, {d})), axis=1)[:, None])(np.random.default_rng({seed}))")


def orthogonal_features(m: int, d: int, seed: int) -> np.ndarray:
    """The [m, d] FAVOR+ feature matrix drawn from `seed` (float64)."""
    r = np.random.default_rng(int(seed))
    blocks = -(-int(m) // int(d))
    rows = []
    for _ in range(blocks):   # Q R of a Gaussian matrix, signs fixed by diag(R): Q is Haar-distributed
        q, rr = np.linalg.qr(r.standard_normal((int(d), int(d))))
        rows.append((q * np.sign(np.diag(rr))).T)
    w = np.concatenate(rows)[:int(m)]
    return w * np.linalg.norm(r.standard_normal((int(m), int(d))), axis=1)[:, None]


def orf_expr(m, d, seed) -> str:
    """ORF_NUMPY_EXPR for concrete sizes (what the backends emit)."""
    return ORF_NUMPY_EXPR.format(m=int(m), d=int(d), seed=int(seed), blocks=-(-int(m) // int(d)))


Prim("max", _reduce_shape, lambda x, axis, keepdims=False: x.max(axis=axis, keepdims=keepdims),
     "maximum over an axis")
Prim("tril", lambda g, ts, a: ts[0].shape, _tril_np,
     "keep entries on and below diagonal k of the last two axes, set the others to `fill`")
Prim("flip", lambda g, ts, a: ts[0].shape, lambda x, axis: np.flip(x, axis=axis), "reverse one axis")
Prim("shift", lambda g, ts, a: ts[0].shape, lambda x, c: x + np.asarray(c, x.dtype), "add a constant")
Prim("tri", lambda g, ts, a: (a["n"], a["m"]), lambda n, m, k, dtype: np.tri(int(n), int(m), int(k), dtype=dtype),
     "[n, m] matrix of ones on and below diagonal k (numpy.tri)", dtype=lambda d, a: a["dtype"])
Prim("orf", lambda g, ts, a: (a["m"], a["d"]),
     lambda m, d, seed, dtype: orthogonal_features(m, d, seed).astype(dtype),
     "FAVOR+ orthogonal random features [m, d], rebuilt from a seed", dtype=lambda d, a: a["dtype"])


def letters(k: int, skip: str = "") -> str:
    """k distinct einsum letters, avoiding `skip`."""
    return "".join(c for c in string.ascii_letters if c not in skip)[:k]


# ---- linear algebra: solves, factorizations, diagonals (opdsl/kinds/linalg.py, docs/linalg.md) ----
# Backends report a singular matrix at run time (the generated module's SingularError) where they can.

def _solve_shape(g, ts, attrs):
    return broadcast(ts[0].shape[:-2], ts[1].shape[:-2]) + tuple(ts[1].shape[-2:])


def _cho_solve_np(l, b):
    y = np.linalg.solve(l, b)
    return np.linalg.solve(np.swapaxes(l, -1, -2), y)


def _no_np(name):
    def fn(*args, **attrs):
        raise NotImplementedError(f"primitive {name!r} has no numpy meaning outside generated code")
    return fn


Prim("solve", _solve_shape, np.linalg.solve,
     "x with A x = B (LU with partial pivoting), broadcast over batch dims; a singular A is an error")
Prim("cholesky", lambda g, ts, a: ts[0].shape, np.linalg.cholesky,
     "the lower Cholesky factor L of a positive definite A = L Lᵀ; an indefinite A is an error")
Prim("cho_solve", _solve_shape, _cho_solve_np, "x with L Lᵀ x = B for L from cholesky")
Prim("checked", lambda g, ts, a: ts[0].shape, lambda x: x,
     "x itself; an error when x has inf or nan entries (after a triangular solve with a singular factor)")
Prim("slogdet", lambda g, ts, a: ts[0].shape[:-2], lambda x: np.linalg.slogdet(x)[1],
     "log |det A| over the last two axes")
Prim("diagonal", lambda g, ts, a: ts[0].shape[:-1], lambda x: np.diagonal(x, axis1=-2, axis2=-1).copy(),
     "the diagonal of the last two (equal) axes")
Prim("fill", lambda g, ts, a: a["shape"],
     lambda shape, value, dtype: np.full([int(s) for s in shape], float(value), dtype=dtype),
     "a constant tensor; `value` is a number or a dim expression", dtype=lambda d, a: a["dtype"])
Prim("cg", lambda g, ts, a: ts[0].shape, _no_np("cg"),
     "conjugate gradients: x with A x = B for the symmetric positive definite A that the `body` "
     "primitive graph applies (operands: B, then the inverse diagonal with precond=jacobi, then the "
     "values the body captures); stops at relative residual `tol` or after `maxiter` steps")

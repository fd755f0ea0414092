"""The primitive set: what lowering produces and what a backend implements.

Every fact about a primitive is on its `Prim`, and the compiler and the backends read it there
(``PRIMS[name].singular``, ...) instead of keeping lists of names of their own:

- ``infer``, ``dtype``: its shape rule and result dtype;
- ``np``: its numpy meaning, which the primitive interpreter (opdsl/interpret.py) evaluates and
  every backend's emit entry is tested against (tests/test_primitives.py);
- ``promote``: lowering casts its operands to one real dtype first (passes/lower.py);
- ``view``: its result holds no new data, so the cost model does not count it as an
  intermediate (opdsl/cost.py);
- ``runtime``: the helper groups its generated Python code may call (backends/pyruntime.py adds
  the code of those a module uses; a backend whose code calls none loses nothing by it);
- ``eager``: it needs values on the host while it runs (a loop with a stopping test): JAX runs
  an export using it op by op instead of under jax.jit;
- ``singular``: it may meet a singular matrix, which shows as a non-finite result that the
  entry point reports as the module's SingularError (JAX, TVM: nothing can raise in a kernel).

The set is closed: backends (``opdsl.backends``) hold one emit entry per primitive and nothing
about operator kinds, and a new family lowers to these primitives.  A new primitive is for a new
capability of the backends, not for a new family: a family's precomputed data (FAVOR+'s random
features) is a `const`, a numpy expression evaluated once.

Shapes are tuples of sympy expressions over the program's dims.
"""
from __future__ import annotations

import functools
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
    promote: bool = False           # operands cast to one real dtype by lowering
    view: bool = False              # holds no new data (a view, or the caller's argument)
    runtime: tuple | Callable = ()  # helper groups its code may call; or attrs -> such a tuple
    eager: bool | Callable = False  # needs host values while it runs (JAX: the export runs op by op); or attrs -> bool
    singular: bool = False          # a singular matrix gives a non-finite result: SingularError

    def __post_init__(self):
        PRIMS[self.name] = self

    def is_eager(self, attrs) -> bool:
        """Whether a node with these attrs needs host values while it runs."""
        return self.eager(attrs) if callable(self.eager) else self.eager

    def helpers(self, attrs) -> tuple:
        """The runtime helper groups the code of a node with these attrs may call."""
        return self.runtime(attrs) if callable(self.runtime) else self.runtime

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

    def as_written(self, g, v) -> bool:
        """Primitives are rewritten freely (the Kind hook of the same name, for the rewrite driver)."""
        return False


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


def _declared(dts, attrs):
    return attrs["dtype"]


def _same(g, ts, attrs):
    return ts[0].shape


def _broadcast2(g, ts, attrs):
    return broadcast(ts[0].shape, ts[1].shape)


UNARY = {
    "neg": np.negative, "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "recip": np.reciprocal,
    "relu": lambda x: np.maximum(x, 0), "abs": np.abs, "square": np.square,
    "elu1": lambda x: np.where(x >= 0, x + 1, np.exp(np.minimum(x, 0))),
}


# ---- constants and arguments ---------------------------------------------------------------------

Prim("arg", lambda g, ts, a: a["shape"], lambda **a: None, "a function argument (the caller's data)",
     dtype=_declared, view=True)
Prim("eye", lambda g, ts, a: (a["n"], a["n"]), lambda n, dtype: np.eye(int(n), dtype=dtype),
     "identity matrix", dtype=_declared)
Prim("zeros", lambda g, ts, a: a["shape"], lambda shape, dtype: np.zeros([int(s) for s in shape], dtype),
     "zeros", dtype=_declared)
Prim("fill", lambda g, ts, a: a["shape"],
     lambda shape, value, dtype: np.full([int(s) for s in shape], float(value), dtype=dtype),
     "a constant tensor; `value` is a number or a dim expression", dtype=_declared)
Prim("tri", lambda g, ts, a: (a["n"], a["m"]), lambda n, m, k, dtype: np.tri(int(n), int(m), int(k), dtype=dtype),
     "[n, m] matrix of ones on and below diagonal k (numpy.tri)", dtype=_declared)


@functools.lru_cache(maxsize=8)
def const_value(expr: str) -> np.ndarray:
    """The value of a `const` primitive: numpy expression `expr` (numpy as `np`), evaluated once.

    The expressions are the compiler's own (a kind writes them at lowering, e.g. FAVOR+'s
    features), never the user's text; read-only, since every node with this expr shares it."""
    value = np.array(eval(expr, {"__builtins__": {}, "np": np, "range": range}))  # noqa: S307
    value.flags.writeable = False
    return value


Prim("const", lambda g, ts, a: const_value(a["expr"]).shape,
     lambda expr, dtype, name: const_value(expr).astype(dtype),
     "an array computed at compile time: numpy expression `expr` (numpy as `np`), deterministic, "
     "evaluated when the node is made (its shape is the value's); the Python backends define it once "
     "per module, as `_<name>` (one name, one expr), TVM passes its value to the kernel",
     dtype=_declared)

# ---- views and data movement ---------------------------------------------------------------------

Prim("reshape", lambda g, ts, a: a["shape"], lambda x, shape: x.reshape([int(s) for s in shape]),
     "reshape (row-major), no copy when contiguous", view=True)
Prim("permute", lambda g, ts, a: tuple(ts[0].shape[i] for i in a["perm"]),
     lambda x, perm: np.transpose(x, perm), "axis permutation")
Prim("swap", lambda g, ts, a: ts[0].shape[:-2] + (ts[0].shape[-1], ts[0].shape[-2]),
     lambda x: np.swapaxes(x, -1, -2), "transpose of the last two axes (a view)", view=True)
Prim("concat", _concat_shape, lambda *xs, axis: np.concatenate(xs, axis=axis), "concatenate", promote=True)
Prim("slice", _slice_shape, _slice_np, "contiguous slice along one axis")
Prim("flip", _same, lambda x, axis: np.flip(x, axis=axis), "reverse one axis")
Prim("diagonal", lambda g, ts, a: ts[0].shape[:-1], lambda x: np.diagonal(x, axis1=-2, axis2=-1).copy(),
     "the diagonal of the last two (equal) axes")
Prim("cast", _same, lambda x, dtype: x.astype(dtype), "dtype conversion", dtype=_declared)

# ---- elementwise ---------------------------------------------------------------------------------

Prim("add", _broadcast2, np.add, "broadcast add", promote=True)
Prim("sub", _broadcast2, np.subtract, "broadcast subtract", promote=True)
Prim("mul", _broadcast2, np.multiply, "broadcast multiply", promote=True)
Prim("div", _broadcast2, np.divide, "broadcast divide", promote=True)
Prim("scale", _same, lambda x, c: x * np.asarray(c, x.dtype), "multiply by a constant")
Prim("shift", _same, lambda x, c: x + np.asarray(c, x.dtype), "add a constant")
def _unary_dtype(dts, attrs):
    """The operand's dtype; abs of a complex value is real."""
    dt = dts[0]
    if attrs["fn"] == "abs" and dt.startswith("complex"):
        return "float64" if dt == "complex128" else "float32"
    return dt


Prim("unary", _same, lambda x, fn: UNARY[fn](x), "elementwise function `fn` (UNARY; abs of a complex value: its "
     "modulus, real)", dtype=_unary_dtype)


def _tril_np(x, k=0, fill=0.0):
    r, c = x.shape[-2], x.shape[-1]
    return np.where(np.tri(r, c, int(k), dtype=bool), x, np.asarray(fill, x.dtype))


Prim("tril", _same, _tril_np,
     "keep entries on and below diagonal k of the last two axes, set the others to `fill`")

# ---- contractions, reductions, scans, FFT --------------------------------------------------------

Prim("matmul", _matmul_shape, np.matmul, "batched matrix product with broadcasting", promote=True)
Prim("einsum", _einsum_shape, _np_einsum, "two-operand contraction", promote=True)
Prim("sum", _reduce_shape, lambda x, axis, keepdims=False: x.sum(axis=axis, keepdims=keepdims), "sum over an axis")
Prim("max", _reduce_shape, lambda x, axis, keepdims=False: x.max(axis=axis, keepdims=keepdims),
     "maximum over an axis")
Prim("cumsum", _same, lambda x, axis: np.cumsum(x, axis=axis), "inclusive prefix sum")
Prim("rfft", _fft_shape(True), lambda x, n: np.fft.rfft(x, n=int(n), axis=-1), "real FFT, last axis",
     dtype=_complex)
Prim("irfft", _fft_shape(False), lambda x, n: np.fft.irfft(x, n=int(n), axis=-1), "inverse real FFT, last axis",
     dtype=_real)


def _fftn_shape(half):
    def rule(g, ts, attrs):
        s, d = list(ts[0].shape), len(attrs["s"])
        s[-d:] = list(attrs["s"])
        if half:
            s[-1] = attrs["s"][-1] // 2 + 1
        return tuple(s)
    return rule


def _axes(s):
    return tuple(range(-len(s), 0))


Prim("rfftn", _fftn_shape(True), lambda x, s: np.fft.rfftn(x, s=[int(v) for v in s], axes=_axes(s)),
     "real N-d FFT over the last len(s) axes, zero-padded (or cut) to the sizes s", dtype=_complex)
Prim("irfftn", _fftn_shape(False), lambda x, s: np.fft.irfftn(x, s=[int(v) for v in s], axes=_axes(s)),
     "inverse real N-d FFT over the last len(s) axes, to the real sizes s", dtype=_real)
Prim("complex", lambda g, ts, a: ts[0].shape[:-1],
     lambda x, conj=False: x[..., 0] + (-1j if conj else 1j) * x[..., 1],
     "x[..., 0] + i·x[..., 1] (conj: − i·x[..., 1]) of a real tensor whose last axis (size 2) holds real and "
     "imaginary parts: complex weights (torch: a view, torch.view_as_complex)", dtype=_complex)


# ---- matrix functions (kinds/matfun.py) -----------------------------------------------------------
# helper groups "eigh" (_eigh) and "expm" (_expm, numpy's scaling and squaring)

def _eigh_np(a):
    w, v = np.linalg.eigh(a)
    return np.concatenate([w[..., None, :], v], axis=-2)


Prim("eigh", lambda g, ts, a: ts[0].shape[:-2] + (ts[0].shape[-2] + 1, ts[0].shape[-1]), _eigh_np,
     "eigendecomposition of a symmetric matrix [..., n, n] (its lower triangle is read), in one array "
     "[..., n + 1, n]: row 0 the eigenvalues in ascending order (numpy.linalg.eigh's), rows 1.. the "
     "matrix whose columns are the eigenvectors (a primitive has one result; slices take them apart)",
     runtime=("eigh",))


def _expm_np(a):
    import scipy.linalg
    return scipy.linalg.expm(a)


Prim("expm", _same, _expm_np, "the matrix exponential of a square matrix (scaling and squaring)",
     runtime=("expm",))


def _newton_np(a, root, eps, tol, maxiter):
    """The coupled Newton iteration for a^(−1/root) (Distributed Shampoo's), as the generated helpers
    run it (backends/pyruntime.py NEWTON_RUNTIME)."""
    ident = np.eye(a.shape[-1], dtype=a.dtype)
    alpha = -1.0 / root
    a = a + eps * ident
    z = (root + 1) / (2 * np.sqrt((a * a).sum(-1).sum(-1))[..., None, None])
    x, m = z ** (1.0 / root) * ident, z * a
    for _ in range(int(maxiter)):
        if np.abs(m - ident).max() <= tol:
            break
        mp = alpha * m + (1 - alpha) * ident
        x = x @ mp
        m = np.linalg.matrix_power(mp, int(root)) @ m
    return x


Prim("invroot_newton", _same, _newton_np,
     "A^(−1/root) of a symmetric positive definite A [..., n, n] by the coupled Newton iteration "
     "(matrix products only; A + eps I first): stops when max |M − I| <= tol or after maxiter steps, and "
     "reports the steps and the error like cg", runtime=("newton",))


# ---- kernel operators (kinds/kernel.py) -----------------------------------------------------------

def _kernel_apply_np(x, y, v, ls, s, family, tile):
    from .kinds.kernel import kernel_np, sqdist_np
    return s * (kernel_np(family, sqdist_np(x / ls, y / ls)) @ v)


Prim("kernel_apply", lambda g, ts, a: (ts[0].shape[0], ts[2].shape[-1]), _kernel_apply_np,
     "K(X, Y) V for the kernel `family` (kinds/kernel.py) with lengthscale ls [d] or [1] and outputscale "
     "s [1], evaluated in tiles of `tile` rows of X (never the n x m matrix) with a backward that "
     "recomputes each tile; X [n, d], Y [m, d], V [m, k] -> [n, k]", promote=True, runtime=("kernel",))


def _kernel_matrix_np(x, y, ls, s, family, tile):
    from .kinds.kernel import kernel_np, sqdist_np
    return s * kernel_np(family, sqdist_np(x / ls, y / ls))


Prim("kernel_matrix", lambda g, ts, a: (ts[0].shape[0], ts[1].shape[0]), _kernel_matrix_np,
     "the matrix s K(X, Y) [n, m] of the kernel `family` (kinds/kernel.py), lengthscale ls [d] or [1], "
     "outputscale s [1]: written tile by tile (`tile` rows of X) into one result, with a backward that "
     "recomputes each tile, so that only the matrix and its gradient are held, never the temporaries of "
     "the kernel's formula", promote=True, runtime=("kernel",))


# ---- a sequential scan: the chunk recurrence of the delta rule (kinds/delta_attention.py) ---------

def _linrec_shape(g, ts, attrs):
    return broadcast(ts[0].shape[:-3], ts[1].shape[:-3]) + tuple(ts[1].shape[-3:])


def _linrec_np(p, h):
    """[S_0, ..., S_{n-1}] on axis -3 for S_0 = 0, S_{c+1} = P_c S_c + H_c (P [..., n, f, f], H [..., n, f, k])."""
    batch = np.broadcast_shapes(p.shape[:-3], h.shape[:-3])
    out = np.zeros(batch + h.shape[-3:], np.result_type(p, h))
    s = out[..., 0, :, :].copy()
    for c in range(h.shape[-3] - 1):
        s = p[..., c, :, :] @ s + h[..., c, :, :]
        out[..., c + 1, :, :] = s
    return out


Prim("linrec", _linrec_shape, _linrec_np,
     "the states entering each step of the linear recurrence S_0 = 0, S_{c+1} = P_c S_c + H_c over "
     "axis -3 (P [..., n, f, f], H [..., n, f, k] -> [..., n, f, k]): a loop over the n steps, each a "
     "batched matrix product; what a chunked recurrence whose state feeds back into its input needs",
     promote=True, runtime=("linrec",))


# ---- linear algebra: solves, factorizations, determinants (opdsl/kinds/linalg.py, docs/linalg.md) ----
# Backends report a singular matrix at run time (the generated module's SingularError) where they can:
# helper group "linalg" (_linalg, _finite); "batched": the batch dims of a matrix and a right-hand
# side broadcast to each other first (JAX's lax.linalg needs it).

def _solve_shape(g, ts, attrs):
    return broadcast(ts[0].shape[:-2], ts[1].shape[:-2]) + tuple(ts[1].shape[-2:])


def _solve_triangular_np(a, b, upper=True, checked=False, unit=False):
    """Solve triu(a) x = b (tril when upper=False); the other triangle of a is ignored.  checked:
    a singular factor is an error (numpy's is one either way).  unit: the diagonal is taken as ones."""
    n = a.shape[-1]
    t = (np.triu(a, 1) if upper else np.tril(a, -1)) + np.eye(n) if unit else (np.triu(a) if upper else np.tril(a))
    return np.linalg.solve(t, b)


def _cho_solve_np(l, b):
    y = np.linalg.solve(l, b)
    return np.linalg.solve(np.swapaxes(l, -1, -2), y)


Prim("solve_triangular", _solve_shape, _solve_triangular_np,
     "x with triu(A) x = B (tril(A) when upper=False), broadcast over batch dims; only the named "
     "triangle of A is read (unit=True: not its diagonal, taken as ones); checked=True: a singular A is "
     "an error (its numpy code calls _linalg)",
     promote=True, runtime=lambda a: ("linalg", "batched") if a.get("checked") else ("batched",))
Prim("solve", _solve_shape, np.linalg.solve,
     "x with A x = B (LU with partial pivoting), broadcast over batch dims; a singular A is an error",
     promote=True, runtime=("linalg",), singular=True)
Prim("cholesky", _same, np.linalg.cholesky,
     "the lower Cholesky factor L of a positive definite A = L Lᵀ; an indefinite A is an error",
     runtime=("linalg",), singular=True)
Prim("cho_solve", _solve_shape, _cho_solve_np, "x with L Lᵀ x = B for L from cholesky",
     promote=True, runtime=("linalg", "batched"), singular=True)
Prim("checked", _same, lambda x: x,
     "x itself; an error when x has inf or nan entries (after a triangular solve with a singular factor)",
     runtime=("linalg",), singular=True)
Prim("slogdet", lambda g, ts, a: ts[0].shape[:-2], lambda x: np.linalg.slogdet(x)[1],
     "log |det A| over the last two axes")


# operands of cg between B and the captured values, by preconditioner: jacobi the inverse
# diagonal [n, 1]; pivchol that of D and U [n, r], (L Lᵀ + D)⁻¹ = D⁻¹ − U Uᵀ (kinds/linalg_cg.py)
CG_PRECOND_OPERANDS = {"none": 0, "jacobi": 1, "pivchol": 2}


def _cg_np(b, *rest, body, tol, maxiter, precond="none"):
    """Preconditioned conjugate gradients for each column of b; `body` is A @ p as a function of p
    (the interpreter evaluates the loop body with the captured values, after the preconditioner's)."""
    minv = rest[0] if precond != "none" else None
    low = rest[1] if precond == "pivchol" else None

    def m_inv(r):
        return r if minv is None else minv * r - (0 if low is None else low @ (low.T @ r))

    def dot(u, v):
        return (u * v).sum(-2)[..., None, :]

    x = np.zeros_like(b)
    r = b
    z = m_inv(r)
    p, rz = z, dot(r, z)
    bb = np.sqrt(dot(b, b))
    bb = bb + (bb == 0)
    for _ in range(int(maxiter)):
        if np.max(np.sqrt(dot(r, r)) / bb) <= tol:
            break
        ap = body(p)
        pap = dot(p, ap)
        alpha = rz / (pap + (pap == 0))
        x, r = x + alpha * p, r - alpha * ap
        z = m_inv(r)
        rz_next = dot(r, z)
        p, rz = z + rz_next / (rz + (rz == 0)) * p, rz_next
    return x


def _slq_np(z, *rest, body, steps, tol=None, maxiter=None, precond="none"):
    """Stochastic Lanczos quadrature: mean over the columns z_i of z of |z_i|² e₁ᵀ log(T_i) e₁."""
    norm = np.sqrt((z * z).sum(0))
    q, q_prev, beta = z / norm, np.zeros_like(z), np.zeros(z.shape[1])
    alphas, betas = [], []
    for k in range(int(steps)):
        w = body(q)
        alpha = (q * w).sum(0)
        w = w - alpha * q - beta * q_prev
        beta = np.sqrt((w * w).sum(0))
        alphas.append(alpha)
        betas.append(beta)
        q_prev, q = q, w / (beta + (beta == 0))
    m = len(alphas)
    t = np.zeros((z.shape[1], m, m))
    for k in range(m):
        t[:, k, k] = alphas[k]
        if k + 1 < m:
            t[:, k, k + 1] = t[:, k + 1, k] = betas[k]
    w, u = np.linalg.eigh(t)
    return np.mean(norm ** 2 * (u[:, 0, :] ** 2 * np.log(np.maximum(w, np.finfo(w.dtype).tiny))).sum(-1))


Prim("slq", lambda g, ts, a: (), _slq_np,
     "log det A by stochastic Lanczos quadrature: `steps` Lanczos steps of the symmetric positive definite A "
     "that the `body` primitive graph applies, from each column of the probe matrix (operands: the probes, "
     "then with precond=pivchol the preconditioner of its gradient's solves as cg's, then the values the "
     "body captures); a scalar.  `tol` and `maxiter`: the conjugate-gradient solves "
     "A⁻¹ zᵢ of its gradient (the estimator tr(A⁻¹ ∂A) ≈ mean zᵢᵀ A⁻¹ ∂A zᵢ, on backends with autograd)",
     runtime=("slq", "cg"))


def _pivchol_np(diag, *rest, body, rank):
    """The rank-r pivoted Cholesky factor L [n, r] of the PSD S that `body` applies to a column
    (S e_j = its column j) with diagonal diag: greedy pivots on the largest remaining diagonal."""
    n = diag.shape[0]
    d = np.array(diag, dtype=np.float64)
    cols = []
    for _ in range(int(rank)):
        j = int(np.argmax(d))
        e = np.zeros((n, 1), diag.dtype)
        e[j] = 1
        col = np.asarray(body(e))[:, 0].astype(np.float64)
        if cols:
            lk = np.stack(cols, -1)
            col = col - lk @ lk[j]
        piv = d[j]
        l = col / np.sqrt(piv) if piv > PIVCHOL_FLOOR * max(diag.max(), 0) else np.zeros(n)
        cols.append(l)
        d = d - l * l
        d[j] = 0
    return np.stack(cols, -1).astype(diag.dtype)


PIVCHOL_FLOOR = 1e-6   # a pivot below this fraction of the largest diagonal entry ends the factor (zero columns)

Prim("pivchol", lambda g, ts, a: (ts[0].shape[0], int(a["rank"])), _pivchol_np,
     "the rank-`rank` pivoted Cholesky factor L [n, r] of a positive semidefinite S (S ≈ L Lᵀ): operands "
     "its diagonal [n], then the values the `body` primitive graph captures; body applies S to a column "
     "(S e_j is column j); greedy pivots on the largest remaining diagonal entry (GPyTorch's "
     "preconditioner); a pivot below 1e-6 of the largest diagonal entry gives a zero column (so do the "
     "columns past n)",
     runtime=("pivchol",))      # not eager: its pivots are argmaxes and one-hot columns, traceable by JAX


def _tridiag_dense(lower, main, upper):
    from .kinds.tridiag import tridiag_np
    return tridiag_np(lower, main, upper)


Prim("tridiag_solve", lambda g, ts, a: ts[3].shape,
     lambda lower, main, upper, b: np.linalg.solve(_tridiag_dense(lower, main, upper), b),
     "x with T x = B for the tridiagonal T (lower [n − 1], main [n], upper [n − 1]), B [n, k]: O(n k), "
     "no pivoting (numpy and torch: cyclic reduction; JAX: lax.linalg.tridiagonal_solve)",
     promote=True, runtime=("tridiag",))
Prim("tridiag_logdet", lambda g, ts, a: (),
     lambda lower, main, upper: np.linalg.slogdet(_tridiag_dense(lower, main, upper))[1],
     "log |det T| of the tridiagonal T (lower [n − 1], main [n], upper [n − 1]) by cyclic reduction's "
     "pivots: O(n), no pivoting", promote=True, runtime=("tridiag",))


Prim("cg", _same, _cg_np,
     "conjugate gradients: x with A x = B for the symmetric positive definite A that the `body` "
     "primitive graph applies (operands: B, then the preconditioner's — jacobi: the inverse diagonal "
     "[n, 1]; pivchol: that of D and U [n, r], applying D⁻¹ − U Uᵀ — then the values the body captures); "
     "stops at relative residual `tol` or after `maxiter` steps",
     runtime=("cg",), eager=True)


# sparse matrices and integer indices: their own file, registered into PRIMS here
from . import primitives_sparse  # noqa: E402,F401  # import cycle: it defines its primitives with Prim, above

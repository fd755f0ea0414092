"""Kernel operators for Gaussian processes: `kernel(X, Y, FAMILY, lengthscale=ℓ, outputscale=s)`.

The operator [n, m] with entries s · k(r_ij), r_ij = ‖(x_i − y_j) / ℓ‖, for X [n, d] and Y [m, d]
(GPyTorch's conventions, r the scaled distance):

    rbf        exp(−r²/2)
    matern12   exp(−r)
    matern32   (1 + √3 r) exp(−√3 r)
    matern52   (1 + √5 r + 5r²/3) exp(−√5 r)

ℓ is a number or a tensor [d] (ARD) or [1]; s a number or a tensor [1]; either may be a `param`.
`kernel(X, X, ...)` is symmetric and positive semidefinite, so `kernel(X, X, rbf) + c * eye(n)`
with c > 0 is positive definite and `inv` of it is a Cholesky solve (or CG: `inv(K, method=cg)`).

Applied to V [m, k] it never forms the n x m matrix: the `kernel_apply` primitive evaluates the
kernel in row tiles of X (TILE rows at a time: O((n + m)(d + k) + TILE·m) memory), with a backward
that recomputes each tile (torch: a custom autograd function; JAX: a checkpointed lax.map), the
way KeOps does.  Where the matrix is needed (a Cholesky factorization, `dense(K)`, CG while
the matrix fits: linalg_cg.loop_matrices), the `kernel_matrix` primitive writes it in the same
tiles, and its backward recomputes them.  Conventions and a dense example: docs/kernels.md.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ShapeError, TypeError_
from .base import Kind, OpType, join_dtype, register, sym_prod, tensor_of_rank

FAMILIES = ("rbf", "matern12", "matern32", "matern52")
TILE = 1024          # rows of X per tile of kernel_apply: TILE x m kernel values live at a time
# r = sqrt(max(r², R2_FLOOR)): the Matérn kernels' derivative in r² is singular at 0 (a point
# against itself); the floor keeps it finite, and changes k by about 1e-15
R2_FLOOR = 1e-30


def kernel_np(family, r2):
    """k as a function of the squared scaled distance r² (numpy, float64)."""
    r2 = np.maximum(r2, 0.0)
    if family == "rbf":
        return np.exp(-0.5 * r2)
    r = np.sqrt(np.maximum(r2, R2_FLOOR))
    if family == "matern12":
        return np.exp(-r)
    if family == "matern32":
        return (1 + math.sqrt(3) * r) * np.exp(-math.sqrt(3) * r)
    return (1 + math.sqrt(5) * r + 5.0 / 3.0 * r2) * np.exp(-math.sqrt(5) * r)


def sqdist_np(x, y):
    """‖x_i − y_j‖² for x [n, d], y [m, d], computed as differences (exact at r = 0)."""
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)


@register
class Kernel(Kind):
    """`kernel(X, Y, FAMILY, lengthscale=ℓ, outputscale=s)` (see the module doc)."""

    name = "kernel"
    constructors = ("kernel",)
    params = ("X", "Y", "family")
    options = ("lengthscale", "outputscale")
    examples = (
        "dim n = 7\ninput X : [n, 2]\ninput v : [n, 3]\n"
        "export y = kernel(X, X, rbf) @ v\nexport z = kernel(X, X, matern12, lengthscale=0.7) @ v",
        "input X : [6, 3]\ninput Y : [4, 3]\ninput l : [3]\ninput s : [1]\ninput v : [4, 2]\n"
        "export y = kernel(X, Y, matern32, lengthscale=l, outputscale=s) @ v\n"
        "export z = kernel(X, Y, matern52, outputscale=2.5) @ v",
        "dim n = 8\ninput X : [n, 2]\ninput b : [n, 1]\n"
        "export y = inv(kernel(X, X, rbf, lengthscale=0.5) + 0.1 * eye(n)) @ b\n"
        "export z = logdet(kernel(X, X, matern52) + 0.5 * eye(n))\nexport w = dense(kernel(X, X, rbf))",
        "dim n = 6\ninput X : [n, 2]\ninput x : [n, 2]\nexport y = kernel(X, X, rbf).T @ x\n"
        "export z = diag_of(kernel(X, X, matern32, outputscale=3))",
    )

    def sample(self, n, tag):
        return f"input KX{tag} : [{n}, 2]", f"kernel(KX{tag}, KX{tag}, matern32)"

    def construct(self, b, args, kwargs, span):
        b.arity(self, args, span, 3, 3)
        for key, val in kwargs.items():
            if key not in self.options:
                raise TypeError_(f"kernel(...) has no option {key!r}", val.span,
                                 hint="options: lengthscale, outputscale")
        x = b.tensor(args[0], (2,), "kernel's X")
        y = b.tensor(args[1], (2,), "kernel's Y")
        attrs = {"family": b.word(args[2], FAMILIES, "kernel family"), "lengthscale": 1.0, "outputscale": 1.0,
                 "tensors": ()}        # the scales given as tensors: operands 2, 3 in this order
        ops = [x, y]
        for key in ("lengthscale", "outputscale"):
            if key not in kwargs:
                continue
            val = kwargs[key]
            if val.tag in ("num", "dim"):
                c = float(b.num(val))
                if not (c > 0 and math.isfinite(c)):
                    raise TypeError_(f"{key} must be a positive number, got {c:g}", val.span)
                attrs[key] = c
            else:
                ops.append(b.tensor(val, (1,), f"kernel's {key}"))
                attrs[key] = None
                attrs["tensors"] += (key,)
        return b.add(self.name, ops, attrs, span=span)

    def infer(self, g, ops, attrs, span):
        x = tensor_of_rank(g, ops[0], (2,), span, "kernel's X")
        y = tensor_of_rank(g, ops[1], (2,), span, "kernel's Y")
        if not g.dims.equal(x.shape[1], y.shape[1]):
            raise ShapeError(f"kernel(X, Y) needs points of one dimension d: X {x} and Y {y}", span,
                             hint="X is [n, d] and Y is [m, d]")
        dtypes = [x.dtype, y.dtype]
        allowed = {"lengthscale": (x.shape[1], 1), "outputscale": (1,)}
        for key, o in zip(attrs["tensors"], ops[2:]):
            t, what = g.type(o), allowed[key]
            if not any(g.dims.equal(t.shape[0], w) for w in what):
                raise ShapeError(f"kernel's {key} must be [{' or '.join(str(w) for w in what)}], got {t}", span,
                                 hint="lengthscale is a number, [d] (one per input dimension) or [1]")
            dtypes.append(t.dtype)
        props = frozenset({"symmetric", "psd"}) if ops[0] == ops[1] else frozenset()
        return OpType(x.shape[0], y.shape[0], (), join_dtype(*dtypes), props)

    # ---- meaning -----------------------------------------------------------------------
    @staticmethod
    def scales(n, vals_or_ops):
        """(lengthscale, outputscale): each a number (attrs) or the operand (value) given for it."""
        given = dict(zip(n.attrs["tensors"], vals_or_ops[2:]))
        return tuple(given.get(key, n.attrs[key]) for key in ("lengthscale", "outputscale"))

    def dense(self, g, v, vals):
        n = g[v]
        ls, os = self.scales(n, vals)
        return os * kernel_np(n.attrs["family"], sqdist_np(vals[0] / ls, vals[1] / ls))

    def flops(self, g, v, k):
        n = g[v]
        t = g.type(v)
        d = g.type(n.operands[0]).shape[1]
        return t.rows * t.cols * (3 * d + 10 + 2 * k)

    def transpose(self, g, v):                # k(x_i, y_j) = k(y_j, x_i)
        n = g[v]
        return g.add(self.name, [n.operands[1], n.operands[0], *n.operands[2:]], n.attrs, span=n.span)

    def psd_through(self, g, v):
        return g[v].operands[0] == g[v].operands[1]

    def operand_domains(self, g, v):
        """Lengthscales and outputscales given as tensors are positive (reference.DOMAINS)."""
        return {2 + i: "positive" for i in range(len(g[v].attrs["tensors"]))}

    # ---- lowering ----------------------------------------------------------------------
    def _inputs(self, lw, v, dtype):
        n = lw.src[v]
        ls, os = self.scales(n, [lw.tensor(o) for o in n.operands])
        x, y = (lw.tensor(o) for o in n.operands[:2])
        ls = ls if not isinstance(ls, float) else lw.prim("fill", shape=(1,), value=ls, dtype=dtype)
        os = os if not isinstance(os, float) else lw.prim("fill", shape=(1,), value=os, dtype=dtype)
        return [x if lw.dtype(x) == dtype else lw.prim("cast", x, dtype=dtype),
                y if lw.dtype(y) == dtype else lw.prim("cast", y, dtype=dtype),
                ls if lw.dtype(ls) == dtype else lw.prim("cast", ls, dtype=dtype),
                os if lw.dtype(os) == dtype else lw.prim("cast", os, dtype=dtype)]

    def lower(self, lw, v, x):
        dtype = lw.dtype(x) if lw.dtype(x) in ("float32", "float64") else "float32"
        xs, ys, ls, os = self._inputs(lw, v, dtype)
        out_dtype = lw.dtype(x)
        if out_dtype != dtype:
            x = lw.prim("cast", x, dtype=dtype)
        s = lw.shape(x)
        if len(s) > 2:            # batch dims of x: folded into the columns, [m, b·k]
            x = lw.reshape(lw.permute(x, (len(s) - 2,) + tuple(range(len(s) - 2)) + (len(s) - 1,)),
                           (s[-2], sym_prod(s[:-2]) * s[-1]))
        y = lw.prim("kernel_apply", xs, ys, x, ls, os, family=lw.src[v].attrs["family"], tile=TILE)
        if len(s) > 2:
            rows = lw.shape(y)[0]
            y = lw.reshape(y, (rows,) + tuple(s[:-2]) + (s[-1],))
            y = lw.permute(y, tuple(range(1, len(s) - 1)) + (0, len(s) - 1))
        return y if out_dtype == dtype else lw.prim("cast", y, dtype=out_dtype)

    def matrix(self, lw, v, dtype):
        """The n x m matrix (a Cholesky factorization, or CG while it fits: linalg_cg.loop_matrices),
        one `kernel_matrix` primitive: written in tiles, and its backward recomputes them."""
        xs, ys, ls, os = self._inputs(lw, v, dtype)
        return lw.prim("kernel_matrix", xs, ys, ls, os, family=lw.src[v].attrs["family"], tile=TILE)

    def matrix_flops(self, g, v):
        t = g.type(v)
        return t.rows * t.cols * (3 * g.type(g[v].operands[0]).shape[1] + 12)

    def leaf_diagonal(self, lw, v):           # k(0) = 1: the outputscale on the diagonal
        n = lw.src[v]
        if n.operands[0] != n.operands[1]:
            return None
        _, _, _, os = self._inputs(lw, v, lw.src.type(v).dtype or "float32")
        return lw.mul(lw.prim("fill", shape=(lw.src.type(v).rows,), value=1.0, dtype=lw.dtype(os)), os)


"""eigvals(A) and eigvecs(A): tensors of the eigendecomposition of a symmetric operator (docs/matfun.md).

eigvals(A) is [..., n], ascending (numpy.linalg.eigh's order); eigvecs(A) is [..., n, n], the
eigenvectors as columns in that order (each column's sign is the backend's: compare V diag(λ) Vᵀ,
not V).  Both decompose the symmetric part of A's matrix (kinds/matfun.py: lower_eigh).
"""
from __future__ import annotations

import numpy as np

from ..errors import TypeError_
from .base import Kind, TensorType, default_dtype, op_type, register
from .linalg_solve import leaf_flops, materialize
from .matfun import lower_eigh, sym_np, symmetric


class _EigPart(Kind):
    """eigvals(A) / eigvecs(A): a tensor of the eigendecomposition of a symmetric A (numpy.linalg.eigh's order)."""

    params = ("A",)
    produces = "tensor"

    def construct(self, b, args, kwargs, span):
        b.no_kwargs(self, kwargs)
        b.arity(self, args, span, 1, 1)
        return b.add(self.name, [b.op(args[0])], span=span)

    def infer(self, g, ops, attrs, span):
        t = op_type(g, ops[0], span, f"{self.name}'s operand")
        if not (g.dims.equal(t.rows, t.cols) and symmetric(g, ops[0])):
            raise TypeError_(f"{self.name}(A) needs a symmetric operator, got {t} not known symmetric", span,
                             hint="declare it `symmetric` or `psd`, or write assume(A, symmetric)")
        return TensorType(tuple(t.batch) + self.shape(t), t.dtype or default_dtype(g))

    def flops(self, g, v, k=None):
        a = g[v].operands[0]
        return leaf_flops(g, a) + 10 * g.type(a).rows ** 3

    def lower(self, lw, v, x=None):
        a = lw.src[v].operands[0]
        m = materialize(lw, a, lw.src.type(v).dtype)
        return self.part(lw, lower_eigh(lw, m), lw.shape(m)[-1])


@register
class EigVals(_EigPart):
    """`eigvals(A)`: the eigenvalues [..., n] of a symmetric A, ascending."""

    name = "eigvals"
    constructors = ("eigvals",)
    examples = ("input A : [4, 4]\ninput W : [2, 3, 3]\nexport y = eigvals(A @ A.T)\nexport z = eigvals(W @ W.T)",)

    def shape(self, t):
        return (t.rows,)

    def part(self, lw, e, n):                   # row 0 of the packed eigh, as a vector
        out = lw.prim("slice", e, axis=-2, start=0, stop=1)
        return lw.reshape(out, lw.shape(out)[:-2] + (n,))

    def dense(self, g, v, vals):
        return np.linalg.eigvalsh(sym_np(vals[0]))


@register
class EigVecs(_EigPart):
    """`eigvecs(A)`: the eigenvectors of a symmetric A as the columns of [..., n, n], in the order of
    eigvals(A) (each column's sign is the backend's: compare V diag(λ) Vᵀ, not V)."""

    name = "eigvecs"
    constructors = ("eigvecs",)
    examples = ("input B : [4, 4]\ninput x : [4, 2]\nlet A = B @ B.T\n"
                "export y = eigvecs(A) @ (eigvecs(A).T @ x)\n"
                "export z = (eigvecs(A) @ diag(eigvals(A)) @ eigvecs(A).T) @ x",)

    def shape(self, t):
        return (t.rows, t.cols)

    def part(self, lw, e, n):                   # rows 1.. of the packed eigh
        return lw.prim("slice", e, axis=-2, start=1, stop=n + 1)

    def dense(self, g, v, vals):
        return np.linalg.eigh(sym_np(vals[0]))[1]

"""Kronecker sums: `kronsum(A, B, ...)` = A ⊗ I + I ⊗ B (+ ...), the operator of a separable PDE on
a grid (a 2-D Laplacian is kronsum(T, T) for the 1-D second difference T) (docs/block_sparse.md).

Applied factor by factor: each Aᵢ acts on its mode of x viewed as [n₁, ..., n_p] (row-major, the
numpy.kron order: kronsum(A, B) @ vec(X) = vec(A X + X Bᵀ) for X [n_A, n_B]), O(N Σ nᵢ) for
dense factors instead of O(N²).

With symmetric factors Aᵢ = Qᵢ diag(λᵢ) Qᵢᵀ it is (⊗ Qᵢ) diag(Λ) (⊗ Qᵢ)ᵀ with Λ = λ₁ ⊕ λ₂ ⊕ ...
(all sums λ₁[i] + λ₂[j] + ...), so `inv(kronsum(...)) @ x` is the fast Poisson solver — each
factor's eigendecomposition (Σ nᵢ³), the factors' Qᵀ along their modes, a division by Λ, the Q's
back (N Σ nᵢ) — and `logdet` is Σ log |Λ|, instead of an N³ factorization; `pow`, `sqrt` and `log`
apply f(Λ) between the same eigenvectors (Kind.leaf_function).  exp(A ⊕ B) = exp(A) ⊗ exp(B) (a
rule: the terms commute), the heat equation's propagator.  Without known symmetric factors all of
them fall back to the generic leaf (the N x N matrix, factored or decomposed).
"""
from __future__ import annotations

from functools import reduce

import numpy as np

from ..errors import ShapeError
from .algebra import common
from .base import Kind, OpType, join_dtype, op_type, register, sym_prod
from .linalg_analysis import all_psd
from .linalg_solve import as_dtype, materialize
from .linalg_build import span_of
from .matfun import lower_eigh, symmetric
from .rule import Rule

KRONSUM_KEEPS = frozenset({"symmetric", "psd", "diagonal"})


def _exp_kronsum(g, m):
    """exp(A ⊕ B ⊕ ...) = exp(A) ⊗ exp(B) ⊗ ...: the terms I ⊗ .. ⊗ Aᵢ ⊗ .. ⊗ I commute."""
    attrs, span = g[m["_"]].attrs, span_of(g, m)
    return g.add("kron", [g.add("matfun", [x], attrs, span=span) for x in m["xs"]], span=span)


def _modes(lw, x, sizes, i):
    """x [*b, N, k] viewed as [*b, pre, nᵢ, post·k] for factor i's mode (no copy)."""
    s = lw.shape(x)
    b, k = s[:-2], s[-1]
    pre, post = sym_prod(sizes[:i]), sym_prod(sizes[i + 1:]) * k
    return lw.reshape(x, b + ((pre,) if pre != 1 else ()) + (sizes[i], post))


@register
class KronSum(Kind):
    """`kronsum(A, B, ...)` = A ⊗ I + I ⊗ B (+ ...) for square A [a, a], B [b, b], ...: [a·b·..., a·b·...]."""

    name = "kronsum"
    constructors = ("kronsum",)
    params = ()
    arity = (2, None)
    examples = (
        "input A : [3, 3]\ninput B : [4, 4]\ninput x : [12, 2]\nexport y = kronsum(A, B) @ x\n"
        "export z = kronsum(A, B).T @ x",
        "input A : [2, 2]\ninput B : [3, 3]\ninput C : [2, 2]\ninput x : [5, 12, 1]\nexport y = kronsum(A, B, C) @ x",
        # symmetric factors: the eigendecomposition solve and log-determinant
        "input A : [3, 3]\ninput B : [4, 4]\ninput x : [12, 2]\n"
        "let K = kronsum(A @ A.T + eye(3), B @ B.T + eye(4))\nexport y = inv(K) @ x\nexport z = logdet(K)\n"
        "export p = pow(K, -0.5) @ x\nexport l = log(K) @ x",
    )

    def sample(self, n, tag):
        for a in range(2, n):
            if n % a == 0:
                return f"input KA{tag} : [{a}, {a}]\ninput KB{tag} : [{n // a}, {n // a}]", f"kronsum(KA{tag}, KB{tag})"
        return None

    def infer(self, g, ops, attrs, span):
        ts = [op_type(g, o, span, "kronsum operand") for o in ops]
        for t in ts:
            if t.batch or not g.dims.equal(t.rows, t.cols):
                raise ShapeError(f"kronsum operands must be square and not batched, got {t}", span,
                                 hint="kronsum(A, B) = A ⊗ I + I ⊗ B needs A [a, a] and B [b, b]")
        n = sym_prod(t.rows for t in ts)
        return OpType(n, n, (), join_dtype(*(t.dtype for t in ts)), common(ts, KRONSUM_KEEPS))

    def dense(self, g, v, vals):
        sizes = [x.shape[0] for x in vals]
        out = 0
        for i, a in enumerate(vals):
            out = out + reduce(np.kron, [np.eye(s) for s in sizes[:i]] + [a] + [np.eye(s) for s in sizes[i + 1:]])
        return out

    def flops(self, g, v, k):
        ops = g[v].operands
        sizes = [g.type(o).rows for o in ops]
        n = sym_prod(sizes)
        return sum(g.spec(o).flops(g, o, k * n / s) for o, s in zip(ops, sizes)) + (len(ops) - 1) * n * k

    def operand_columns(self, g, v, k):
        sizes = [g.type(o).rows for o in g[v].operands]
        n = sym_prod(sizes)
        return [k * n / s for s in sizes]

    def lower(self, lw, v, x):
        ops = lw.src[v].operands
        sizes = [lw.src.type(o).rows for o in ops]
        s = lw.shape(x)
        out = None
        for i, o in enumerate(ops):
            y = lw.reshape(lw.apply(o, _modes(lw, x, sizes, i)), s)
            out = y if out is None else lw.add(out, y)
        return out

    def transpose(self, g, v):
        n = g[v]
        return g.add(self.name, [g.add("transpose", [o], span=n.span) for o in n.operands], span=n.span)

    def psd_through(self, g, v):                # eigenvalues add
        return all_psd(g, g[v].operands)

    rules = (
        Rule("exp-kronsum", "exp(A ⊕ B) = exp(A) ⊗ exp(B)", ("matfun", ("kronsum", "*xs")), _exp_kronsum,
             where=lambda g, m: g[m["_"]].attrs["fn"] == "exp"),
    )

    # ---- as a linear-algebra leaf: through the factors' eigendecompositions ----
    def matrix_flops(self, g, v):               # the factors' matrices (their eigendecompositions: below)
        return sum(g.type(o).rows ** 2 for o in g[v].operands)

    def factor_flops(self, g, v, props, tri):
        """eigh of each symmetric factor (9 n³, DenseCost's figure) and the 4 N Σ nᵢ of the mode
        products; None (the generic N³) without known symmetric factors."""
        ops = g[v].operands
        if not all(symmetric(g, o) for o in ops):
            return None
        sizes = [g.type(o).rows for o in ops]
        return sum(9 * s ** 3 for s in sizes) + 4 * sym_prod(sizes) * sum(sizes)

    def _eig(self, lw, v, dtype):
        """[(Qᵢ, λᵢ)] of the symmetric factors, or None when one is not known symmetric."""
        ops = lw.src[v].operands
        if not all(symmetric(lw.src, o) for o in ops):
            lw.note("kronsum: a factor is not known symmetric (declare it, or assume(A, symmetric)): "
                    "its N x N matrix is written down and factored")
            return None
        out = []
        for o in ops:
            e = lower_eigh(lw, materialize(lw, o, dtype))
            n = lw.src.type(o).rows
            lam = lw.reshape(lw.prim("slice", e, axis=-2, start=0, stop=1), (n,))
            q = lw.prim("slice", e, axis=-2, start=1, stop=n + 1)
            out.append((q, lam))
        return out

    def _spectrum(self, lw, eig):
        """Λ = λ₁ ⊕ λ₂ ⊕ ... as a column [N, 1] (row-major over the modes)."""
        sizes = [lw.shape(lam)[0] for _, lam in eig]
        total = None
        for i, (_, lam) in enumerate(eig):
            shape = tuple(s if j == i else 1 for j, s in enumerate(sizes))
            t = lw.reshape(lam, shape)
            total = t if total is None else lw.add(total, t)
        return lw.reshape(total, (sym_prod(sizes), 1))

    def _through_eig(self, lw, eig, x, f):
        """(⊗ Qᵢ) diag(f(Λ)) (⊗ Qᵢ)ᵀ x: Qᵢᵀ along every mode, times f(Λ), Qᵢ along every mode."""
        s = lw.shape(x)
        sizes = [lw.shape(lam)[0] for _, lam in eig]
        for i, (q, _) in enumerate(eig):
            x = lw.reshape(lw.matmul(lw.swap(q), _modes(lw, x, sizes, i)), s)
        x = lw.mul(x, f(self._spectrum(lw, eig)))
        for i, (q, _) in enumerate(eig):
            x = lw.reshape(lw.matmul(q, _modes(lw, x, sizes, i)), s)
        return x

    def leaf_solve(self, lw, v, x, method):
        """The fast Poisson solver: x → Qᵢᵀ along every mode → / Λ → Qᵢ along every mode."""
        dtype = lw.src.type(v).dtype or lw.dtype(x)
        eig = self._eig(lw, v, dtype)
        if eig is None or method != "auto":
            return None
        lw.note("inv(kronsum(...)): the factors' eigendecompositions (fast Poisson solver), "
                "O(Σ nᵢ³ + N Σ nᵢ k) instead of an N³ factorization")
        return self._through_eig(lw, eig, as_dtype(lw, x, dtype), lambda lam: lw.prim("unary", lam, fn="recip"))

    def leaf_function(self, lw, v, f, x):
        """pow, log, sqrt of a kronsum of symmetric factors: f(Λ) between the factors' eigenvectors,
        O(Σ nᵢ³ + N Σ nᵢ k), never the N x N eigendecomposition."""
        dtype = lw.src.type(v).dtype or lw.dtype(x)
        eig = self._eig(lw, v, dtype)
        if eig is None:
            return None
        lw.note("f(kronsum(...)): f of the eigenvalues λᵢ ⊕ λⱼ between the factors' eigenvectors, "
                "O(Σ nᵢ³ + N Σ nᵢ k) instead of an N³ eigendecomposition")
        n = lw.shape(self._spectrum(lw, eig))[0]
        fl = lambda lam: lw.reshape(f(lw, lw.reshape(lam, (1, n))), (n, 1))    # noqa: E731
        return as_dtype(lw, self._through_eig(lw, eig, as_dtype(lw, x, dtype), fl), lw.dtype(x))

    def leaf_logdet(self, lw, v):
        """Σ log |λ₁[i] + λ₂[j] + ...| over all N eigenvalues."""
        eig = self._eig(lw, v, lw.src.type(v).dtype or "float32")
        if eig is None:
            return None
        lw.note("logdet(kronsum(...)): Σ log |λᵢ ⊕ λⱼ| from the factors' eigenvalues")
        lam = lw.reshape(self._spectrum(lw, eig), (lw.src.type(v).rows,))
        return lw.prim("sum", lw.prim("unary", lw.prim("unary", lam, fn="abs"), fn="log"), axis=-1)

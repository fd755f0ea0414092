"""Sparse matrices as arguments: `input S : [m, n] sparse` (docs/block_sparse.md).

The argument is the framework's sparse matrix (scipy.sparse on numpy, a torch sparse COO or CSR
tensor, a `jax.experimental.sparse.BCOO`; TVM refuses `spmm` by name), and the name S is this
operator over it: `S @ x` is one SpMM (the batch of x folded into its columns), `S.T` the
transposed SpMM (never a transposed copy), and S composes with every other operator (`diag(d) @
S`, `S + W`, `inv(S + c * eye(n))`).

Solved (`inv(S)`) by conjugate gradients, Jacobi-preconditioned by S's own diagonal, when S is
declared `psd` (every backend, never S's dense matrix), else by a sparse direct solve (scipy's
`splu` on numpy; torch and JAX have no sparse direct solver on the CPU and factor S's dense
matrix: `opdsl explain` says so); `inv(S, method=lu)` takes the direct solve for a psd S too.
The number of nonzeros is a run-time value, so the cost model estimates an apply from
SPARSE_DENSITY (1% of the entries, the SpMM workloads' density).

A small dense example: S = [[2, 0], [1, 3]] (scipy.sparse.csr_matrix), S @ [1, 1] = [2, 4],
S.T @ [1, 1] = [3, 3].
"""
from __future__ import annotations

from .. import primitives_sparse  # noqa: F401  (registers spmm, sparse_solve, ...)
from ..errors import TypeError_
from .base import Kind, OpType, register
from .linalg_cg import AUTO_CG_MAXITER, cg_solve
from .linalg_solve import as_dtype, fold_batch

SPARSE_DENSITY = 0.01        # the share of nonzero entries the cost model assumes
SWAPPED = {"lower": "upper", "upper": "lower"}


@register
class Sparse(Kind):
    """The operator of a sparse argument S [m, n] (T: of Sᵀ)."""

    name = "sparse"
    constructors = ()
    solve_iteratively = True
    examples = (
        "dim m = 6\ndim n = 5\ninput S : [m, n] sparse\ninput d : [m]\ninput x : [n, 2]\ninput y : [m, 3]\n"
        "export a = S @ x\nexport b = S.T @ y\nexport c = (diag(d) @ S) @ x\nexport e = (2 * S.T @ S) @ x",
        "dim n = 6\ninput S : [n, n] sparse\ninput W : [n, n]\ninput x : [2, n, 3]\n"
        "export y = (S + W) @ x\nexport z = inv(S) @ x\nexport w = logdet(S)\nexport u = diag_of(S)",
        "dim n = 7\ninput P : [n, n] sparse psd\ninput x : [n, 2]\n"
        "export y = inv(P) @ x\nexport z = inv(P).T @ x\nexport w = inv(P + 2 * eye(n)) @ x",
    )

    def sample(self, n, tag):
        return None          # the random programs also run on TVM, which refuses spmm by name

    def infer(self, g, ops, attrs, span):
        t = g.type(ops[0])
        if t.is_op or len(t.shape) != 2:
            raise TypeError_(f"a sparse argument is a matrix [m, n], got {t}", span)
        m, n = t.shape
        props = frozenset(t.props)
        if attrs.get("T"):
            m, n = n, m
            props = frozenset(SWAPPED.get(p, p) for p in props)
        return OpType(m, n, (), t.dtype, props)

    def dense(self, g, v, vals):
        return vals[0].T if g[v].attrs.get("T") else vals[0]

    def flops(self, g, v, k):
        t = g.type(v)
        return 2 * SPARSE_DENSITY * t.rows * t.cols * k + t.rows * k

    def _matrix_arg(self, lw, v):
        return lw.tensor(lw.src[v].operands[0]), bool(lw.src[v].attrs.get("T"))

    def lower(self, lw, v, x):
        s, t = self._matrix_arg(lw, v)
        cols, unfold = fold_batch(lw, x)
        return unfold(lw.prim("spmm", s, cols, t=t))

    def transpose(self, g, v):
        n = g[v]
        return g.add(self.name, list(n.operands), {"T": not n.attrs.get("T")}, span=n.span)

    # ---- as a linear-algebra leaf: never its dense matrix where the framework can avoid it ----
    def matrix(self, lw, v, dtype):
        s, t = self._matrix_arg(lw, v)
        return lw.prim("sparse_dense", s, t=t)

    def matrix_flops(self, g, v):
        t = g.type(v)
        return t.rows * t.cols

    def leaf_diagonal(self, lw, v):
        return lw.prim("sparse_diagonal", self._matrix_arg(lw, v)[0])

    def leaf_solve(self, lw, v, x, method):
        s, t = self._matrix_arg(lw, v)
        g = lw.src
        if "psd" in g.type(v).props and method == "auto":
            dt = g.type(v).dtype or lw.dtype(x)
            tol = 1e-8 if dt == "float64" else 1e-4
            lw.note(f"inv(sparse S): conjugate gradients preconditioned by S's diagonal (tol {tol:g}, "
                    f"maxiter {AUTO_CG_MAXITER}) since S is declared psd: S is applied, never formed")

            def jacobi():
                d = as_dtype(lw, lw.prim("sparse_diagonal", s), dt)
                return lw.prim("unary", lw.reshape(d, (g.type(v).rows, 1)), fn="recip")
            return cg_solve(lw, v, x, {"tol": tol, "maxiter": AUTO_CG_MAXITER, "precond": "jacobi"}, jacobi)
        lw.note("inv(sparse S): a sparse direct solve (numpy: scipy.sparse.linalg.splu; torch, JAX: LU of "
                "S's dense matrix, as they have no sparse direct solver on the CPU)"
                + (f" (method={method})" if method != "auto" else "; declare S psd for conjugate gradients"))
        cols, unfold = fold_batch(lw, x)
        return unfold(lw.prim("sparse_solve", s, cols, t=t))

    def leaf_logdet(self, lw, v):
        lw.note("logdet(sparse S): scipy.sparse.linalg.splu's pivots (numpy); torch, JAX: slogdet of S's "
                "dense matrix")
        return lw.prim("sparse_logdet", self._matrix_arg(lw, v)[0])

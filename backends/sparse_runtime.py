"""Sparse arguments in the Python backends (opdsl/primitives_sparse.py, docs/block_sparse.md): the
emit entries of the sparse primitives, the helpers they call (the "sparse" helper group) and the
check that a sparse argument is the framework's sparse matrix (`_check_sparse`, a CallError
naming the declaration and what came instead).

numpy takes scipy.sparse (any format) and solves with splu; torch takes sparse COO or CSR tensors
and differentiates S @ X in S's values with the gradient in S's own pattern (`_SpMM`: an SDDMM,
never the dense m x n gradient autograd gives a transposed product); JAX takes
`jax.experimental.sparse.BCOO` and differentiates through its own rules.
"""
from __future__ import annotations

from .pyruntime import site


def _t(n) -> bool:
    return bool(n.attrs.get("t"))


# ---- numpy: scipy.sparse --------------------------------------------------------------------
NUMPY_CHECK = '''


def _check_sparse(fn, name, value, decl):
    """Argument `name`, declared `decl`, must be a scipy.sparse matrix (any format)."""
    import scipy.sparse
    if not scipy.sparse.issparse(value):
        got = f"a dense {type(value).__module__}.{type(value).__name__}" if hasattr(value, "shape") else \\
            f"a {type(value).__name__}"
        raise ArgumentError(f"{fn}(): argument {name!r} is declared `{decl}` and takes a scipy.sparse "
                            f"matrix, got {got} (convert with scipy.sparse.csr_array(...))")'''

NUMPY_SPARSE = '''


def _sparse_lu(s):
    """scipy's sparse LU of s (CSC), a singular s as numpy's LinAlgError (for _linalg)."""
    import scipy.sparse.linalg
    try:
        return scipy.sparse.linalg.splu(s.tocsc())
    except RuntimeError as e:      # "Factor is exactly singular"
        raise np.linalg.LinAlgError(str(e)) from None


def _sparse_solve(s, b, t):
    return _sparse_lu(s.T if t else s).solve(np.ascontiguousarray(b))


def _sparse_logdet(s):
    """log |det s|: the sum of log |U_ii| (L has a unit diagonal; the permutations have |det| 1)."""
    try:
        lu = _sparse_lu(s)
    except np.linalg.LinAlgError:
        return np.array(-np.inf, dtype=s.dtype)
    return np.log(np.abs(lu.U.diagonal())).sum()'''

NUMPY_EMIT = {
    "spmm": lambda c, n, a: f"np.asarray({a[0]}{'.T' if _t(n) else ''} @ {a[1]})",
    "sparse_dense": lambda c, n, a: f"{a[0]}.toarray(){'.T' if _t(n) else ''}",
    "sparse_diagonal": lambda c, n, a: f"{a[0]}.diagonal()",
    "sparse_solve": lambda c, n, a: f"_linalg({site(n.span)!r}, _sparse_solve, {a[0]}, {a[1]}, {_t(n)})",
    "sparse_logdet": lambda c, n, a: f"_sparse_logdet({a[0]})",
}

# ---- torch: sparse COO and CSR tensors ------------------------------------------------------------
TORCH_CHECK = '''


def _check_sparse(fn, name, value, decl):
    """Argument `name`, declared `decl`, must be a 2-d torch sparse COO or CSR tensor."""
    layout = getattr(value, "layout", None)
    if layout in (torch.sparse_coo, torch.sparse_csr) and value.dense_dim() == 0:
        return
    if layout is torch.strided:
        got = "a dense torch.Tensor"
    elif layout is not None:
        got = f"a torch.Tensor of layout {str(layout).replace('torch.', '')}"
    else:
        got = f"a {type(value).__module__}.{type(value).__name__}"
    raise ArgumentError(f"{fn}(): argument {name!r} is declared `{decl}` and takes a torch sparse COO or CSR "
                        f"tensor, got {got} (convert with .to_sparse_csr())")'''

TORCH_SPARSE = '''


def _sparse_parts(s, raw=False):
    """(rows, cols, values) of the stored entries of a COO or CSR s; raw: as stored (an uncoalesced
    COO's duplicates apart), else differentiable values of the coalesced matrix."""
    if s.layout == torch.sparse_coo:
        if not raw:
            s = s.coalesce()
        i = s._indices() if raw else s.indices()
        return i[0], i[1], (s._values() if raw else s.values())
    crow = s.crow_indices()
    rows = torch.repeat_interleave(torch.arange(s.shape[0], device=s.device), crow.diff())
    return rows, s.col_indices(), s.values()


def _sparse_diagonal(s):
    rows, cols, vals = _sparse_parts(s)
    keep = rows == cols
    return torch.zeros(s.shape[0], dtype=s.dtype, device=s.device).index_add(0, rows[keep], vals[keep])


class _SpMM(torch.autograd.Function):
    """S @ X (t: Sᵀ @ X) by torch.sparse.mm; the gradient of S has S's pattern (an SDDMM: per stored
    entry (i, j), the row i of the incoming gradient times the row j of X), never the dense m x n."""

    @staticmethod
    def forward(ctx, s, x, t):
        ctx.save_for_backward(s, x)
        ctx.t = t
        return torch.sparse.mm(s.t() if t else s, x)

    @staticmethod
    def backward(ctx, grad):
        s, x = ctx.saved_tensors
        gs = gx = None
        if ctx.needs_input_grad[1]:
            gx = torch.sparse.mm(s if ctx.t else s.t(), grad)
        if ctx.needs_input_grad[0]:
            rows, cols, _ = _sparse_parts(s, raw=True)
            out, into = (cols, rows) if ctx.t else (rows, cols)     # y = Sᵀ X: y[j] += S[i, j] X[i]
            vals = (grad[out] * x[into]).sum(-1)
            if s.layout == torch.sparse_coo:
                gs = torch.sparse_coo_tensor(s._indices(), vals, s.shape, check_invariants=False)
            else:               # (the indices are S's own: nothing to check)
                gs = torch.sparse_csr_tensor(s.crow_indices(), s.col_indices(), vals, s.shape,
                                             check_invariants=False)
        return gs, gx, None


def _spmm(s, x, t):
    """S @ X (t: Sᵀ @ X): through _SpMM where a gradient is wanted, else torch.sparse.mm itself (an
    autograd Function costs ~20 µs a call, 40% of a small SpMM)."""
    if torch.is_grad_enabled() and (s.requires_grad or x.requires_grad):
        return _SpMM.apply(s, x, t)
    return torch.sparse.mm(s.t() if t else s, x)'''

TORCH_EMIT = {
    "spmm": lambda c, n, a: f"_spmm({a[0]}, {a[1]}, {_t(n)})",
    "sparse_dense": lambda c, n, a: f"{a[0]}.to_dense(){'.mT' if _t(n) else ''}",
    "sparse_diagonal": lambda c, n, a: f"_sparse_diagonal({a[0]})",
    "sparse_solve": lambda c, n, a: (f"_linalg({site(n.span)!r}, torch.linalg.solve, "
                                     f"{a[0]}.to_dense(){'.mT' if _t(n) else ''}, {a[1]})"),
    "sparse_logdet": lambda c, n, a: f"torch.linalg.slogdet({a[0]}.to_dense())[1]",
}

# ---- JAX: BCOO ---------------------------------------------------------------------------------
JAX_CHECK = '''


def _check_sparse(fn, name, value, decl):
    """Argument `name`, declared `decl`, must be a 2-d jax.experimental.sparse.BCOO (no batch or
    dense dimensions)."""
    from jax.experimental import sparse as jsparse
    if isinstance(value, jsparse.BCOO) and value.n_batch == 0 and value.n_dense == 0:
        return
    got = ("a BCOO with batch or dense dimensions" if isinstance(value, jsparse.BCOO) else
           f"a {'dense ' if hasattr(value, 'shape') else ''}{type(value).__module__}.{type(value).__name__}")
    raise ArgumentError(f"{fn}(): argument {name!r} is declared `{decl}` and takes a "
                        f"jax.experimental.sparse.BCOO, got {got} (convert with BCOO.fromdense(...) or "
                        "BCOO.from_scipy_sparse(...))")'''

JAX_SPARSE = '''


def _sparse_diagonal(s):
    """The diagonal of a BCOO s: its stored entries on it, summed (padding entries, indexed past the
    end, are dropped by the scatter)."""
    i = s.indices
    return jnp.zeros(s.shape[0], s.dtype).at[i[:, 0]].add(jnp.where(i[:, 0] == i[:, 1], s.data, 0))'''

JAX_EMIT = {
    "spmm": lambda c, n, a: f"{a[0]}{'.T' if _t(n) else ''} @ {a[1]}",
    "sparse_dense": lambda c, n, a: f"{a[0]}.todense(){'.T' if _t(n) else ''}",
    "sparse_diagonal": lambda c, n, a: f"_sparse_diagonal({a[0]})",
    "sparse_solve": lambda c, n, a: f"jnp.linalg.solve({a[0]}.todense(){'.T' if _t(n) else ''}, {a[1]})",
    "sparse_logdet": lambda c, n, a: f"jnp.linalg.slogdet({a[0]}.todense())[1]",
}

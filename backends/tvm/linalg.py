"""Linear-algebra primitives for the TVM backend: sequential loops written with TVM's IRBuilder.

Triangular solves, LU with partial pivoting (solve, slogdet), Cholesky and its
solve are inherently sequential along the matrix; each is one `te.extern`
stage whose loop nest runs the textbook algorithm, in parallel over the batch
(every matrix of a batch on its own thread) with the innermost loops over the
right-hand side's columns.  Nothing here can raise inside a kernel: a
singular (or not positive definite) matrix gives inf / nan, which the Python
entry point turns into the module's SingularError.
"""
from __future__ import annotations

import sympy as sp
from tvm import te, tirx

from opdsl.errors import BackendError

from .index import broadcast_index, prod
from .stages import EXTERN, VIEW, Cplx
from .stages import numel_of as _numel_of


def _real(n, *xs):
    if any(isinstance(x, Cplx) for x in xs):
        raise BackendError(f"the tvm backend has no complex version of primitive {n.kind!r}", n.span)


def _broadcast(b, n, x, operand, out_batch_sym, out_batch, base, core=2):
    """Operand `x` with its batch dims (all but the last `core`) broadcast to the result's (a view,
    inlined by the scheduler)."""
    s = b.sym_shape(operand)
    nb = len(s) - core
    if nb == len(out_batch_sym) and all(sp.sympify(p) == sp.sympify(q) for p, q in zip(s[:nb], out_batch_sym)):
        return x
    return b.compute(tuple(out_batch) + tuple(b.shape(operand)[nb:]),
                     lambda *i: x(*broadcast_index(i[:-core], s[:nb], out_batch_sym), *i[-core:]), base, VIEW, [x])


def _extern(b, n, shapes, inputs, gen, base):
    """A te.extern stage recorded for the scheduler (left as written: an opaque sequential loop nest)."""
    name = b.fresh(base)
    dt = inputs[0].dtype
    bufs = [tirx.decl_buffer(s, dt, f"{name}_out{k}") for k, s in enumerate(shapes)]
    res = te.extern(shapes, list(inputs), gen, dtype=[dt] * len(shapes), out_buffers=bufs, name=name, tag=name)
    res = res if isinstance(res, (list, tuple)) else [res]
    b.record(res[0].op.name, EXTERN, list(inputs), dtype=str(dt), numel=sum(_numel_of(r) or 0 for r in res))
    return res


def _ir():
    from tvm.script.ir_builder import IRBuilder
    from tvm.script.ir_builder import tirx as T
    return IRBuilder, T


def _solve_args(b, n, a, base, a_suffix):
    """(A, B, output shape, extern name, rows, cols, batch) of a solve-like primitive A x = B, both
    operands broadcast to the output's batch."""
    A, B = a
    _real(n, A, B)
    out = b.shape(n.id)
    ob_sym = b.sym_shape(n.id)[:-2]
    base = n.name or base
    A = _broadcast(b, n, A, n.operands[0], ob_sym, out[:-2], base + a_suffix)
    B = _broadcast(b, n, B, n.operands[1], ob_sym, out[:-2], base + "_B")
    return A, B, out, base, out[-2], out[-1], prod(out[:-2])


def _substitute(T, M, a0, X, x0, rows, cols, upper, transposed=False, unit=False):
    """X <- (triangle of M)^-1 X in place, one batch element: back substitution (upper) or forward
    substitution (lower); `transposed` reads M[j, i] for M[i, j] (Lᵀ from L)."""
    def m(i, j):
        return M[a0 + j * rows + i] if transposed else M[a0 + i * rows + j]
    with T.serial(0, rows) as r:
        i = rows - 1 - r if upper else r
        with T.serial(0, r) as t:
            j = i + 1 + t if upper else t
            with T.serial(0, cols) as c:
                X[x0 + i * cols + c] = X[x0 + i * cols + c] - m(i, j) * X[x0 + j * cols + c]
        if not unit:
            with T.serial(0, cols) as c:
                X[x0 + i * cols + c] = X[x0 + i * cols + c] / m(i, i)


def e_solve_triangular(b, n, a):
    """x with triu(A) x = B (tril when upper=False): back / forward substitution."""
    A, B, out, base, rows, cols, batch = _solve_args(b, n, a, "solve", "_A")
    upper = bool(n.attrs.get("upper", True))

    def gen(ins, outs):
        IRBuilder, T = _ir()
        with IRBuilder() as ib:
            Am, Bm, X = (T.buffer_proxy(x) for x in (ins[0], ins[1], outs[0]))
            with T.parallel(0, batch) as bt:
                a0, x0 = bt * rows * rows, bt * rows * cols
                with T.serial(0, rows * cols) as c:
                    X[x0 + c] = Bm[x0 + c]
                _substitute(T, Am, a0, X, x0, rows, cols, upper, unit=bool(n.attrs.get("unit")))
        return ib.get()
    return _extern(b, n, [out], [A, B], gen, base)[0]


def _lu_ir(T, LU, a0, n_, dt, X=None, x0=None, k=None):
    """In-place LU with partial pivoting of LU[a0 : a0 + n*n]; row swaps applied to X as well.
    Returns the local buffer holding the running sum of log|U_jj| (for slogdet)."""
    piv = T.buffer_proxy(T.decl_buffer([1], "int32", scope="local"))
    best = T.buffer_proxy(T.decl_buffer([1], dt, scope="local"))
    tmp = T.buffer_proxy(T.decl_buffer([1], dt, scope="local"))
    f = T.buffer_proxy(T.decl_buffer([1], dt, scope="local"))
    logdet = T.buffer_proxy(T.decl_buffer([1], dt, scope="local"))
    logdet[0] = tirx.const(0, dt)
    with T.serial(0, n_) as j:
        piv[0] = j
        best[0] = tirx.abs(LU[a0 + j * n_ + j])
        with T.serial(0, n_ - j - 1) as t:
            i = j + 1 + t
            with T.If(tirx.abs(LU[a0 + i * n_ + j]) > best[0]):
                with T.Then():
                    piv[0] = i
                    best[0] = tirx.abs(LU[a0 + i * n_ + j])
        with T.If(piv[0] != j):
            with T.Then():
                with T.serial(0, n_) as c:
                    tmp[0] = LU[a0 + j * n_ + c]
                    LU[a0 + j * n_ + c] = LU[a0 + piv[0] * n_ + c]
                    LU[a0 + piv[0] * n_ + c] = tmp[0]
                if X is not None:
                    with T.serial(0, k) as c:
                        tmp[0] = X[x0 + j * k + c]
                        X[x0 + j * k + c] = X[x0 + piv[0] * k + c]
                        X[x0 + piv[0] * k + c] = tmp[0]
        logdet[0] = logdet[0] + tirx.log(tirx.abs(LU[a0 + j * n_ + j]))
        with T.serial(0, n_ - j - 1) as t:
            i = j + 1 + t
            f[0] = LU[a0 + i * n_ + j] / LU[a0 + j * n_ + j]
            LU[a0 + i * n_ + j] = f[0]
            with T.serial(0, n_ - j - 1) as u:
                c = j + 1 + u
                LU[a0 + i * n_ + c] = LU[a0 + i * n_ + c] - f[0] * LU[a0 + j * n_ + c]
            if X is not None:
                with T.serial(0, k) as c:
                    X[x0 + i * k + c] = X[x0 + i * k + c] - f[0] * X[x0 + j * k + c]
    return logdet


def e_solve(b, n, a):
    """x with A x = B: LU with partial pivoting, then back substitution."""
    A, B, out, base, rows, cols, batch = _solve_args(b, n, a, "solve", "_A")
    dt = B.dtype

    def gen(ins, outs):
        IRBuilder, T = _ir()
        with IRBuilder() as ib:
            Am, Bm, X, LU = (T.buffer_proxy(x) for x in (ins[0], ins[1], outs[0], outs[1]))
            with T.parallel(0, batch) as bt:
                a0, x0 = bt * rows * rows, bt * rows * cols
                with T.serial(0, rows * rows) as c:
                    LU[a0 + c] = Am[a0 + c]
                with T.serial(0, rows * cols) as c:
                    X[x0 + c] = Bm[x0 + c]
                _lu_ir(T, LU, a0, rows, dt, X, x0, cols)       # applies L^-1 (and the row swaps) to X
                _substitute(T, LU, a0, X, x0, rows, cols, upper=True)
        return ib.get()
    lu_shape = tuple(out[:-2]) + (rows, rows)
    return _extern(b, n, [out, lu_shape], [A, B], gen, base)[0]


def e_slogdet(b, n, a):
    """log |det A| from the LU factorization (sum of log |U_jj|)."""
    A = a[0]
    _real(n, A)
    s = b.shape(n.operands[0])
    rows, batch_shape = s[-1], tuple(s[:-2])
    batch = prod(batch_shape)
    dt = A.dtype
    base = n.name or "logdet"

    def gen(ins, outs):
        IRBuilder, T = _ir()
        with IRBuilder() as ib:
            Am, out, LU = (T.buffer_proxy(x) for x in (ins[0], outs[0], outs[1]))
            with T.parallel(0, batch) as bt:
                a0 = bt * rows * rows
                with T.serial(0, rows * rows) as c:
                    LU[a0 + c] = Am[a0 + c]
                logdet = _lu_ir(T, LU, a0, rows, dt)
                out[bt] = logdet[0]
        return ib.get()
    return _extern(b, n, [batch_shape, tuple(s)], [A], gen, base)[0]


def e_cholesky(b, n, a):
    """The lower factor L of A = L Lᵀ (nan where A is not positive definite)."""
    A = a[0]
    _real(n, A)
    s = b.shape(n.id)
    rows, batch = s[-1], prod(s[:-2])
    dt = A.dtype

    def gen(ins, outs):
        IRBuilder, T = _ir()
        with IRBuilder() as ib:
            Am, L = T.buffer_proxy(ins[0]), T.buffer_proxy(outs[0])
            with T.parallel(0, batch) as bt:
                a0 = bt * rows * rows
                acc = T.buffer_proxy(T.decl_buffer([1], dt, scope="local"))
                with T.serial(0, rows) as j:
                    acc[0] = Am[a0 + j * rows + j]
                    with T.serial(0, j) as t:
                        acc[0] = acc[0] - L[a0 + j * rows + t] * L[a0 + j * rows + t]
                    L[a0 + j * rows + j] = tirx.sqrt(acc[0])
                    with T.serial(0, rows - j - 1) as t:
                        i = j + 1 + t
                        acc[0] = Am[a0 + i * rows + j]
                        with T.serial(0, j) as u:
                            acc[0] = acc[0] - L[a0 + i * rows + u] * L[a0 + j * rows + u]
                        L[a0 + i * rows + j] = acc[0] / L[a0 + j * rows + j]
                        L[a0 + j * rows + i] = tirx.const(0, dt)
        return ib.get()
    return _extern(b, n, [s], [A], gen, n.name or "cholesky")[0]


def e_cho_solve(b, n, a):
    """x with L Lᵀ x = B: forward substitution with L, back substitution with Lᵀ."""
    Lt, B, out, base, rows, cols, batch = _solve_args(b, n, a, "cho_solve", "_L")

    def gen(ins, outs):
        IRBuilder, T = _ir()
        with IRBuilder() as ib:
            L, Bm, X = (T.buffer_proxy(x) for x in (ins[0], ins[1], outs[0]))
            with T.parallel(0, batch) as bt:
                a0, x0 = bt * rows * rows, bt * rows * cols
                with T.serial(0, rows * cols) as c:
                    X[x0 + c] = Bm[x0 + c]
                _substitute(T, L, a0, X, x0, rows, cols, upper=False)
                _substitute(T, L, a0, X, x0, rows, cols, upper=True, transposed=True)
        return ib.get()
    return _extern(b, n, [out], [Lt, B], gen, base)[0]


def e_checked(b, n, a):
    """The value itself; the entry point checks the export's result for inf / nan (SingularError)."""
    return a[0]


def e_linrec(b, n, a):
    """The states entering each step of S_{c+1} = P_c S_c + H_c, S_0 = 0: a serial loop over the
    steps (each a small matrix product read from the previous state in the output), in parallel
    over the batch."""
    P, H = a
    _real(n, P, H)
    out = b.shape(n.id)
    ob_sym = b.sym_shape(n.id)[:-3]
    base = n.name or "linrec"
    P = _broadcast(b, n, P, n.operands[0], ob_sym, out[:-3], base + "_P", core=3)
    H = _broadcast(b, n, H, n.operands[1], ob_sym, out[:-3], base + "_H", core=3)
    steps, f, k = out[-3], out[-2], out[-1]
    batch = prod(out[:-3])

    def gen(ins, outs):
        IRBuilder, T = _ir()
        with IRBuilder() as ib:
            Pm, Hm, S = (T.buffer_proxy(x) for x in (ins[0], ins[1], outs[0]))
            with T.parallel(0, batch) as bt:
                acc = T.buffer_proxy(T.decl_buffer([1], H.dtype, scope="local"))
                p0, s0 = bt * steps * f * f, bt * steps * f * k
                with T.serial(0, f * k) as e:
                    S[s0 + e] = tirx.const(0, H.dtype)
                with T.serial(0, steps - 1) as c:
                    with T.serial(0, f) as i:
                        with T.serial(0, k) as j:
                            acc[0] = Hm[s0 + c * f * k + i * k + j]
                            with T.serial(0, f) as m:
                                acc[0] = acc[0] + Pm[p0 + c * f * f + i * f + m] * S[s0 + c * f * k + m * k + j]
                            S[s0 + (c + 1) * f * k + i * k + j] = acc[0]
        return ib.get()
    return _extern(b, n, [out], [P, H], gen, base)[0]


def _refused(what):
    def emit(b, n, a):
        raise BackendError(f"the tvm backend does not implement primitive {n.kind!r} ({what})", n.span,
                           hint="use backend='torch', 'jax' or 'numpy' for this program")
    return emit


e_eigh = _refused("a symmetric eigendecomposition: an iterative algorithm with no TE form here")
e_expm = _refused("the matrix exponential of a general square matrix")
e_tridiag_solve = _refused("a tridiagonal solve: cyclic reduction's levels have no TE schedule here")
e_tridiag_logdet = _refused("a tridiagonal log-determinant by cyclic reduction")
e_take = _refused("a row gather by compile-time indices (select): no TE form here yet")
e_put = _refused("a row scatter-add by compile-time indices (select's transpose): no TE form here yet")
e_pivchol = _refused("a pivoted Cholesky factorization: pivots chosen one by one from the values")
e_invroot_newton = _refused("an iteration that stops on a tolerance")
e_slq = _refused("Lanczos iterations with the operator applied inside the loop")
# sparse arguments: the TE builder takes dense buffers only; a CSR SpMM kernel is not written yet
e_spmm = _refused("a sparse matrix product: the TVM functions take dense arrays only, no CSR kernel yet")
e_sparse_dense = _refused("the dense matrix of a sparse argument: the TVM functions take dense arrays only")
e_sparse_diagonal = _refused("the diagonal of a sparse argument: the TVM functions take dense arrays only")
e_sparse_solve = _refused("a sparse direct solve")
e_sparse_logdet = _refused("a sparse LU's log-determinant")


def e_complex(b, n, a):
    """x[..., 0] + i x[..., 1] (conj: − i x[..., 1]) as the pair of real tensors a Cplx is."""
    x = a[0]
    shape = b.shape(n.id)
    sign = -1.0 if n.attrs.get("conj") else 1.0
    from .index import const
    re = b.compute(shape, lambda *i: x(*i, 0), (n.name or "complex") + "_re", VIEW, [x], complex=True)
    im = b.compute(shape, lambda *i: x(*i, 1) * const(sign, x.dtype), (n.name or "complex") + "_im", VIEW, [x],
                   complex=True)
    return Cplx(re, im)


def e_cg(b, n, a):
    raise BackendError(
        "the tvm backend does not implement primitive 'cg' (conjugate gradients: a loop that stops on a "
        "tolerance, with the operator applied inside it)", n.span,
        hint="use backend='torch', 'jax' or 'numpy' for this program, or a direct inverse")


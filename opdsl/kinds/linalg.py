"""Inverses, log-determinants, diagonals and traces of operators (docs/linalg.md).

    inv(A)                       an operator: inv(A) @ b is a solve
    inv(A, method=cg, tol=1e-6, maxiter=100, precond=jacobi)
                                 preconditioned conjugate gradients (A symmetric positive definite)
    logdet(A)                    log |det A|, a scalar tensor ([*batch] for a batched A)
    diag_of(A)                   the diagonal, a vector [n]
    trace(A)                     the trace, a scalar tensor
    dense(A)                     the matrix of A, a tensor [m, n]

This module holds the kinds.  Structured operands are rewritten by the rule
tables in passes/linalg_rules.py (inv(A ⊗ B) = inv(A) ⊗ inv(B), Woodbury,
logdet of a Kronecker product, ...) and by the rules kinds carry (Monarch,
circulant).  What no rule rewrote is a *leaf* (kinds/linalg_solve.py): a dense
(or batched-block) operand is factored — Cholesky when it is known PSD, a
triangular solve when it is known lower/upper triangular, LU otherwise — and
any other operand is first materialized (applied to the identity) and then
factored.  With method=cg the operand is never materialized: each iteration
applies it through its own lowering (kinds/linalg_cg.py).  What the checker
knows of an operand's structure (triangular, singular) is in
kinds/linalg_analysis.py.

logdet is log |det A| (numpy.linalg.slogdet's second output): it equals
log det A for a positive definite A, and every rule (orthogonal factors
contribute 0, triangular ones Σ log |a_ii|) holds for it without sign
bookkeeping.

Errors: inv of a non-square operator, or of one that is singular by its
structure (zeros, a low-rank product of rank r < n, a Kronecker product or a
block diagonal with a non-square factor), is a compile-time ShapeError.  At
run time a singular or non-positive-definite leaf raises the generated
module's SingularError (numpy, torch; see docs/linalg.md for JAX).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ShapeError, TypeError_
from .base import Kind, OpType, TensorType, default_dtype, op_type, register, sym_prod
from .fft_algebra import unary
from .linalg_analysis import flip, psd, singular_reason, triangular   # triangular: also asked of this module (tests)
from .linalg_cg import AUTO_CG_MAXITER, PIVCHOL_RANK, cg_solve, jacobi_of, lower_cg, split_diagonal
from .linalg_slq import hutchinson_np, lower_hutchinson, lower_slq, slq_np
from .linalg_solve import (factor_flops, leaf_diagonal, leaf_flops, leaf_logdet, leaf_matrix, leaf_solve,
                           logdet_matrix, materialize)

METHODS = ("auto", "lu", "cholesky", "cg")
PRECONDS = ("none", "jacobi", "pivchol")
# method=auto solves a positive definite leaf larger than this iteratively: CG (pivchol(15) when
# A = S + D, tol 1e-4 in float32, 1e-8 in float64) and logdet by SLQ (LogDet.SLQ's settings).  From
# the crossover measured on kernel(X, X, rbf) + 0.1 I (benchmarks/results.md, "kernels"): Cholesky
# wins at n = 1,000, CG with pivchol(15) and the kernel formed once by 1.1x at 2,000 (a margin this
# threshold leaves to the exact solver), 1.4x at 4,000, 1.7x at 8,000.
AUTO_CG_ROWS = 3000
AUTO_CG = {"maxiter": AUTO_CG_MAXITER, "precond": "pivchol", "rank": PIVCHOL_RANK}
AUTO_CG_TOL = {"float64": 1e-8}    # else 1e-4
# properties inv(A) keeps from A (the inverse of a PSD / orthogonal / triangular matrix is one too)
INV_KEEPS = frozenset({"symmetric", "psd", "orthogonal", "diagonal", "permutation", "lower", "upper"})


def _square_operand(g, ops, span, fname, hint):
    t = op_type(g, ops[0], span, f"{fname}'s operand")
    if not g.dims.equal(t.rows, t.cols):
        raise ShapeError(f"{fname} needs a square operator, got {t}", span, hint=hint)
    return t


# ---- the kinds ---------------------------------------------------------------------------------

@register
class Inv(Kind):
    """`inv(A)`: the inverse of a square operator; `inv(A) @ b` solves A x = b.

    Options: method=auto (default: the structure's rules, then Cholesky / triangular / LU
    on a leaf; a positive definite leaf larger than AUTO_CG_ROWS: CG), lu, cholesky, or cg
    (conjugate gradients, with tol=1e-6, maxiter=100 and precond=none|jacobi|pivchol(rank);
    A must be symmetric positive definite; pivchol needs A = S + D with D diagonal)."""

    name = "inv"
    constructors = ("inv",)
    params = ("A",)
    options = ("method", "tol", "maxiter", "precond")
    arity = (1, 2)
    examples = (
        # a dense leaf (LU), a vector right-hand side, and a composition that is solved factor by factor
        "dim n = 4\ninput W : [n, n]\ninput b : [n]\nexport y = inv(3 * eye(n) + W) @ b",
        "input A : [3, 3]\ninput B : [2, 2]\ninput x : [6, 2]\nexport y = inv(kron(3 * eye(3) + A, 2 * eye(2) + B)) @ x",
        "input A : [2, 2]\ninput B : [3, 3]\ninput x : [5, 4]\n"
        "export y = inv(blockdiag(2 * eye(2) + A, 3 * eye(3) + B)) @ x",
        "dim n = 6\ninput d : [n]\ninput U : [n, 2]\ninput V : [n, 2]\ninput x : [n, 3]\n"
        "export y = inv(diag(d) + lowrank(U, V)) @ x\nexport z = logdet(diag(d) + lowrank(U, V))",
        "dim n = 5\ninput V : [n, 3]\ninput x : [n, 2]\nexport y = inv(householder(V) @ perm(1, 5)) @ x",
        "dim b = 3\ninput L : [b, b, b]\ninput R : [b, b, b]\ninput x : [b * b, 2]\n"
        "export y = inv(monarch(L, R) + zeros(b * b, b * b)) @ x",
        "input W : [3, 2, 2]\ninput x : [6, 2]\nexport y = inv(-2 * blockdiag(W) + 3 * eye(6)) @ x\n"
        "export z = inv(blockdiag(W)) @ blockdiag(W) @ x",
        "input W : [2, 3, 3]\ninput x : [3, 2]\nexport y = inv(W) @ x",
        "input A : [3, 3]\ninput B : [3, 3]\ninput x : [3, 2]\n"
        "export y = inv((2 * eye(3) + A) @ (2 * eye(3) + B.T)).T @ x",
        # inv(inv(.)), inv(I), inv(cA) and products written with tensors (A @ B, 2 * A)
        "input A : [3, 3]\ninput B : [3, 3]\ninput x : [3, 2]\n"
        "export y = inv(inv(-2 * (3 * eye(3) + A))) @ x + inv(eye(3)) @ x\n"
        "export z = inv((A + 3 * eye(3).T) @ (B + 3 * eye(3))) @ x\nexport w = inv(0.5 * (A @ B + 4 * eye(3))) @ x\n"
        "export v = inv(-2 * A @ B) @ x",
    )

    def sample(self, n, tag):
        return f"input IW{tag} : [{n}, {n}]", f"inv(eye({n}) * 3 + IW{tag})"

    def construct(self, b, args, kwargs, span):
        b.arity(self, args, span, 1, 1)
        attrs = {"method": "auto"}
        if "method" in kwargs:
            attrs["method"] = b.word(kwargs["method"], METHODS, "inv method")
        cg_opts = {"tol": 1e-6, "maxiter": 100, "precond": "none"}
        for k, val in kwargs.items():
            if k == "method":
                continue
            if k not in cg_opts:
                raise TypeError_(f"inv(...) has no option {k!r}", val.span,
                                 hint="options: method=auto|lu|cholesky|cg; with method=cg also tol, maxiter, precond")
            if attrs["method"] != "cg":
                raise TypeError_(f"the option {k!r} applies to method=cg only", val.span,
                                 hint="write inv(A, method=cg, tol=..., maxiter=...)")
            if k == "tol":
                cg_opts[k] = float(b.num(val))
                if not cg_opts[k] > 0:
                    raise TypeError_(f"tol must be positive, got {cg_opts[k]}", val.span)
            elif k == "maxiter":
                m = b.num(val)
                if float(m) != int(m) or int(m) < 1:
                    raise TypeError_(f"maxiter must be a positive integer, got {m}", val.span)
                cg_opts[k] = int(m)
            elif val.tag == "call":                  # precond=pivchol(rank)
                (rank,) = b.option_call(val, "pivchol", 1, 1)
                if float(rank) != int(rank) or int(rank) < 1:
                    raise TypeError_(f"the rank of pivchol must be a positive integer, got {rank}", val.span)
                cg_opts[k], cg_opts["rank"] = "pivchol", int(rank)
            else:
                cg_opts[k] = b.word(val, PRECONDS, "preconditioner")
                if cg_opts[k] == "pivchol":
                    cg_opts["rank"] = PIVCHOL_RANK
        a = b.op(args[0])
        ops = [a]
        if attrs["method"] == "cg":
            attrs.update(cg_opts)
            if cg_opts["precond"] == "jacobi":       # the diagonal, found by the diag_of rules
                ops.append(b.add("diag_of", [a], span=span))
        return b.add(self.name, ops, attrs, span=span)

    def infer(self, g, ops, attrs, span):
        t = _square_operand(g, ops, span, "inv",
                            "inv(A) needs A square; for least squares write inv(A.T @ A) @ (A.T @ b)")
        if attrs.get("precond") == "pivchol" and split_diagonal(g, ops[0]) is None:
            raise TypeError_(f"precond=pivchol needs A = S + D with D diagonal (the noise of a kernel), got "
                             f"{g[ops[0]].kind}(...)", span,
                             hint="write inv(kernel(X, X, rbf) + 0.1 * eye(n), method=cg, precond=pivchol(15)); "
                                  "or use precond=jacobi")
        why = singular_reason(g, ops[0])
        if why:
            raise ShapeError(f"inv of a singular operator: {why}", span,
                             hint="an inverse exists only for a full-rank square operator; "
                                  "add a diagonal (e.g. eye(n) + lowrank(U, V)) or use a different operator")
        return OpType(t.rows, t.cols, t.batch, t.dtype, frozenset(t.props & INV_KEEPS) | {"invertible"})

    def dense(self, g, v, vals):
        return np.linalg.inv(vals[0])

    def flops(self, g, v, k):
        n = g[v]
        a = n.operands[0]
        t = g.type(a)
        if n.attrs.get("method") == "cg":
            per = g.spec(a).flops(g, a, k) + 10 * t.rows * k * sym_prod(t.batch)
            return n.attrs["maxiter"] * per
        props = t.props if n.attrs.get("method") != "cholesky" else t.props | {"psd"}
        tri = triangular(g, a)
        solve = (1 if tri is not None and "psd" not in props else 2) * t.rows * t.cols * k * sym_prod(t.batch)
        return leaf_flops(g, a) + factor_flops(g, a, props, tri) + solve

    def lower(self, lw, v, x):
        n = lw.src[v]
        method = n.attrs.get("method", "auto")
        if method == "cg":
            return lower_cg(lw, v, x)
        a = n.operands[0]
        why = iterative_reason(lw, a, solve=True) if method == "auto" else None
        if why:
            dt = lw.src.type(a).dtype or lw.dtype(x)
            opts = {**AUTO_CG, "tol": AUTO_CG_TOL.get(dt, 1e-4)}
            jacobi = jacobi_of(lw, a, dt)
            if jacobi is not None:
                opts["precond"] = "jacobi"
            elif split_diagonal(lw.src, a) is None:
                opts["precond"] = "none"
            lw.note(f"inv: conjugate gradients (tol {opts['tol']:g}, maxiter {opts['maxiter']}, "
                    f"precond {opts['precond']}) since {why}")
            return cg_solve(lw, a, x, opts, jacobi)
        how = direct_method(lw, a, method)
        if how:
            lw.note(f"inv: {how}")
        return leaf_solve(lw, a, x, method)

    def fft_tree(self, g, v, conj, leaves):     # 1 / λ (an explicit method= is kept as written)
        if g[v].attrs.get("method", "auto") != "auto":
            return None
        return unary(g, v, conj, leaves, lambda e: ("inv", e))

    def transpose(self, g, v):
        n = g[v]
        ops = [g.add("transpose", [n.operands[0]], span=n.span)] + list(n.operands[1:])
        return g.add(self.name, ops, n.attrs, span=n.span)

    def triangular_through(self, g, v):         # the inverse of a triangular matrix is triangular
        return triangular(g, g[v].operands[0])

    def cheap_inverse(self, g, v):              # inv(inv(A)) = A
        return True

    def dense_apply_flops(self, g, v, k, dense):   # a dense code solves: factor once, then per column
        return dense.solve(v, k)

    def dense_flops(self, g, v, dense):         # its matrix is needed: solve for the identity
        return dense.solve(v, g.type(v).cols) if dense.needs_matrix(v) else 0


def _scalar_type(g, t, span, extra=()):
    return TensorType(tuple(t.batch) + tuple(extra), t.dtype or default_dtype(g))


def iterative_reason(lw, a, solve=False):
    """Why method=auto solves leaf a iteratively (CG, SLQ), or None: it is positive semidefinite,
    not batched, not triangular, its kind has no solve of its own (Kind.leaf_solve), and its size
    is known and above AUTO_CG_ROWS — or, for a solve, it has a part never to be formed
    (Kind.solve_iteratively: a sparse argument), whatever its size."""
    g = lw.src
    t = g.type(a)
    if t.batch or triangular(g, a) is not None or not psd(g, a):
        return None
    if type(g.spec(a)).leaf_solve is not Kind.leaf_solve:
        return None
    part = next((u for u in g.live([a]) if g.spec(u).solve_iteratively), None) if solve else None
    if part is not None:
        return f"A is positive semidefinite and has a {g[part].kind} part, applied but never formed"
    n = g.dims.value(t.rows)
    if n is None or int(n) <= AUTO_CG_ROWS:
        return None
    return f"A is positive semidefinite with n = {int(n):,} > {AUTO_CG_ROWS:,} rows (AUTO_CG_ROWS)"


def direct_method(lw, a, method):
    """What a direct solve of leaf a does, for `opdsl explain` (None: the kind's own leaf_solve)."""
    g = lw.src
    spec = g.spec(a)
    if type(spec).leaf_solve is not Kind.leaf_solve:
        return None                      # the kind's own solve (it notes what it does)
    if method == "cholesky":
        return "Cholesky (method=cholesky)"
    if method == "lu":
        return "LU (method=lu)"
    if "psd" in spec.matrix_props(g, a) or psd(g, a):
        return "Cholesky (A is positive semidefinite)"
    tri = triangular(g, a)
    if tri is not None:
        return f"a triangular solve (A is {tri})"
    return "LU (nothing known makes A positive definite or triangular)"


def _estimator(b, kind, kwargs, methods, stochastic, defaults, span):
    """attrs of logdet / trace with `method=` and, for the stochastic method, probes / steps / seed."""
    attrs = {"method": b.word(kwargs["method"], methods, f"{kind.name} method") if "method" in kwargs else methods[0]}
    for key, val in kwargs.items():
        if key == "method":
            continue
        if key not in defaults:
            raise TypeError_(f"{kind.name}(...) has no option {key!r}", val.span,
                             hint=f"options: method={'|'.join(methods)}; with method={stochastic}: "
                                  f"{', '.join(defaults)}")
        if attrs["method"] != stochastic:
            raise TypeError_(f"the option {key!r} applies to method={stochastic} only", val.span)
    if attrs["method"] == stochastic:
        for key, default in defaults.items():
            c = b.num(kwargs[key]) if key in kwargs else default
            if isinstance(default, float):          # a tolerance
                if not (float(c) > 0 and math.isfinite(float(c))):
                    raise TypeError_(f"{key} must be a positive number, got {c}", kwargs[key].span)
                attrs[key] = float(c)
                continue
            if float(c) != int(c) or int(c) < (0 if key == "seed" else 1):
                raise TypeError_(f"{key} must be a {'non-negative' if key == 'seed' else 'positive'} integer, got {c}",
                                 kwargs[key].span)
            attrs[key] = int(c)
    return attrs


def _stochastic_needs(g, ops, attrs, span, what):
    """A stochastic estimator needs a concrete size (its probes are drawn at compile time) and no batch."""
    t = g.type(ops[0])
    if g.dims.value(t.rows) is None:
        raise ShapeError(f"{what} needs the operator's size known at compile time, got {t}", span,
                         hint="the probe vectors are drawn when the program compiles: declare `dim n = ...`")
    if t.batch:
        raise ShapeError(f"{what} of a batched operator {t} is not supported", span, hint="use method=auto")


@register
class LogDet(Kind):
    """`logdet(A)`: log |det A| of a square operator (a scalar; [*batch] for a batched A)."""

    name = "logdet"
    constructors = ("logdet",)
    params = ("A",)
    options = ("method", "probes", "steps", "seed", "tol", "maxiter")
    produces = "tensor"
    # GPyTorch's num_trace_samples and Lanczos iterations; tol, maxiter: the CG solves of the
    # gradient estimator (torch: kinds/linalg_slq.py)
    SLQ = {"probes": 10, "steps": 20, "seed": 0, "tol": 1e-2, "maxiter": 1000}
    examples = (
        "dim n = 4\ninput W : [n, n]\nexport y = logdet(W)",
        "input W : [2, 3, 3]\nexport y = logdet(W)",
        "input A : [2, 2]\ninput B : [3, 3]\ninput C : [2, 2]\nexport y = logdet(kron(A, B.T, C))",
        "input A : [2, 2]\ninput B : [3, 3]\ninput d : [2]\nexport y = logdet(blockdiag(A, B, diag(d)))",
        "input A : [3, 3]\ninput B : [3, 3]\ninput V : [3, 2]\n"
        "export y = logdet(-2 * A @ householder(V) @ inv(B) @ perm(1, 3))",
        "dim b = 3\ninput L : [b, b, b]\ninput R : [b, b, b]\nexport y = logdet(monarch(L, R))\n"
        "export z = logdet(blockdiag(L))",
        "dim n = 5\ninput d : [n]\ninput U : [n, 1]\ninput V : [n, 1]\ninput P : [n, 2]\n"
        "export y = logdet(diag(d) + lowrank(U, V) - 0.5 * lowrank(P, P))",
        # a causal convolution is lower triangular: Σ log |diagonal|
        "input h : [5]\nexport y = logdet(conv(h))",
        # stochastic Lanczos quadrature (steps = n: exact up to rounding, so the catalogue can compare)
        # (20,000 probes: its torch gradient is an estimator, checked to 1/√probes: Kind.gradient_estimate)
        "dim n = 6\ninput X : [n, 2]\nexport y = logdet(kernel(X, X, rbf) + 0.5 * eye(n), method=slq, steps=6, probes=20000, "
        "tol=1e-10, maxiter=50)",
    )

    def construct(self, b, args, kwargs, span):
        b.arity(self, args, span, 1, 1)
        attrs = _estimator(b, self, kwargs, ("auto", "cholesky", "slq"), "slq", self.SLQ, span)
        return b.add(self.name, [b.op(args[0])], attrs, span=span)

    def infer(self, g, ops, attrs, span):
        t = _square_operand(g, ops, span, "logdet", "the determinant is defined for square operators only")
        if attrs.get("method") == "slq":
            _stochastic_needs(g, ops, attrs, span, "logdet(A, method=slq)")
        return _scalar_type(g, t, span)

    def dense(self, g, v, vals):
        if g[v].attrs.get("method") == "slq":      # the estimate these probes give (docs/kernels.md)
            return slq_np(vals[0], g[v].attrs)
        return np.linalg.slogdet(vals[0])[1]

    def flops(self, g, v, k=None):
        a = g[v].operands[0]
        t = g.type(a)
        return leaf_flops(g, a) + factor_flops(g, a, t.props, triangular(g, a)) + t.rows * sym_prod(t.batch)

    def as_written(self, g, v):                 # the rules' exact forms would replace the estimator
        return g[v].attrs.get("method") == "slq"

    def gradient_estimate(self, g, v):
        """SLQ's torch gradient is the trace estimator mean zᵢᵀ A⁻¹ ∂A zᵢ (kinds/linalg_slq.py), and the
        derivative of the estimate the forward returns is another estimate of d logdet A: both err by
        O(1/√probes)."""
        if g[v].attrs.get("method") != "slq":
            return None
        return 1.0 / g[v].attrs["probes"] ** 0.5

    def lower(self, lw, v, x=None):
        method = lw.src[v].attrs.get("method", "auto")
        if method == "slq":
            return lower_slq(lw, v)
        a = lw.src[v].operands[0]
        why = iterative_reason(lw, a) if method == "auto" else None
        if why:
            lw.note(f"logdet: stochastic Lanczos quadrature ({self.SLQ['probes']} probes, {self.SLQ['steps']} "
                    f"steps, seed {self.SLQ['seed']}) since {why}")
            return lower_slq(lw, v, self.SLQ)
        if method == "cholesky":
            m, _ = leaf_matrix(lw, a)
            lw.note("logdet: Cholesky (method=cholesky)")
            return logdet_matrix(lw, m, frozenset({"psd"}), None)
        how = direct_method(lw, a, "auto")
        if how:
            lw.note(f"logdet: {how}")
        return leaf_logdet(lw, a)

    def dense_flops(self, g, v, dense):         # factor the matrix (once), sum n logs
        a = g[v].operands[0]
        how = dense.factorization(a)
        t = g.type(a)
        return dense.factor(a, how) + (0 if how == "orthogonal" else t.cols * sym_prod(t.batch))


@register
class DiagOf(Kind):
    """`diag_of(A)`: the diagonal of a square operator, a vector [n] ([*batch, n] for a batched A)."""

    name = "diag_of"
    constructors = ("diag_of",)
    params = ("A",)
    produces = "tensor"
    examples = (
        "input W : [4, 4]\nexport y = diag_of(W)",
        "input W : [3, 2, 2]\nexport y = diag_of(blockdiag(W))",
        "input A : [2, 2]\ninput B : [3, 3]\ninput d : [6]\ninput U : [6, 2]\ninput V : [6, 2]\n"
        "export y = diag_of(2 * kron(A, B).T + diag(d) - lowrank(U, V))",
        "input A : [2, 2]\ninput U : [6, 3]\ninput V : [6, 3]\ninput B : [4, 4]\n"
        "export y = diag_of(blockdiag(A, B) @ lowrank(U, V) @ blockdiag(A, B))",
        "dim b = 2\ninput L : [b, b, b]\ninput R : [b, b, b]\nexport y = diag_of(monarch(L, R))",
        "input P : [4, 2]\ninput Q : [2, 4]\ninput d : [4]\nexport y = diag_of(P @ Q + zeros(4, 4))\n"
        "export z = diag_of(zeros(4, 4)) + d",
    )

    def construct(self, b, args, kwargs, span):
        b.no_kwargs(self, kwargs)
        b.arity(self, args, span, 1, 1)
        return b.add(self.name, [b.op(args[0])], span=span)

    def infer(self, g, ops, attrs, span):
        t = _square_operand(g, ops, span, "diag_of", "diag_of is defined here for square operators only")
        return _scalar_type(g, t, span, (t.rows,))

    def dense(self, g, v, vals):
        return np.diagonal(vals[0], axis1=-2, axis2=-1).copy()

    def flops(self, g, v, k=None):
        a = g[v].operands[0]
        return leaf_flops(g, a)

    def lower(self, lw, v, x=None):
        return leaf_diagonal(lw, lw.src[v].operands[0])

    def dense_flops(self, g, v, dense):         # read off the matrix
        return 0


@register
class Trace(Kind):
    """`trace(A)`: the trace of a square operator (a scalar; [*batch] for a batched A)."""

    name = "trace"
    constructors = ("trace",)
    params = ("A",)
    options = ("method", "probes", "seed")
    produces = "tensor"
    HUTCHINSON = {"probes": 10, "seed": 0}
    examples = (
        "input W : [4, 4]\nexport y = trace(W)",
        "input W : [2, 3, 3]\nexport y = trace(W)",
        "input A : [2, 2]\ninput B : [3, 3]\ninput W : [2, 3, 3]\ninput U : [6, 2]\ninput V : [6, 2]\n"
        "export y = trace(kron(A, B) - 0.5 * blockdiag(W) + lowrank(U, V).T)",
        "input A : [4, 2]\ninput B : [2, 4]\ninput U : [4, 2]\ninput V : [4, 2]\n"
        "export y = trace(A @ B @ lowrank(U, V))\nexport z = trace(A @ B)",
        "dim n = 6\ninput V : [n, 2]\ninput c : [n]\nexport y = trace(householder(V) + circulant(c))",
        "dim n\ninput A : [2, 2]\ninput B : [3, 3]\ninput W : [n, n]\n"
        "export y = trace(blockdiag(A, B))\nexport z = trace(W - eye(n))",
        "dim n = 7\ninput W : [n, n]\nexport y = trace(W @ W.T + eye(n), method=hutchinson, probes=3, seed=2)",
    )

    def construct(self, b, args, kwargs, span):
        b.arity(self, args, span, 1, 1)
        attrs = _estimator(b, self, kwargs, ("exact", "hutchinson"), "hutchinson", self.HUTCHINSON, span)
        return b.add(self.name, [b.op(args[0])], attrs, span=span)

    def infer(self, g, ops, attrs, span):
        t = _square_operand(g, ops, span, "trace", "trace is defined here for square operators only")
        if attrs.get("method") == "hutchinson":
            _stochastic_needs(g, ops, attrs, span, "trace(A, method=hutchinson)")
        return _scalar_type(g, t, span)

    def dense(self, g, v, vals):
        if g[v].attrs.get("method") == "hutchinson":
            return hutchinson_np(vals[0], g[v].attrs)
        return np.trace(vals[0], axis1=-2, axis2=-1)

    def flops(self, g, v, k=None):
        a = g[v].operands[0]
        return leaf_flops(g, a) + g.type(a).rows

    def as_written(self, g, v):
        return g[v].attrs.get("method") == "hutchinson"

    def lower(self, lw, v, x=None):
        if lw.src[v].attrs.get("method") == "hutchinson":
            return lower_hutchinson(lw, v)
        return lw.prim("sum", leaf_diagonal(lw, lw.src[v].operands[0]), axis=-1)

    def dense_flops(self, g, v, dense):         # add the n numbers of the diagonal
        t = g.type(g[v].operands[0])
        return t.cols * sym_prod(t.batch)


@register
class Materialize(Kind):
    """`dense(A)`: the matrix of operator A, a tensor [m, n] (A applied to the identity)."""

    name = "materialize"
    constructors = ("dense",)
    params = ("A",)
    produces = "tensor"
    examples = (
        "input A : [2, 3]\ninput B : [3, 2]\nexport y = dense(kron(A, B))",
        "input U : [4, 2]\ninput V : [3, 2]\ninput x : [3, 2]\nexport y = dense(lowrank(U, V)) @ x",
        "input W : [3, 4]\nexport y = dense(W)",
    )

    def construct(self, b, args, kwargs, span):
        b.no_kwargs(self, kwargs)
        b.arity(self, args, span, 1, 1)
        return b.add(self.name, [b.op(args[0])], span=span)

    def infer(self, g, ops, attrs, span):
        t = op_type(g, ops[0], span, "dense's operand")
        return TensorType(tuple(t.batch) + (t.rows, t.cols), t.dtype or default_dtype(g), t.props)

    def dense(self, g, v, vals):
        return vals[0]

    def flops(self, g, v, k=None):
        a = g[v].operands[0]
        return leaf_flops(g, a)

    def lower(self, lw, v, x=None):
        return materialize(lw, lw.src[v].operands[0])

    def dense_flops(self, g, v, dense):         # the matrix is given
        return 0


ASSUMABLE = ("psd", "symmetric", "orthogonal", "lower", "upper", "diagonal", "invertible")


@register
class Assume(Kind):
    """`assume(A, psd, ...)`: A itself, with properties the checker cannot infer from its structure.

    A promise, not a check: `inv(assume(W @ W.T + eye(n), psd))` is solved by Cholesky, and a
    matrix that is not positive definite then raises SingularError at run time.  Properties:
    psd, symmetric, orthogonal, lower, upper, diagonal, invertible."""

    name = "assume"
    constructors = ("assume",)
    params = ("A",)
    arity = (2, None)
    examples = (
        "dim n = 5\ninput W : [n, n]\ninput x : [n, 2]\nlet S = assume(W @ W.T + eye(n), psd)\n"
        "export y = inv(S) @ x\nexport z = logdet(S)",
        "input W : [4, 4]\ninput x : [4, 3]\nexport y = inv(assume(W + 3 * eye(4), invertible).T) @ x",
    )

    def construct(self, b, args, kwargs, span):
        b.no_kwargs(self, kwargs)
        b.arity(self, args, span, 2, None)
        props = tuple(dict.fromkeys(b.word(a, ASSUMABLE, "property") for a in args[1:]))
        return b.add(self.name, [b.op(args[0])], {"props": props}, span=span)

    def infer(self, g, ops, attrs, span):
        t = _square_operand(g, ops, span, "assume", "the properties of assume(...) are those of square operators")
        props = set(t.props) | set(attrs["props"])
        if "psd" in props:
            props.add("symmetric")
        return OpType(t.rows, t.cols, t.batch, t.dtype, frozenset(props))

    def dense(self, g, v, vals):
        return vals[0]

    def flops(self, g, v, k):
        a = g[v].operands[0]
        return g.spec(a).flops(g, a, k)

    def lower(self, lw, v, x):
        return lw.apply(lw.src[v].operands[0], x)

    def matrix(self, lw, v, dtype):             # the matrix of its operand
        return materialize(lw, lw.src[v].operands[0], dtype)

    def transpose(self, g, v):
        n = g[v]
        props = tuple(flip(p) for p in n.attrs["props"])
        return g.add(self.name, [g.add("transpose", [n.operands[0]], span=n.span)], {"props": props}, span=n.span)

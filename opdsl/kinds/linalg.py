"""Inverses, log-determinants, diagonals and traces of operators (docs/linalg.md).

    inv(A)                       an operator: inv(A) @ b is a solve
    inv(A, method=cg, tol=1e-6, maxiter=100, precond=jacobi)
                                 preconditioned conjugate gradients (A symmetric positive definite)
    logdet(A)                    log |det A|, a scalar tensor ([*batch] for a batched A)
    diag_of(A)                   the diagonal, a vector [n]
    trace(A)                     the trace, a scalar tensor
    dense(A)                     the matrix of A, a tensor [m, n]

Structured operands are rewritten by the rule tables in passes/linalg_rules.py
(inv(A ⊗ B) = inv(A) ⊗ inv(B), Woodbury, logdet of a Kronecker product, ...).
What no rule rewrote is a *leaf*, lowered here: a dense (or batched-block)
operand is factored — Cholesky when it is known PSD, a triangular solve when
it is known lower/upper triangular, LU otherwise — and any other operand is
first materialized (applied to the identity) and then factored.  With
method=cg the operand is never materialized: each iteration applies it
through its own lowering (see Inv.lower_cg).

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

import numpy as np
import sympy as sp

from ..errors import ShapeError, TypeError_, written
from .base import Kind, OpType, TensorType, node_memo, op_type, register, sym_prod

METHODS = ("auto", "lu", "cholesky", "cg")
PRECONDS = ("none", "jacobi")
# properties inv(A) keeps from A (the inverse of a PSD / orthogonal / triangular matrix is one too)
INV_KEEPS = frozenset({"symmetric", "psd", "orthogonal", "diagonal", "permutation", "lower", "upper"})


# ---- structure: triangularity and provable singularity ----------------------------------

def _flip(tri):
    return {"lower": "upper", "upper": "lower"}.get(tri, tri)


def _all_same(vals):
    vals = list(vals)
    if not vals or None in vals:
        return None
    kinds = set(vals) - {"diagonal"}
    if not kinds:
        return "diagonal"
    return kinds.pop() if len(kinds) == 1 else None


def tensor_props(g, t):
    """The properties of matrix tensor t, through transposes (Lᵀ of a lower L is upper)."""
    n = g[t]
    if n.kind == "tT":
        return node_memo(g, ("tensor_props", t),
                         lambda: frozenset(_flip(p) for p in tensor_props(g, n.operands[0])))
    return g.type(t).props


def _tri_of(props):
    if "diagonal" in props:
        return "diagonal"
    for p in ("lower", "upper"):
        if p in props:
            return p
    return None


# How triangularity passes through each kind (beyond the declared properties).
TRIANGULAR_THROUGH = {
    "dense": lambda g, n: _tri_of(tensor_props(g, n.operands[0])),
    "transpose": lambda g, n: _flip(triangular(g, n.operands[0])),
    "scale": lambda g, n: triangular(g, n.operands[0]),
    "inv": lambda g, n: triangular(g, n.operands[0]),
    "kron": lambda g, n: _all_same(triangular(g, o) for o in n.operands),
    "compose": lambda g, n: _all_same(triangular(g, o) for o in n.operands),
    "sum": lambda g, n: _all_same(triangular(g, o) for o in n.operands),
    "blockdiag": lambda g, n: _all_same(triangular(g, o) for o in n.operands)
    if all(square(g, o) for o in n.operands) else None,
}


def triangular(g, v):
    """'diagonal', 'lower', 'upper' or None: what is known of operator v's triangular structure."""
    tri = _tri_of(g.type(v).props)
    if tri is not None:
        return tri
    fn = TRIANGULAR_THROUGH.get(g.kind(v))
    return node_memo(g, ("triangular", v), lambda: fn(g, g[v])) if fn is not None else None


def square(g, v):
    t = g.type(v)
    return g.dims.equal(t.rows, t.cols)


def _less(g, a, b):
    """a < b provably (both known)."""
    x, y = g.dims.value(a), g.dims.value(b)
    return x is not None and y is not None and x < y


def _singular_lowrank(g, n):
    r = g.type(n.operands[0]).shape[1]
    t = g.type(n.id)
    if _less(g, r, t.rows):
        return f"{written(n.span, 'lowrank(U, V)')} has rank at most {r} < {t.rows}"
    return None


def _singular_parts(what):
    def fn(g, n):
        for o in n.operands:
            if not square(g, o):
                return f"the {what} has a non-square factor {g.type(o)}, so its rank is below its size"
            why = singular_reason(g, o)
            if why:
                return why
        return None
    return fn


def _singular_compose(g, n):
    t = g.type(n.id)
    for o in n.operands[:-1]:
        if _less(g, g.type(o).cols, t.rows):
            return f"the product passes through {g.type(o).cols} < {t.rows} dimensions"
    for o in n.operands:
        if square(g, o):
            why = singular_reason(g, o)
            if why:
                return why
    return None


def _singular_matrix(g, n):
    """A matrix written as a product X @ Y that passes through fewer dimensions than its size."""
    t = g[n.operands[0]]
    if t.kind == "apply" and len(t.type.shape) >= 2 and _less(g, g.type(t.operands[0]).cols, t.type.shape[-1]):
        return f"the product passes through {g.type(t.operands[0]).cols} < {t.type.shape[-1]} dimensions"
    return None


# Operators whose structure makes them singular, by kind (a table, not a chain of ifs).
SINGULAR = {
    "dense": _singular_matrix,
    "zeros": lambda g, n: "it is the zero operator",
    "lowrank": _singular_lowrank,
    "scale": lambda g, n: "it is scaled by 0" if n.attrs["c"] == 0 else singular_reason(g, n.operands[0]),
    "kron": _singular_parts("Kronecker product"),
    "blockdiag": _singular_parts("block diagonal"),
    "compose": _singular_compose,
    "transpose": lambda g, n: singular_reason(g, n.operands[0]),
}


def singular_reason(g, v):
    """Why square operator v is singular by its structure alone, or None."""
    fn = SINGULAR.get(g.kind(v))
    return node_memo(g, ("singular", v), lambda: fn(g, g[v])) if fn is not None else None


def _square_operand(g, ops, span, fname, hint):
    t = op_type(g, ops[0], span, f"{fname}'s operand")
    if not g.dims.equal(t.rows, t.cols):
        raise ShapeError(f"{fname} needs a square operator, got {t}", span, hint=hint)
    return t


# ---- leaves: what no rule rewrote ------------------------------------------------------------

def eye_like(lw, n, dtype):
    return lw.prim("eye", n=n, dtype=dtype)


def _mat_sum(lw, a, dtype):
    parts = [materialize(lw, o, dtype) for o in lw.src[a].operands]
    out = parts[0]
    for p in parts[1:]:
        out = lw.add(out, p)
    return out


# Kinds whose matrix is cheaper to write down than to apply to the identity.
MATERIALIZE = {
    "dense": lambda lw, a, dtype: lw.tensor(lw.src[a].operands[0]),
    "sum": _mat_sum,
    "scale": lambda lw, a, dtype: lw.scale(materialize(lw, lw.src[a].operands[0], dtype), lw.src[a].attrs["c"]),
    "eye": lambda lw, a, dtype: eye_like(lw, lw.src.type(a).rows, dtype),
}


def materialize(lw, a, dtype="float32"):
    """Primitive id of operator a as a matrix [*batch, m, n]: a applied to the identity
    (of a's dtype; `dtype` for an operator without data of its own, such as perm)."""
    t = lw.src.type(a)
    fn = MATERIALIZE.get(lw.src.kind(a))
    if fn is not None:
        # once per operand: a sum shared by several users is written down once, not once per path
        done = lw.__dict__.setdefault("_materialized", {})
        key = (a, t.dtype or dtype)
        if key not in done:
            done[key] = fn(lw, a, t.dtype or dtype)
        return done[key]
    return lw.apply(a, eye_like(lw, t.cols, t.dtype or dtype))


def _dense_matrix(lw, a, dtype="float32"):
    """(matrix primitive, properties) for a leaf: the tensor of a dense operand, else a materialized one."""
    src = lw.src
    if src.kind(a) == "dense":
        w = src[a].operands[0]
        return lw.tensor(w), src.type(a).props | tensor_props(src, w)
    return materialize(lw, a, dtype), src.type(a).props


def _as_dtype(lw, x, dtype):
    return x if lw.dtype(x) == dtype else lw.prim("cast", x, dtype=dtype)


def solve_matrix(lw, m, props, x, method="auto", tri=None):
    """Primitive id of m⁻¹ x for a matrix primitive m [*b, n, n] with the given properties.

    One matrix and a batched x [*b, n, k] (a Kronecker factor applied to its mode) is one solve
    with the batch folded into the columns, x viewed as [n, b·k]: a batched solve would factor
    the same matrix once per batch entry."""
    ms, xs = lw.shape(m), lw.shape(x)
    ne = len(xs) - len(ms)              # leading dims of x that the matrix is broadcast over
    if ne > 0:
        nm = len(ms) - 2
        extra, mb, (n, k) = xs[:ne], xs[ne:-2], xs[-2:]
        perm = tuple(range(ne, ne + nm)) + (ne + nm,) + tuple(range(ne)) + (ne + nm + 1,)
        cols = lw.reshape(lw.permute(x, perm), tuple(mb) + (n, sym_prod(extra) * k))
        y = solve_matrix(lw, m, props, cols, method, tri)
        y = lw.reshape(y, tuple(mb) + (n,) + tuple(extra) + (k,))
        return lw.permute(y, tuple(sorted(range(len(perm)), key=lambda i: perm[i])))
    if method == "cholesky" or (method == "auto" and "psd" in props):
        return lw.prim("cho_solve", lw.prim("cholesky", m), x)
    if method == "auto" and tri in ("lower", "upper", "diagonal"):
        y = lw.prim("solve_triangular", m, x, upper=tri == "upper", checked=True)
        return lw.prim("checked", y)
    return lw.prim("solve", m, x)


def _inv_leaf(lw, v, a, x, method):
    m, props = _dense_matrix(lw, a, lw.dtype(x))
    dt = lw.dtype(m)
    y = solve_matrix(lw, m, props, _as_dtype(lw, x, dt), method, triangular(lw.src, a))
    return y


def _inv_blocks(lw, v, a, x, method):
    """blockdiag(W)⁻¹ x: one batched solve with the k blocks, x viewed as [*b, k, p, c]."""
    w = lw.tensor(lw.src[a].operands[0])
    kb, p, _ = lw.shape(w)
    s = lw.shape(x)
    b, c = s[:-2], s[-1]
    y = solve_matrix(lw, w, frozenset(), lw.reshape(_as_dtype(lw, x, lw.dtype(w)), b + (kb, p, c)), method)
    return lw.reshape(y, b + (kb * p, c))


LEAF_INV = {"blockdiag_batched": _inv_blocks}


def _logdet_matrix(lw, m, props, tri):
    if "psd" in props:
        ld = lw.prim("sum", lw.prim("unary", lw.prim("diagonal", lw.prim("cholesky", m)), fn="log"), axis=-1)
        return lw.scale(ld, 2.0)
    if tri is not None:
        d = lw.prim("unary", lw.prim("diagonal", m), fn="abs")
        return lw.prim("sum", lw.prim("unary", d, fn="log"), axis=-1)
    return lw.prim("slogdet", m)


def _logdet_leaf(lw, a):
    m, props = _dense_matrix(lw, a)
    return _logdet_matrix(lw, m, props, triangular(lw.src, a))


def _logdet_blocks(lw, a):
    return lw.prim("sum", lw.prim("slogdet", lw.tensor(lw.src[a].operands[0])), axis=-1)


LEAF_LOGDET = {"blockdiag_batched": _logdet_blocks}


def _diag_leaf(lw, a):
    m, _ = _dense_matrix(lw, a)
    return lw.prim("diagonal", m)


def _diag_blocks(lw, a):
    w = lw.tensor(lw.src[a].operands[0])
    kb, p, _ = lw.shape(w)
    return lw.reshape(lw.prim("diagonal", w), (kb * p,))


LEAF_DIAG = {"blockdiag_batched": _diag_blocks}


def diag_lower(lw, a):
    return LEAF_DIAG.get(lw.src.kind(a), _diag_leaf)(lw, a)


def _leaf_cost(g, a):
    """FLOPs to have operand a as a matrix: 0 for a dense one, n applications of it otherwise."""
    if g.kind(a) in ("dense", "blockdiag_batched"):
        return 0
    t = g.type(a)
    return g.spec(a).flops(g, a, t.cols)


def _factor_cost(g, a, props, tri):
    t = g.type(a)
    n = t.cols
    if g.kind(a) == "blockdiag_batched":
        kb, p, _ = g.type(g[a].operands[0]).shape
        return kb * sp.Rational(2, 3) * p ** 3
    if "psd" in props:
        return sp.Rational(1, 3) * n ** 3 * sym_prod(t.batch)
    if tri is not None:
        return 0
    return sp.Rational(2, 3) * n ** 3 * sym_prod(t.batch)


# ---- the kinds ---------------------------------------------------------------------------------

@register
class Inv(Kind):
    """`inv(A)`: the inverse of a square operator; `inv(A) @ b` solves A x = b.

    Options: method=auto (default: the structure's rules, then Cholesky / triangular / LU
    on a leaf), lu, cholesky, or cg (conjugate gradients, with tol=1e-6, maxiter=100 and
    precond=none|jacobi; A must be symmetric positive definite)."""

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
            else:
                cg_opts[k] = b.word(val, PRECONDS, "preconditioner")
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
        return _leaf_cost(g, a) + _factor_cost(g, a, props, tri) + solve

    def lower(self, lw, v, x):
        n = lw.src[v]
        method = n.attrs.get("method", "auto")
        if method == "cg":
            return lower_cg(lw, v, x)
        a = n.operands[0]
        return LEAF_INV.get(lw.src.kind(a), _inv_leaf)(lw, v, a, x, method)

    def transpose(self, g, v):
        n = g[v]
        ops = [g.add("transpose", [n.operands[0]], span=n.span)] + list(n.operands[1:])
        return g.add(self.name, ops, n.attrs, span=n.span)


def _scalar_type(g, t, span, extra=()):
    return TensorType(tuple(t.batch) + tuple(extra), t.dtype or "float32")


@register
class LogDet(Kind):
    """`logdet(A)`: log |det A| of a square operator (a scalar; [*batch] for a batched A)."""

    name = "logdet"
    constructors = ("logdet",)
    params = ("A",)
    produces = "tensor"
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
    )

    def construct(self, b, args, kwargs, span):
        b.no_kwargs(self, kwargs)
        b.arity(self, args, span, 1, 1)
        return b.add(self.name, [b.op(args[0])], span=span)

    def infer(self, g, ops, attrs, span):
        t = _square_operand(g, ops, span, "logdet", "the determinant is defined for square operators only")
        return _scalar_type(g, t, span)

    def dense(self, g, v, vals):
        return np.linalg.slogdet(vals[0])[1]

    def flops(self, g, v, k=None):
        a = g[v].operands[0]
        t = g.type(a)
        return _leaf_cost(g, a) + _factor_cost(g, a, t.props, triangular(g, a)) + t.rows * sym_prod(t.batch)

    def lower(self, lw, v, x=None):
        a = lw.src[v].operands[0]
        return LEAF_LOGDET.get(lw.src.kind(a), _logdet_leaf)(lw, a)


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
        return _leaf_cost(g, a)

    def lower(self, lw, v, x=None):
        return diag_lower(lw, lw.src[v].operands[0])


@register
class Trace(Kind):
    """`trace(A)`: the trace of a square operator (a scalar; [*batch] for a batched A)."""

    name = "trace"
    constructors = ("trace",)
    params = ("A",)
    produces = "tensor"
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
    )

    def construct(self, b, args, kwargs, span):
        b.no_kwargs(self, kwargs)
        b.arity(self, args, span, 1, 1)
        return b.add(self.name, [b.op(args[0])], span=span)

    def infer(self, g, ops, attrs, span):
        t = _square_operand(g, ops, span, "trace", "trace is defined here for square operators only")
        return _scalar_type(g, t, span)

    def dense(self, g, v, vals):
        return np.trace(vals[0], axis1=-2, axis2=-1)

    def flops(self, g, v, k=None):
        a = g[v].operands[0]
        return _leaf_cost(g, a) + g.type(a).rows

    def lower(self, lw, v, x=None):
        return lw.prim("sum", diag_lower(lw, lw.src[v].operands[0]), axis=-1)


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
        return TensorType(tuple(t.batch) + (t.rows, t.cols), t.dtype or "float32", t.props)

    def dense(self, g, v, vals):
        return vals[0]

    def flops(self, g, v, k=None):
        a = g[v].operands[0]
        return _leaf_cost(g, a)

    def lower(self, lw, v, x=None):
        return materialize(lw, lw.src[v].operands[0])


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

    def transpose(self, g, v):
        n = g[v]
        props = tuple(_flip(p) for p in n.attrs["props"])
        return g.add(self.name, [g.add("transpose", [n.operands[0]], span=n.span)], {"props": props}, span=n.span)


MATERIALIZE["assume"] = lambda lw, a, dtype: materialize(lw, lw.src[a].operands[0], dtype)


# ---- conjugate gradients -------------------------------------------------------------------------

class Body:
    """A primitive graph computing A @ p for the `cg` primitive: the loop body.

    `loop` is the arg node of p; `captures` are arg nodes standing for values computed
    outside the loop (the cg node's operands after b and the preconditioner), in order.
    Compared by identity: two cg nodes never share a body."""

    def __init__(self, graph, loop, root, captures):
        self.graph, self.loop, self.root, self.captures = graph, loop, root, tuple(captures)

    def __repr__(self):
        return f"<body: {len(self.graph.live([self.root]))} primitives>"


def lower_cg(lw, v, x):
    """inv(A, method=cg) @ x: a `cg` primitive whose body applies A through its own lowering."""
    from opdsl.passes.lower import Lowerer
    src = lw.src
    n = src[v]
    a = n.operands[0]
    body = Lowerer(src)
    body._span = lw._span
    # Tensors A needs (other than arguments) are computed once, outside the loop.
    captures, outer = [], []
    for t in src.live([a]):
        if src.spec(t).produces == "tensor" and src.kind(t) != "input":
            p = lw.tensor(t)
            arg = body.prim("arg", name=f"_c{len(captures)}", shape=lw.shape(p), dtype=lw.dtype(p), role="capture")
            body._tensors[t] = arg
            captures.append(arg)
            outer.append(p)
    dt = src.type(a).dtype or lw.dtype(x)
    x = _as_dtype(lw, x, dt)
    loop = body.prim("arg", name="_p", shape=lw.shape(x), dtype=dt, role="loop")
    root = body.apply(a, loop)
    body.out.exports["out"] = root
    live = set(body.out.live([root]))
    used = [(c, o) for c, o in zip(captures, outer) if c in live]
    ops = [x]
    if n.attrs.get("precond") == "jacobi":
        d = lw.prim("unary", lw.tensor(n.operands[1]), fn="recip")
        ops.append(lw.reshape(d, lw.shape(d) + (1,)))
    ops += [o for _, o in used]
    return lw.prim("cg", *ops, body=Body(body.out, loop, root, [c for c, _ in used]),
                   tol=float(n.attrs["tol"]), maxiter=int(n.attrs["maxiter"]),
                   precond=n.attrs.get("precond", "none"))

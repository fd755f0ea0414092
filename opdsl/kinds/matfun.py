"""Matrix functions of operators: pow, sqrt, exp, log (docs/matfun.md).

    pow(A, p, eps=0, precision=float64)   A^p; sqrt(A) = pow(A, 0.5)
    exp(A)                                e^A (any square A)
    log(A)                                the principal logarithm of a positive definite A
    eigvals(A), eigvecs(A)                tensors: the eigendecomposition of a symmetric A

An integer power without eps is a product (pow(A, 3) = A @ A @ A, pow(A, -2) = inv(A) @ inv(A),
pow(A, -1) = inv(A)), built when the program is read: it needs only a square A.  Any other power
and log need A known positive semidefinite at compile time (declared `psd`, `assume(A, psd)`, or
derived: X Xᵀ, lowrank(U, U), kron / blockdiag of psd factors, c * eye(n) + a psd term with c > 0).

These are functions of the eigenvalues of A's symmetric part (A + Aᵀ)/2 (A itself when it is
symmetric; a gradient with respect to A is then the same from autograd and from finite
differences): with A = V diag(λ) Vᵀ, f(A) x = V (f(λ) ∘ (Vᵀ x)).  For
pow and log the eigenvalues are first clamped at the smallest normal number of the dtype (a psd
matrix's negative eigenvalues are rounding, and log 0 is not a number); with `eps` > 0 they are shifted as Distributed Shampoo does, λ ← λ − min(λ_min, 0) + eps,
before the power, which keeps an inverse root of a rank-deficient factor finite.  exp of a
symmetric operator uses its eigendecomposition, of a general one scaling and squaring (the `expm`
primitive).  `precision=float64` computes the eigendecomposition in float64 in a float32 program
(Distributed Shampoo does so for its factors).

Structure rules (this kind's `rules`, each with a soundness test in tests/test_matfun.py):
f(blockdiag(...)) = blockdiag(f(...)); f(diag(d)) = diag(f(d)); f(c * eye(n)) = f(c) * eye(n);
pow and log of a Kronecker product of psd factors distribute (log(A ⊗ B) = log A ⊗ I + I ⊗ log B);
pow(pow(A, a), b) = pow(A, a b); inv(pow(A, p)) = pow(A, −p); logdet(pow(A, p)) = p logdet(A);
exp(A ⊗ I + I ⊗ B) = exp(A) ⊗ exp(B); f(c I + U Uᵀ) through the r x r eigendecomposition of Uᵀ U
(matfun_lowrank: O(n r²), never n x n); f(Q diag(d) Qᵀ) = Q f(diag(d)) Qᵀ for an orthogonal Q.
Rules that regroup eigenvalues (Kronecker products, powers of powers, logdet) fire only without
eps: a shift of the whole spectrum is not a shift of each factor's.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ShapeError, TypeError_, written
from .base import CONSTRUCTORS, Kind, OpType, TensorType, op_type, register, sym_prod
from .linalg_analysis import psd, transposed
from .linalg_build import logdet, operator_form_rule, span_of, tscale
from .linalg_solve import leaf_flops, materialize
from .rule import As, Rule

FNS = ("pow", "exp", "log")
MAX_INT_POWER = 64           # pow(A, k) for an integer k is k applications of A (or of inv(A))
PSD_HINT = ("declare it: `input A : [n, n] psd`, or write assume(A, psd); X @ X.T, lowrank(U, U), kron and "
            "blockdiag of psd factors, and c * eye(n) + a psd term with c > 0 are known psd")


# ---- f on eigenvalues: the one definition the lowering, the dense meaning and the rules share ----

def eig_np(fn, p, eps, w):
    """f(λ) for eigenvalues w [..., n] (numpy): clamped or Shampoo-shifted first for pow and log."""
    if fn == "exp":
        return np.exp(w)
    if eps > 0:
        w = w + np.maximum(-w.min(axis=-1, keepdims=True), 0.0) + eps
    else:
        w = np.maximum(w, np.finfo(w.dtype).tiny)
    return np.log(w) if fn == "log" else np.power(w, p)


def eig_scalar(fn, p, eps, c):
    """f(c) for one number c (the eigenvalue of c * eye(n))."""
    return float(eig_np(fn, p, eps, np.array([float(c)]))[0])


def lower_eig(lw, fn, p, eps, w):
    """f(λ) as primitives, for eigenvalues w [..., n]."""
    if fn == "exp":
        return lw.prim("unary", w, fn="exp")
    if eps > 0:
        low = lw.prim("max", lw.scale(w, -1.0), axis=-1, keepdims=True)         # −λ_min
        w = lw.prim("shift", lw.add(w, lw.prim("unary", low, fn="relu")), c=float(eps))
    else:                            # max(λ, tiny): no log(0) (a singular psd matrix: 0^p is tiny^p)
        tiny = float(np.finfo(np.dtype(lw.dtype(w))).tiny)
        w = lw.prim("shift", lw.prim("unary", lw.prim("shift", w, c=-tiny), fn="relu"), c=tiny)
    logs = lw.prim("unary", w, fn="log")
    return logs if fn == "log" else lw.prim("unary", lw.scale(logs, float(p)), fn="exp")   # w^p, 0^p = 0 or inf


def sym_np(m):
    """The symmetric part (m + mᵀ) / 2 that the eigendecomposition reads (numpy)."""
    return 0.5 * (m + np.swapaxes(m, -1, -2))


def lower_eigh(lw, m):
    """The eigh primitive of the symmetric part of m: the same numbers for a symmetric m, and the
    gradient of a function of a symmetric matrix that autograd and finite differences agree on."""
    return lw.prim("eigh", lw.scale(lw.add(m, lw.swap(m)), 0.5))


def needs_psd(attrs) -> bool:
    return attrs["fn"] != "exp"


def symmetric(g, v) -> bool:
    """Whether operator v is known symmetric: declared, or psd (declared or by its structure)."""
    return "symmetric" in g.type(v).props or psd(g, v)


# ---- the kinds ------------------------------------------------------------------------------

class MatFun(Kind):
    """A function of a square operator's eigenvalues (see the module doc)."""

    fn = ""
    params = ("A",)
    options = ("eps", "precision")
    NEWTON = {"tol": 1e-6, "maxiter": 100}      # method=newton's defaults (Distributed Shampoo: 1e-6)

    def sample(self, n, tag):
        return None       # needs a psd operand: kept out of random compositions

    def construct(self, b, args, kwargs, span):
        b.arity(self, args, span, 1, 1)
        return self.build(b, b.op(args[0]), None, kwargs, span)

    def build(self, b, a, p, kwargs, span):
        attrs = {"fn": self.fn, "p": p, "eps": 0.0, "precision": None, "method": "eigh"}
        for key, val in kwargs.items():
            if key not in self.options:
                raise TypeError_(f"{self.constructors[0]}(...) has no option {key!r}", val.span,
                                 hint=f"options: {', '.join(self.options) or 'none'}")
        if "method" in kwargs:
            attrs["method"] = b.word(kwargs["method"], ("eigh", "newton"), "method")
        for key in ("tol", "maxiter"):
            if key in kwargs and attrs["method"] != "newton":
                raise TypeError_(f"the option {key!r} applies to method=newton only", kwargs[key].span)
        if attrs["method"] == "newton":
            root = -1.0 / p if p else 0.0
            if not (p < 0 and abs(root - round(root)) < 1e-9 and round(root) >= 1):
                raise TypeError_(f"method=newton computes inverse roots pow(A, -1/r) for an integer r >= 1, "
                                 f"got p = {p:g}", kwargs["method"].span, hint="use method=eigh (the default)")
            attrs["root"] = int(round(root))
            attrs.update(self.NEWTON)
            if "tol" in kwargs:
                attrs["tol"] = float(b.num(kwargs["tol"]))
                if not attrs["tol"] > 0:
                    raise TypeError_(f"tol must be positive, got {attrs['tol']:g}", kwargs["tol"].span)
            if "maxiter" in kwargs:
                m = b.num(kwargs["maxiter"])
                if float(m) != int(m) or int(m) < 1:
                    raise TypeError_(f"maxiter must be a positive integer, got {m}", kwargs["maxiter"].span)
                attrs["maxiter"] = int(m)
        if "eps" in kwargs:
            attrs["eps"] = float(b.num(kwargs["eps"]))
            if not (attrs["eps"] >= 0 and math.isfinite(attrs["eps"])):
                raise TypeError_(f"eps must be a number >= 0, got {attrs['eps']:g}", kwargs["eps"].span)
        if "precision" in kwargs:
            attrs["precision"] = b.word(kwargs["precision"], ("float64",), "precision")
        if needs_psd(attrs) and not psd(b.g, a):
            # checked where the program says it, not in the shape rule: a rewrite may drop what
            # made the operand known psd (an assume around a diagonal) and keep the meaning
            what = "log(A)" if attrs["fn"] == "log" else f"pow(A, {attrs['p']:g})"
            raise TypeError_(f"{what} needs A known positive semidefinite at compile time; "
                             f"A = {written(b.g[a].span, 'this operand')} is not", span, hint=PSD_HINT)
        return b.add("matfun", [a], attrs, span=span)


@register
class MatFunNode(Kind):
    """The node every matrix function builds: attrs fn (pow, exp, log), p, eps, precision."""

    name = "matfun"
    examples = (
        "dim n = 5\ninput W : [n, n]\ninput x : [n, 2]\nlet A = W @ W.T + eye(n)\n"
        "export y = pow(A, -0.25) @ x\nexport z = sqrt(A) @ x\nexport w = log(A) @ x\nexport v = exp(A) @ x",
        "dim n = 4\ninput W : [n, n]\ninput x : [n, 3]\nexport y = exp(W) @ x\nexport z = exp(0.5 * W.T) @ x",
        "dim n = 6\ninput X : [n, 2]\ninput x : [n, 2]\n"
        "export y = pow(X @ X.T, -0.5, eps=0.01) @ x\nexport z = pow(X @ X.T, 1.5, precision=float64) @ x",
        "input W : [2, 4, 4]\ninput x : [4, 3]\nexport y = pow(W @ W.T + 0.5 * eye(4), 1.5) @ x",
        "dim n = 4\ninput A : [n, n]\ninput x : [n, 2]\n"
        "export y = pow(A, 3) @ x\nexport z = pow(3 * eye(n) + A, -2) @ x\nexport w = pow(A, 0) @ x",
        "input A : [3, 3]\ninput B : [2, 2]\ninput x : [6, 2]\nexport y = exp(kron(A, eye(2)) + kron(eye(3), B)) @ x",
        "input P : [3, 3]\ninput Q : [2, 2]\ninput x : [6, 2]\n"
        "export y = log(kron(P @ P.T + eye(3), Q @ Q.T + eye(2))) @ x",
    )

    def infer(self, g, ops, attrs, span):
        t = op_type(g, ops[0], span, f"{attrs['fn']}'s operand")
        if not g.dims.equal(t.rows, t.cols):
            raise ShapeError(f"{attrs['fn']}(A) needs a square operator, got {t}", span)
        props = {"symmetric"} if symmetric(g, ops[0]) else set()
        if attrs["fn"] != "log" and props:
            props.add("psd")                          # λ^p ≥ 0 and e^λ > 0
        if attrs["fn"] == "exp" or attrs["eps"] > 0:
            props.add("invertible")
        return OpType(t.rows, t.cols, t.batch, t.dtype, frozenset(props))

    def dense(self, g, v, vals):
        a = g[v].attrs
        m = vals[0]
        if a["fn"] == "exp" and not symmetric(g, g[v].operands[0]):
            import scipy.linalg
            return scipy.linalg.expm(m) if m.ndim == 2 else np.stack([scipy.linalg.expm(x) for x in m.reshape(
                (-1,) + m.shape[-2:])]).reshape(m.shape)
        if a.get("method") == "newton":           # what the iteration converges to: (A + eps I)^p
            m, a = m + a["eps"] * np.eye(m.shape[-1]), {**a, "eps": 0.0}
        w, q = np.linalg.eigh(sym_np(m))
        return (q * eig_np(a["fn"], a["p"], a["eps"], w)[..., None, :]) @ np.swapaxes(q, -1, -2)

    def flops(self, g, v, k):
        a = g[v].operands[0]
        t = g.type(a)
        n = t.rows
        return leaf_flops(g, a) + sym_prod(t.batch) * (10 * n ** 3 + 4 * n * n * k)

    def lower(self, lw, v, x):
        n = lw.src[v]
        a = n.attrs
        dtype = lw.dtype(x) if lw.dtype(x) in ("float32", "float64") else "float32"
        if a.get("method") != "newton" and a["precision"] is None:    # the operand's own eigendecomposition
            y = lw.src.spec(n.operands[0]).leaf_function(
                lw, n.operands[0], lambda lw_, w: lower_eig(lw_, a["fn"], a["p"], a["eps"], w), x)
            if y is not None:
                return y
        m = materialize(lw, n.operands[0], dtype)
        if a["fn"] == "exp" and not symmetric(lw.src, n.operands[0]):
            return lw.matmul(lw.prim("expm", m), x)
        work = "float64" if a["precision"] == "float64" else lw.dtype(m)
        if lw.dtype(m) != work:
            m = lw.prim("cast", m, dtype=work)
        if a.get("method") == "newton":            # A^(−1/r) by matrix products, then applied
            r = lw.prim("invroot_newton", m, root=a["root"], eps=a["eps"], tol=a["tol"], maxiter=a["maxiter"])
            if lw.dtype(r) != lw.dtype(x):
                r = lw.prim("cast", r, dtype=lw.dtype(x))
            return lw.matmul(r, x)
        e = lower_eigh(lw, m)
        rows = lw.shape(m)[-1]
        w = lw.prim("slice", e, axis=-2, start=0, stop=1)                        # [..., 1, n]
        q = lw.prim("slice", e, axis=-2, start=1, stop=rows + 1)                   # [..., n, n]
        f = lw.swap(lower_eig(lw, a["fn"], a["p"], a["eps"], w))                  # [..., n, 1]
        if lw.dtype(f) != lw.dtype(x):
            q, f = (lw.prim("cast", t, dtype=lw.dtype(x)) for t in (q, f))
        s = lw.shape(x)
        if lw.dims.hinted(sym_prod(s[:-2]) * s[-1]) > lw.dims.hinted(rows):
            # more columns than rows: f(A) = V f(Λ) Vᵀ once (2n³), then one product (2n²k), not 4n²k
            return lw.matmul(lw.matmul(q, lw.mul(f, lw.swap(q))), x)
        return lw.matmul(q, lw.mul(f, lw.matmul(lw.swap(q), x)))

    def _dense_how(self, g, v):
        a = g[v].attrs
        return "expm" if a["fn"] == "exp" and not symmetric(g, g[v].operands[0]) else "eigh"

    def dense_apply_flops(self, g, v, k, dense):   # a dense code decomposes the matrix, then V f(Λ) Vᵀ x
        t = g.type(v)
        return dense.factor(g[v].operands[0], self._dense_how(g, v)) + 4 * t.rows * t.cols * k * sym_prod(t.batch)

    def dense_flops(self, g, v, dense):         # its matrix, when needed: decompose, then V f(Λ) Vᵀ
        t = g.type(v)
        if not dense.needs_matrix(v):
            return 0
        return dense.factor(g[v].operands[0], self._dense_how(g, v)) + 2 * t.rows ** 3 * sym_prod(t.batch)

    def transpose(self, g, v):                 # f(A)ᵀ = f(Aᵀ)
        n = g[v]
        return g.add(self.name, [g.add("transpose", [n.operands[0]], span=n.span)], n.attrs, span=n.span)



class Pow(MatFun):
    """`pow(A, p, eps=0, precision=float64, method=eigh|newton, tol=1e-6, maxiter=100)`: A^p (an integer
    p without options: a product); method=newton: the coupled Newton iteration for p = −1/r."""

    constructors = ("pow",)
    params = ("A", "p")
    options = ("eps", "precision", "method", "tol", "maxiter")
    fn = "pow"

    def construct(self, b, args, kwargs, span):
        b.arity(self, args, span, 2, 2)
        a = b.op(args[0])
        p = float(b.num(args[1]))
        if not math.isfinite(p):
            raise TypeError_(f"pow(A, p) needs a finite power, got {p}", args[1].span)
        if p.is_integer() and not kwargs:
            return integer_power(b, a, int(p), args[1].span, span)
        return self.build(b, a, p, kwargs, span)


def integer_power(b, a, k, pspan, span):
    """pow(A, k) for an integer k: k applications of A, or of inv(A) when k < 0 (eye for k = 0)."""
    t = b.g.type(a)
    if not getattr(t, "is_op", False) or not b.g.dims.equal(t.rows, t.cols):
        raise ShapeError(f"pow(A, {k}) needs a square operator, got {t}", span)
    if abs(k) > MAX_INT_POWER:
        raise TypeError_(f"pow(A, {k}): integer powers are products of |k| factors, at most {MAX_INT_POWER}",
                         pspan, hint="a large power of a psd matrix: write pow(A, k, eps=0) (eigendecomposition)")
    if k == 0:
        return b.add("eye", [], {"n": t.rows}, span=span)
    f = a if k > 0 else b.add("inv", [a], {"method": "auto"}, span=span)
    return f if abs(k) == 1 else b.add("compose", [f] * abs(k), span=span)


class _Sqrt(MatFun):
    """`sqrt(A, eps=0, precision=float64)` = pow(A, 0.5) (a constructor only; builds a matfun node)."""

    constructors = ("sqrt",)
    fn = "pow"

    def construct(self, b, args, kwargs, span):
        b.arity(self, args, span, 1, 1)
        return self.build(b, b.op(args[0]), 0.5, kwargs, span)


class _Exp(MatFun):
    """`exp(A, precision=float64)`: the matrix exponential."""

    constructors = ("exp",)
    fn = "exp"
    options = ("precision",)


class _Log(MatFun):
    """`log(A, eps=0, precision=float64)`: the principal logarithm of a positive definite A."""

    constructors = ("log",)
    fn = "log"


# Constructors only (like the feature maps): each builds a `matfun` node, the one registry entry.
for _k in (Pow(), _Sqrt(), _Exp(), _Log()):
    CONSTRUCTORS[_k.constructors[0]] = _k


@register
class EigFun(Kind):
    """`eigfun(d)`: f applied to the entries of d [..., n] as to eigenvalues (the clamp or the shift
    over the last axis included); what f(diag(d)) becomes.  No constructor."""

    name = "eigfun"
    produces = "tensor"
    examples = ("dim n = 5\ninput d : [n]\ninput x : [n, 2]\nexport y = pow(assume(diag(d), psd), 0.5, eps=0.1) @ x\n"
                "export z = exp(diag(d)) @ x",)

    def infer(self, g, ops, attrs, span):
        t = g.type(ops[0])
        return TensorType(t.shape, t.dtype)

    def dense(self, g, v, vals):
        a = g[v].attrs
        return eig_np(a["fn"], a["p"], a["eps"], vals[0])

    def flops(self, g, v, k=None):
        return 6 * sym_prod(g.type(v).shape)

    def lower(self, lw, v, x=None):
        a = lw.src[v].attrs
        return lower_eig(lw, a["fn"], a["p"], a["eps"], lw.tensor(lw.src[v].operands[0]))


@register
class MatFunLowRank(Kind):
    """`f(c I + U Uᵀ)` (attrs fn, p, eps, c; operand U [n, r]): f(c) I + U W diag(h) Wᵀ Uᵀ with
    Uᵀ U = W diag(λ) Wᵀ and h = (f(c + λ) − f(c)) / λ; what the rule matfun-eye-lowrank builds.
    O(n r²) and an r x r eigendecomposition; never an n x n matrix."""

    name = "matfun_lowrank"
    examples = ("dim n = 7\ninput U : [n, 2]\ninput x : [n, 3]\n"
                "export y = pow(0.5 * eye(n) + lowrank(U, U), -0.5) @ x\nexport z = log(eye(n) + lowrank(U, U)) @ x\n"
                "export w = exp(-2 * eye(n) + lowrank(U, U)) @ x\n"
                "export v = pow(0.1 * eye(n) + lowrank(U, U), -0.25, eps=0.01) @ x",)

    def infer(self, g, ops, attrs, span):
        n = g.type(ops[0]).shape[0]
        props = {"symmetric", "psd"} if attrs["fn"] != "log" else {"symmetric"}
        return OpType(n, n, (), g.type(ops[0]).dtype, frozenset(props | {"invertible"}))

    def _c(self, a):
        """The identity part's eigenvalue after the shift (c > 0 for pow and log: the shift is eps)."""
        return a["c"] + (a["eps"] if a["fn"] != "exp" else 0.0)

    def dense(self, g, v, vals):
        a = g[v].attrs
        u = vals[0]
        w, q = np.linalg.eigh(a["c"] * np.eye(u.shape[0]) + u @ u.T)
        return (q * eig_np(a["fn"], a["p"], a["eps"], w)[..., None, :]) @ q.T

    def flops(self, g, v, k):
        n, r = g.type(g[v].operands[0]).shape
        return 2 * n * r * r + 10 * r ** 3 + (4 * n * r + 2 * r * r + 2 * n) * k

    def lower(self, lw, v, x):
        a = lw.src[v].attrs
        u = lw.tensor(lw.src[v].operands[0])
        if lw.dtype(u) != lw.dtype(x):
            u = lw.prim("cast", u, dtype=lw.dtype(x))
        r = lw.shape(u)[-1]
        e = lw.prim("eigh", lw.matmul(lw.swap(u), u))                              # Uᵀ U = W Λ Wᵀ
        lam = lw.prim("slice", e, axis=-2, start=0, stop=1)                         # [1, r]
        uw = lw.matmul(u, lw.prim("slice", e, axis=-2, start=1, stop=r + 1))         # U W [n, r]
        c = self._c(a)
        fc = eig_scalar(a["fn"], a["p"], 0.0, c)
        lam = lw.prim("unary", lam, fn="relu")                                      # Uᵀ U is psd
        grow = lw.prim("shift", lower_eig(lw, a["fn"], a["p"], 0.0, lw.prim("shift", lam, c=c)), c=-fc)
        tiny = float(np.finfo(np.dtype(lw.dtype(lam))).tiny)
        h = lw.prim("div", grow, lw.prim("shift", lam, c=tiny))                     # (f(c + λ) − f(c)) / λ
        low = lw.matmul(uw, lw.mul(lw.swap(h), lw.matmul(lw.swap(uw), x)))
        return lw.add(lw.scale(x, fc), low)


# ---- structure rules ------------------------------------------------------------------------------

def _f(g, a, attrs, span, **change):
    return g.add("matfun", [a], {**attrs, **change}, span=span)


def _square(g, v):
    t = g.type(v)
    return g.dims.equal(t.rows, t.cols)


def _no_eps(g, m):
    return g[m["_"]].attrs["eps"] == 0


def _blockdiag(g, m):
    """f(blockdiag(A, B, ...)) = blockdiag(f(A), f(B), ...) (square blocks)."""
    xs = m["xs"]
    if not all(_square(g, x) for x in xs):
        return None
    a, span = g[m["_"]].attrs, span_of(g, m)
    return g.add("blockdiag", [_f(g, x, a, span) for x in xs], span=span)


def _blockdiag_batched(g, m):
    """f(blockdiag(W)) for W [k, n, n]: the k blocks as one batched operator."""
    a, span = g[m["_"]].attrs, span_of(g, m)
    blocks = _f(g, g.add("dense", [m["W"]], span=span), a, span)
    return g.add("blockdiag_batched", [g.add("materialize", [blocks], span=span)], span=span)


def _diag(g, m):
    """f(diag(d)) = diag(f(d)), entry by entry (with the same clamp or shift)."""
    a, span = g[m["_"]].attrs, span_of(g, m)
    return g.add("diag", [g.add("eigfun", [m["d"]], dict(a), span=span)], span=span)


def _eye(g, m):
    """f(c eye(n)) = f(c) eye(n)."""
    a = g[m["_"]].attrs
    c = g[m["S"]].attrs["c"] if "S" in m else 1.0
    value = eig_scalar(a["fn"], a["p"], a["eps"], c)
    if not math.isfinite(value):
        return None                   # 0^p with p < 0: leave it to the leaf (inf, as numpy)
    return g.add("scale", [m["E"]], {"c": value}, span=span_of(g, m))


def _kron_pow(g, m):
    """pow(A ⊗ B, p) = pow(A, p) ⊗ pow(B, p) for psd square factors (eigenvalues multiply)."""
    xs = m["xs"]
    if not all(_square(g, x) and psd(g, x) for x in xs):
        return None
    a, span = g[m["_"]].attrs, span_of(g, m)
    return g.add("kron", [_f(g, x, a, span) for x in xs], span=span)


def _kron_log(g, m):
    """log(A ⊗ B) = log A ⊗ I + I ⊗ log B for positive definite square factors."""
    xs = m["xs"]
    if not all(_square(g, x) and psd(g, x) for x in xs):
        return None
    a, span = g[m["_"]].attrs, span_of(g, m)
    eyes = [g.add("eye", [], {"n": g.type(x).rows}, span=span) for x in xs]
    terms = [g.add("kron", eyes[:i] + [_f(g, x, a, span)] + eyes[i + 1:], span=span) for i, x in enumerate(xs)]
    return g.add("sum", terms, span=span)


def _kron_sum_exp(g, m):
    """exp(A ⊗ I + I ⊗ B) = exp(A) ⊗ exp(B) (the two terms commute)."""
    a, b = m["A"], m["B"]
    if not (_square(g, a) and _square(g, b) and g.dims.equal(g[m["I"]].attrs["n"], g.type(b).rows)
            and g.dims.equal(g[m["J"]].attrs["n"], g.type(a).rows)):
        return None
    at, span = g[m["_"]].attrs, span_of(g, m)
    return g.add("kron", [_f(g, a, at, span), _f(g, b, at, span)], span=span)


def _pow_pow(g, m):
    """pow(pow(A, a), b) = pow(A, a b) for psd A (principal powers)."""
    inner = g[m["G"]].attrs
    if not (inner["fn"] == "pow" and inner["eps"] == 0 and psd(g, m["A"])) or "newton" in (
            inner.get("method"), g[m["_"]].attrs.get("method")):
        return None
    a, span = g[m["_"]].attrs, span_of(g, m)
    return _f(g, m["A"], a, span, p=a["p"] * inner["p"], precision=a["precision"] or inner["precision"])


def _inv_pow(g, m):
    """inv(pow(A, p)) = pow(A, −p) (also with eps: the same shifted eigenvalues)."""
    f = g[m["F"]].attrs
    if g[m["_"]].attrs.get("method", "auto") != "auto" or f.get("method") == "newton":
        return None                   # a positive power has no Newton iteration
    return _f(g, m["A"], f, span_of(g, m), p=-f["p"])


def _logdet_pow(g, m):
    """logdet(pow(A, p)) = p logdet(A)."""
    span = span_of(g, m)
    return tscale(g, logdet(g, m["A"], span), g[m["F"]].attrs["p"], span)


def _eye_plus_lowrank(g, m):
    """f(c I + U Uᵀ) (c > 0, or any c for exp) through the r x r eigendecomposition of Uᵀ U."""
    terms = g[m["S"]].operands
    if len(terms) != 2:
        return None
    a = g[m["_"]].attrs
    for e, lr in (terms, terms[::-1]):
        c, eye = (g[e].attrs["c"], g[e].operands[0]) if g[e].kind == "scale" else (1.0, e)
        if (g[eye].kind == "eye" and g[lr].kind == "lowrank" and g[lr].operands[0] == g[lr].operands[1]
                and (c > 0 or a["fn"] == "exp")):
            return g.add("matfun_lowrank", [g[lr].operands[0]], {**a, "c": float(c)}, span=span_of(g, m))
    return None


def _orthogonal_diag(g, m):
    """f(Q diag(d) Qᵀ) = Q f(diag(d)) Qᵀ for an orthogonal Q (its eigendecomposition is given)."""
    q, r = m["Q"], m["R"]
    if not ("orthogonal" in g.type(q).props and transposed(g, q, r)):
        return None
    a, span = g[m["_"]].attrs, span_of(g, m)
    return g.add("compose", [q, _f(g, m["D"], a, span), r], span=span)


def _fn_is(*fns):
    return lambda g, m: g[m["_"]].attrs["fn"] in fns


def _both(*guards):
    return lambda g, m: all(w(g, m) for w in guards)


MATFUN = "matfun"
RULES = (
    operator_form_rule(MATFUN),       # f(X @ Y), f(cW), f(Wᵀ) of tensors: the rules below see operators
    Rule("matfun-blockdiag", "f(blockdiag(A, B)) = blockdiag(f(A), f(B))", (MATFUN, ("blockdiag", "*xs")), _blockdiag),
    Rule("matfun-blockdiag-batched", "f(blockdiag(W)) = blockdiag(f(W[i]))", (MATFUN, ("blockdiag_batched", "W")),
         _blockdiag_batched),
    Rule("matfun-diag", "f(diag(d)) = diag(f(d))", (MATFUN, ("diag", "d")), _diag),
    Rule("matfun-assumed-diag", "f(assume(diag(d), ...)) = diag(f(d))", (MATFUN, ("assume", ("diag", "d"))), _diag),
    Rule("matfun-eye", "f(eye(n)) = f(1) eye(n)", (MATFUN, As("E", ("eye",))), _eye),
    Rule("matfun-scaled-eye", "f(c eye(n)) = f(c) eye(n)", (MATFUN, As("S", ("scale", As("E", ("eye",))))), _eye),
    Rule("pow-kron", "pow(A ⊗ B, p) = pow(A, p) ⊗ pow(B, p) (psd factors)", (MATFUN, ("kron", "*xs")), _kron_pow,
         where=_both(_fn_is("pow"), _no_eps)),
    Rule("log-kron", "log(A ⊗ B) = log A ⊗ I + I ⊗ log B (psd factors)", (MATFUN, ("kron", "*xs")), _kron_log,
         where=_both(_fn_is("log"), _no_eps)),
    Rule("exp-kron-sum", "exp(A ⊗ I + I ⊗ B) = exp(A) ⊗ exp(B)",
         (MATFUN, ("sum", ("kron", "A", As("I", ("eye",))), ("kron", As("J", ("eye",)), "B"))), _kron_sum_exp,
         where=_fn_is("exp")),
    Rule("pow-pow", "pow(pow(A, a), b) = pow(A, a b) (psd A)", (MATFUN, As("G", (MATFUN, "A"))), _pow_pow,
         where=_both(_fn_is("pow"), _no_eps)),
    Rule("inv-pow", "inv(pow(A, p)) = pow(A, -p)", ("inv", As("F", (MATFUN, "A"))), _inv_pow,
         where=lambda g, m: g[m["F"]].attrs["fn"] == "pow"),
    Rule("logdet-pow", "logdet(pow(A, p)) = p logdet(A)", ("logdet", As("F", (MATFUN, "A"))), _logdet_pow,
         where=lambda g, m: g[m["F"]].attrs["fn"] == "pow" and g[m["F"]].attrs["eps"] == 0),
    Rule("matfun-eye-lowrank", "f(c I + U Uᵀ) = f(c) I + U W diag((f(c + λ) − f(c)) / λ) Wᵀ Uᵀ, Uᵀ U = W Λ Wᵀ",
         (MATFUN, As("S", ("sum", "*xs"))), _eye_plus_lowrank),
    Rule("matfun-orthogonal", "f(Q D Qᵀ) = Q f(D) Qᵀ (Q orthogonal, D diagonal)",
         (MATFUN, ("compose", "Q", As("D", ("diag", "d")), "R")), _orthogonal_diag),
)
MatFunNode.rules = RULES

"""The feature maps of kernelized attention (kinds/attention.py): φ in D⁻¹ φ(Q) φ(K)ᵀ.

- `elu1`, `relu`, `identity`: elementwise (a unary primitive each).
- `favor(m, seed)`: Performer FAVOR+ positive orthogonal random features, drawn at compile time.
- `hedgehog(W)`: learnable, softmax([x W, −x W]) over the 2m features.

Here: the values `favor(m, seed)` and `hedgehog(W)` of the language (written inside
`feature=`), their numpy meaning (float64, no stabilizers: the dense reference) and their
lowering to primitives (with the stabilizers FAVOR+ needs when normalized).
"""
from __future__ import annotations

import math

import numpy as np
import sympy as sp

from ..errors import TypeError_
from ..primitives import UNARY, const_value
from .base import CONSTRUCTORS, Kind, Val

ELEMENTWISE = ("elu1", "relu", "identity")
FEATURES = ELEMENTWISE + ("favor", "hedgehog")
FAVOR_HEADROOM = 40.0         # key features are at most exp(40) (see _favor)


# ---- feature maps as values: favor(m, seed), hedgehog(W) ----------------------

class FeatureMap(Kind):
    """A feature map written as a call inside `feature=`; not an operator.

    Entered in CONSTRUCTORS only (so the language can call it), not in REGISTRY:
    it never becomes a graph node of its own.  construct returns a Val tagged
    "feature" that attention(...) reads.
    """

    produces = "feature"
    usage = ""


# Limits of favor(m, seed): its [m, d] features are drawn at compile time (m/d QRs of d x d).
FAVOR_MAX_M = 65536
FAVOR_MAX_D = 4096

# The FAVOR+ random features: m rows of blocks of d x d orthogonal matrices (QR of Gaussian
# draws with the signs of diag(R) fixed, so each row is uniform on the sphere), each row rescaled
# to the norm of a Gaussian vector: every row is N(0, I).  Lowered as a `const` primitive whose
# expression is ORF_NUMPY_EXPR, so generated code rebuilds exactly these numbers from the seed
# (tests/test_families_attention_conv.py checks it); no backend knows about FAVOR.
ORF_NUMPY_EXPR = ("(lambda r: np.concatenate([(lambda qr: (qr[0] * np.sign(np.diag(qr[1]))).T)"
                  "(np.linalg.qr(r.standard_normal(({d}, {d})))) for _ in range({blocks})])[:{m}] "
                  "* np.linalg.norm(r.standard_normal(({m}, {d})), axis=1)[:, None])(np.random.default_rng({seed}))")


def orthogonal_features(m: int, d: int, seed: int) -> np.ndarray:
    """The [m, d] FAVOR+ feature matrix drawn from `seed` (float64)."""
    r = np.random.default_rng(int(seed))
    blocks = -(-int(m) // int(d))
    rows = []
    for _ in range(blocks):   # Q R of a Gaussian matrix, signs fixed by diag(R): Q is Haar-distributed
        q, rr = np.linalg.qr(r.standard_normal((int(d), int(d))))
        rows.append((q * np.sign(np.diag(rr))).T)
    w = np.concatenate(rows)[:int(m)]
    return w * np.linalg.norm(r.standard_normal((int(m), int(d))), axis=1)[:, None]


def orf_expr(m, d, seed) -> str:
    """ORF_NUMPY_EXPR for concrete sizes: the `const` expression of the features."""
    return ORF_NUMPY_EXPR.format(m=int(m), d=int(d), seed=int(seed), blocks=-(-int(m) // int(d)))


class Favor(FeatureMap):
    name = "favor"
    constructors = ("favor",)
    params = ("m", "seed")
    usage = "favor(m, seed)"
    doc = "FAVOR+ positive orthogonal random features: favor(m, seed=0)"

    def construct(self, b, args, kwargs, span):
        b.no_kwargs(self, kwargs)
        b.arity(self, args, span, 1, 2)
        m = b.num(args[0])
        seed = b.num(args[1]) if len(args) > 1 else 0
        if float(m) != int(m) or int(m) <= 0:
            raise TypeError_(f"favor(m, seed) needs a positive integer number of features m, got {m}", args[0].span)
        if float(seed) != int(seed) or int(seed) < 0:
            raise TypeError_(f"favor(m, seed) needs a non-negative integer seed, got {seed}", args[1].span)
        if int(m) > FAVOR_MAX_M:     # the features are drawn at compile time (QR of d x d blocks)
            raise TypeError_(f"favor(m, seed) supports at most {FAVOR_MAX_M} features, got {m}", args[0].span)
        return Val("feature", ("favor", {"m": int(m), "seed": int(seed)}, ()), span)


class Hedgehog(FeatureMap):
    name = "hedgehog"
    constructors = ("hedgehog",)
    params = ("W",)
    usage = "hedgehog(W)"
    doc = "Hedgehog learnable features: softmax([x W, -x W]) with W [..., d, m]"

    def construct(self, b, args, kwargs, span):
        b.no_kwargs(self, kwargs)
        b.arity(self, args, span, 1, 1)
        w = b.tensor(args[0], range(2, 9), "hedgehog's W")
        return Val("feature", ("hedgehog", {}, (w,)), span)


for _f in (Favor(), Hedgehog()):
    CONSTRUCTORS[_f.constructors[0]] = _f


# ---- numpy meaning of the feature maps (float64, no stabilizers) ------------------

def feature_np(attrs, x, extra):
    f = attrs["feature"]
    if f in ELEMENTWISE:
        return x if f == "identity" else UNARY[f](x)
    if f == "favor":
        d = x.shape[-1]
        w = orthogonal_features(attrs["m"], d, attrs["seed"])
        xs = x * _xscale(attrs, d)
        e = xs @ w.T - 0.5 * np.sum(xs * xs, axis=-1, keepdims=True)
        return np.exp(e) / math.sqrt(attrs["m"])
    p = x @ extra[0]                                   # hedgehog
    cat = np.concatenate([p, -p], axis=-1)
    e = np.exp(cat - cat.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _xscale(attrs, d):
    s = attrs.get("xscale")
    return float(d) ** -0.25 if s is None else s


def n_features(g, attrs, ops, d):
    f = attrs["feature"]
    if f in ELEMENTWISE:
        return d
    if f == "favor":
        return sp.Integer(attrs["m"])
    return 2 * g.type(ops[2]).shape[-1]


def lower_features(lw, attrs, x, extra, role):
    """φ(x) for x [..., L, d] as primitives; `role` is "query" or "key" (FAVOR's stabilizers)."""
    f = attrs["feature"]
    if f == "identity":
        return x
    if f in ELEMENTWISE:
        return lw.prim("unary", x, fn=f)
    if f == "favor":
        return _favor(lw, attrs, x, role)
    p = lw.matmul(x, extra[0])                                   # hedgehog: softmax([xW, -xW])
    cat = lw.prim("concat", p, lw.scale(p, -1.0), axis=-1)
    e = lw.prim("unary", lw.sub(cat, lw.prim("max", cat, axis=-1, keepdims=True)), fn="exp")
    return lw.prim("div", e, lw.prim("sum", e, axis=-1, keepdims=True))


def _favor(lw, attrs, x, role):
    """FAVOR+ features exp(ω x̃ − ‖x̃‖²/2), stabilized when normalized (the shifts cancel in D⁻¹).

    Queries: minus their own row maximum (each output row only ever sees its own query).
    Keys: minus one constant per batch entry, c = max(max_i e_i(k_0), max_i ‖ω_i‖²/2 − 40),
    from the first key only, so a causal output never depends on a later token.  Since
    e_i(k) = ωᵢᵀk̃ − ‖k̃‖²/2 = ‖ωᵢ‖²/2 − ‖k̃ − ωᵢ‖²/2 ≤ ‖ωᵢ‖²/2, every key feature is at
    most exp(40): no overflow, whatever the keys; the first key sets the scale otherwise.
    Not normalized, the features are the plain exp(...)/√m.
    """
    d = lw.dims.value(lw.shape(x)[-1])
    m, seed = attrs["m"], attrs["seed"]
    expr = orf_expr(m, d, seed)
    w = lw.prim("const", expr=expr, dtype=lw.dtype(x), name=f"favor_{m}x{d}_seed{seed}")
    xs = lw.scale(x, _xscale(attrs, d))
    proj = lw.matmul(xs, lw.swap(w))                                              # ω x̃: [..., L, m]
    if attrs["normalize"] and role == "query":     # −‖q̃‖²/2 is constant along the row: it cancels too
        return lw.prim("unary", lw.sub(proj, lw.prim("max", proj, axis=-1, keepdims=True)), fn="exp")
    half_sq = lw.scale(lw.prim("sum", lw.prim("unary", xs, fn="square"), axis=-1, keepdims=True), 0.5)
    if not attrs["normalize"]:
        return lw.scale(lw.prim("unary", lw.sub(proj, half_sq), fn="exp"), 1.0 / math.sqrt(m))
    floor = float(0.5 * np.max(np.sum(const_value(expr) ** 2, axis=1)) - FAVOR_HEADROOM)
    first = lw.prim("max", lw.prim("slice", proj, axis=-2, start=0, stop=1), axis=-1, keepdims=True)
    first = lw.sub(first, lw.prim("slice", half_sq, axis=-2, start=0, stop=1))  # max_i e_i(k_0): [..., 1, 1]
    c = lw.prim("shift", lw.prim("unary", lw.prim("shift", first, c=-floor), fn="relu"), c=floor)
    return lw.prim("unary", lw.sub(proj, lw.add(half_sq, c)), fn="exp")         # one pass over [L, m]

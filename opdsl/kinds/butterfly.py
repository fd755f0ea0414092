"""Butterfly matrices: log2(n) sparse stages of 2x2 twiddles, compiled to Monarch form.

Convention (Dao et al., ``butterfly_multiply`` with increasing stride):
T : [log2 n, n/2, 2, 2], n a power of 2.  Stage s (s = 0 .. log2 n - 1) has
stride t = 2**s.  It pairs index i0 with i1 = i0 + t for every i0 whose bit s
is 0; the p-th such pair (pairs numbered by increasing i0, i.e.
p = (i0 // 2t) * t + i0 % t) mixes them by the 2x2 matrix T[s, p]:

    y[i0] = T[s, p, 0, 0] x[i0] + T[s, p, 0, 1] x[i1]
    y[i1] = T[s, p, 1, 0] x[i0] + T[s, p, 1, 1] x[i1]

    butterfly(T) = B_{log2 n - 1} ··· B_1 B_0      (stage 0, stride 1, applied first)

Applying the stages one by one is log2(n) passes of 2x2 work over x: slower
than a dense matmul on CPU.  The lowering regroups them instead.  With
n = b1 b2, b1 = 2**ceil(log2(n)/2): stages 0 .. log2(b1) - 1 only mix indices
inside contiguous blocks of b1, so their product is blockdiag(R) with
R : [b2, b1, b1]; the remaining stages only mix the high part hi of
i = hi*b1 + lo, for each lo separately, so their product is
perm(b2, b1) · blockdiag(L) · perm(b1, b2) with L : [b1, b2, b2].  Together
butterfly(T) = monarch(L, R) (kinds/monarch.py).  L and R are stacks of
small dense butterflies, multiplied out at run time by recursive doubling
(elementwise products, O(n sqrt(n)) work once per call, independent of the
number of columns); then x goes through two batched matmuls: 2 n (b1 + b2) flops per
column instead of 2 n².
"""
from __future__ import annotations

import sympy as sp

import numpy as np

from ..errors import ShapeError
from .base import Kind, OpType, register, tensor_of_rank
from .monarch import monarch_apply, monarch_flops, monarch_t_apply


def stage_pairs(n: int, s: int):
    """(i0, i1) index arrays of stage s: the p-th pair is (i0[p], i0[p] + 2**s)."""
    st = 1 << s
    p = np.arange(n // 2)
    i0 = (p // st) * 2 * st + p % st
    return i0, i0 + st


def stage_matrix(t: np.ndarray, s: int) -> np.ndarray:
    """Dense stage s of twiddles t [log2 n, n/2, 2, 2]."""
    n = 2 * t.shape[1]
    out = np.zeros((n, n), dtype=np.result_type(t, np.float64))
    for p, (i0, i1) in enumerate(zip(*stage_pairs(n, s))):
        out[np.ix_([i0, i1], [i0, i1])] = t[s, p]
    return out


def butterfly_dense(t: np.ndarray) -> np.ndarray:
    """B_{L-1} ··· B_0 as a dense matrix: each stage applied to the rows of the running product
    (O(n²) per stage; tests check it against the product of the stage_matrix matrices)."""
    n = 2 * t.shape[1]
    out = np.eye(n)
    for s in range(t.shape[0]):
        i0, i1 = stage_pairs(n, s)
        a, b = out[i0], out[i1]
        tw = t[s]
        out = out.copy()
        out[i0] = tw[:, 0, 0, None] * a + tw[:, 0, 1, None] * b
        out[i1] = tw[:, 1, 0, None] * a + tw[:, 1, 1, None] * b
    return out


def split_levels(levels: int):
    """(log2 b1, log2 b2): the low stages form blocks of b1, the high ones blocks of b2."""
    lo = (levels + 1) // 2
    return lo, levels - lo


def double(lw, tz: int, f: int | None, nb: int, z: int, m: int) -> int:
    """One doubling step: nb * z butterflies of size m (f [nb, 2z, m, m], None when m = 1) and the
    next stage's twiddles tz [nb, z, a, j, b] (a, b < 2, j < m) give nb * z butterflies of size 2m:

        G[(a, j), (b, col)] = T[j, a, b] · F_b[j, col]      (F_0, F_1: the two halves' matrices)

    an elementwise product with broadcasting, returned as [nb, z, 2m, 2m]."""
    if f is None:                                      # size 1: the 2x2 twiddles are the matrices
        return lw.reshape(tz, (nb, z, 2, 2))
    f = lw.permute(lw.reshape(f, (nb, z, 2, m, m)), (0, 1, 3, 2, 4))   # [nb, z, j, b, col]
    f = lw.reshape(f, (nb, z, 1, m, 2, m))
    g = lw.mul(lw.reshape(tz, (nb, z, 2, m, 2, 1)), f)                   # [nb, z, a, j, b, col]
    return lw.reshape(g, (nb, z, 2 * m, 2 * m))


def stack_levels(lw, level_twiddles, nb: int, size: int) -> int:
    """nb independent butterflies of `size` multiplied out: level_twiddles[s] [nb, size/2, 2, 2]
    holds stage s of each (pairs numbered p = z*m + j as in the module docstring); returns
    [nb, size, size] by recursive doubling (`double`), one broadcast multiply per stage."""
    f = None
    for s, t in enumerate(level_twiddles):
        m = 2 ** s
        z = size // (2 * m)
        ts = lw.reshape(t, (nb, z, m, 2, 2))                           # [nb, z, j, a, b]
        tz = lw.permute(ts, (0, 1, 3, 2, 4)) if m > 1 else ts           # j has size 1 when m = 1
        f = double(lw, tz, f, nb, z, m)
    return lw.reshape(f, (nb, size, size))


def monarch_factors(lw, tw: int, levels: int):
    """The Monarch factors (L [b1, b2, b2], R [b2, b1, b1]) of butterfly(T), as primitive ids
    (L is None when n = 2).

    Both are stacks of small dense butterflies, multiplied out by `stack_levels`:
    * R: block c (indices c*b1 .. c*b1 + b1 - 1) sees stages 0 .. l1-1; at stage s its pairs are
      p = c*(b1/2) + p_local, so T[s] viewed [b2, b1/2, 2, 2] holds the b2 blocks' twiddles.
    * L: for each lo, the stages l1 + s' act on hi (i = hi*b1 + lo) as a butterfly of size b2
      with pairs p = p_local*b1 + lo, so T[l1 + s'] viewed [b2/2, b1, 2, 2] and transposed to
      [b1, b2/2, 2, 2] holds them.
    When b1 = b2 (log2 n even) the two stacks have one shape and are built together.
    """
    l1, l2 = split_levels(levels)
    b1, b2 = 2 ** l1, 2 ** l2

    def stage(s, shape):
        return lw.reshape(lw.prim("slice", tw, axis=0, start=s, stop=s + 1), shape)

    if l2 == 0:
        return None, stack_levels(lw, [stage(0, (1, 1, 2, 2))], 1, 2)
    if l1 == l2:
        b = b1
        tr = lw.reshape(lw.prim("slice", tw, axis=0, start=0, stop=l1), (l1, b, b // 2, 2, 2))
        tl = lw.reshape(lw.prim("slice", tw, axis=0, start=l1, stop=levels), (l1, b // 2, b, 2, 2))
        both = lw.prim("concat", tr, lw.permute(tl, (0, 2, 1, 3, 4)), axis=1)   # [l1, 2b, b/2, 2, 2]
        per_level = [lw.reshape(lw.prim("slice", both, axis=0, start=s, stop=s + 1), (2 * b, b // 2, 2, 2))
                     for s in range(l1)]
        f = stack_levels(lw, per_level, 2 * b, b)
        return (lw.prim("slice", f, axis=0, start=b, stop=2 * b),
                lw.prim("slice", f, axis=0, start=0, stop=b))
    wr = stack_levels(lw, [stage(s, (b2, b1 // 2, 2, 2)) for s in range(l1)], b2, b1)
    wl = stack_levels(lw, [lw.permute(stage(l1 + s, (b2 // 2, b1, 2, 2)), (1, 0, 2, 3)) for s in range(l2)],
                      b1, b2)
    return wl, wr


def _levels(g, t, span):
    """(levels, n) from the twiddle type, or a ShapeError for a user."""
    lv, half = g.dims.value(t.shape[0]), g.dims.value(t.shape[1])
    if lv is None or half is None:
        raise ShapeError(f"butterfly needs concrete sizes, got twiddles {t}", span,
                         hint="declare the dims with values (`dim n = 1024`) so the number of stages is known")
    n = 2 * half
    if n & (n - 1) or lv != n.bit_length() - 1:
        want = n.bit_length() - 1 if not n & (n - 1) else None
        raise ShapeError(
            f"butterfly twiddles must be [log2 n, n/2, 2, 2] with n a power of 2, got {t} (n = {n})",
            span, hint=(f"for n = {n} the first dim must be {want}" if want is not None
                        else "n = 2 * (second dim) must be a power of 2"))
    return lv, n


@register
class Butterfly(Kind):
    """`butterfly(T)`, T [log2 n, n/2, 2, 2]: B_{log2 n - 1} ··· B_0, stage s of stride 2**s."""

    name = "butterfly"
    constructors = ("butterfly",)
    params = ("T",)
    arity = (1, 1)
    examples = (
        "input T : [2, 2, 2, 2]\ninput x : [4, 3]\nexport y = butterfly(T) @ x",
        "input T : [3, 4, 2, 2]\ninput x : [8, 2]\nexport y = butterfly(T) @ x\nexport z = butterfly(T).T @ x",
        "dim n = 32\ninput T : [5, n / 2, 2, 2] float64\ninput x : [2, n, 3] float64\n"
        "export y = butterfly(T) @ x\nexport z = butterfly(T).T @ x",
        "input T : [1, 1, 2, 2]\ninput x : [2]\nexport y = butterfly(T) @ x",
        # compositions with kron, diag, lowrank and monarch
        "input T : [4, 8, 2, 2]\ninput A : [4, 4]\ninput B : [4, 4]\ninput d : [16]\ninput U : [16, 2]\n"
        "input V : [16, 2]\ninput L : [4, 4, 4]\ninput R : [4, 4, 4]\ninput x : [16, 3]\n"
        "export y = (butterfly(T) @ kron(A, B) + diag(d) @ butterfly(T).T + lowrank(U, V)) @ x\n"
        "export z = (monarch(L, R) @ butterfly(T)) @ x",
    )

    def sample(self, n, tag):
        if n < 2 or n & (n - 1):
            return None
        return f"input BT{tag} : [{n.bit_length() - 1}, {n // 2}, 2, 2]", f"butterfly(BT{tag})"

    def construct(self, b, args, kwargs, span):
        b.no_kwargs(self, kwargs)
        b.arity(self, args, span)
        t = b.tensor(args[0], (4,), "butterfly's twiddles T [log2 n, n/2, 2, 2]")
        return b.add(self.name, [t], {"transposed": False}, span=span)

    def infer(self, g, ops, attrs, span):
        t = tensor_of_rank(g, ops[0], (4,), span, "butterfly's twiddles T [log2 n, n/2, 2, 2]")
        if not (g.dims.equal(t.shape[2], 2) and g.dims.equal(t.shape[3], 2)):
            raise ShapeError(f"butterfly twiddles must be [log2 n, n/2, 2, 2] (2x2 matrices), got {t}", span)
        _, n = _levels(g, t, span)
        return OpType(sp.Integer(n), sp.Integer(n), (), t.dtype)

    def dense(self, g, v, vals):
        b = butterfly_dense(vals[0])
        return b.T if g[v].attrs.get("transposed") else b

    def flops(self, g, v, k):
        t = g.type(g[v].operands[0])
        lv, n = _levels(g, t, g[v].span)
        l1, l2 = split_levels(lv)
        b1, b2 = 2 ** l1, 2 ** l2
        build = 2 * n * (b1 + b2)                # the doubling products (tests: lowering shape)
        return build + monarch_flops((b1, b2, b2), (b2, b1, b1), k)

    def lower(self, lw, v, x):
        node = lw.src[v]
        t = lw.src.type(node.operands[0])
        lv, _ = _levels(lw.src, t, node.span)
        tw = lw.tensor(node.operands[0])
        wl, wr = monarch_factors(lw, tw, lv)
        if wl is None:                   # n = 2: one stage, R is the whole 2 x 2 matrix
            w = lw.reshape(wr, (2, 2))
            return lw.matmul(lw.swap(w) if node.attrs.get("transposed") else w, x)
        if node.attrs.get("transposed"):
            return monarch_t_apply(lw, wl, wr, x)
        return monarch_apply(lw, wl, wr, x)

    def transpose(self, g, v):
        n = g[v]
        return g.add(self.name, list(n.operands), {"transposed": not n.attrs.get("transposed")}, span=n.span)

"""Monarch matrices: two block-diagonal factors interleaved with stride permutations.

Convention (Dao et al. 2022, ``blockdiag_butterfly_multiply`` version 2), with
the stride permutation ``perm(m, n) = L(mn, m)`` of kinds/basic.py
(``y[i*n + j] = x[j*m + i]``):

    monarch(L, R) = perm(s, l) · blockdiag(L) · perm(l, r) · blockdiag(R)

    R : [k, q, p]   k blocks, each q x p (out x in)     n = k p   columns
    L : [l, s, r]   l blocks, each s x r                m = s l   rows
                                                         l r = k q (the middle size)

Read as index maps: x [n] is viewed as [k, p]; R's blocks give z [k, q];
z flattened and viewed as [r, l] is transposed to [l, r] (that is perm(l, r));
L's blocks give w [l, s]; w transposed to [s, l] and flattened is the result
(perm(s, l)).  In the square case L, R : [b, b, b] (n = b²) both permutations
are P = perm(b, b) = Pᵀ (transposing a b x b grid), so monarch(L, R) = P L Pᵀ R.

Lowering: two batched matmuls; the permutations are reshapes and one axis
permutation each, never materialized.

Rules (Monarch.rules): with square blocks, inv(monarch(L, R)) is the product of the inverses
of its factors in reverse order (two batched block solves and two permutations) and
logdet(monarch(L, R)) the sum of the blocks' log-determinants (the permutations contribute 0).
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError, written
from .base import Kind, OpType, join_dtype, register, tensor_of_rank
from .basic import stride_perm_index
from .blockdiag import block_diag
from .linalg_build import auto, inv, logdet, span_of, tadd, transpose
from .rule import As, Rule


def perm_matrix(m: int, n: int) -> np.ndarray:
    """Dense perm(m, n) = L(mn, m)."""
    return np.eye(m * n)[stride_perm_index(m, n)]


def monarch_dense(wl: np.ndarray, wr: np.ndarray) -> np.ndarray:
    """perm(s, l) · blockdiag(L) · perm(l, r) · blockdiag(R), every factor materialized."""
    l, s, r = wl.shape
    return perm_matrix(s, l) @ block_diag(list(wl)) @ perm_matrix(l, r) @ block_diag(list(wr))


def monarch_apply(lw, wl: int, wr: int, x: int) -> int:
    """Primitive id of monarch(L, R) @ x for primitive ids wl [l, s, r], wr [k, q, p], x [*b, n, c]."""
    l, s, r = lw.shape(wl)
    k, q, p = lw.shape(wr)
    sh = lw.shape(x)
    b, c = sh[:-2], sh[-1]
    nb = len(b)
    y = lw.matmul(wr, lw.reshape(x, b + (k, p, c)))            # [*b, k, q, c]  blockdiag(R)
    y = lw.reshape(y, b + (r, l, c))                           # the middle vector as [r, l]
    y = lw.permute(y, tuple(range(nb)) + (nb + 1, nb, nb + 2))  # [*b, l, r, c]  perm(l, r)
    z = lw.matmul(wl, y)                                       # [*b, l, s, c]  blockdiag(L)
    z = lw.permute(z, tuple(range(nb)) + (nb + 1, nb, nb + 2))  # [*b, s, l, c]  perm(s, l)
    return lw.reshape(z, b + (s * l, c))


def monarch_t_apply(lw, wl: int, wr: int, x: int) -> int:
    """monarch(L, R)ᵀ @ x = blockdiag(Rᵀ) · perm(r, l) · blockdiag(Lᵀ) · perm(l, s) @ x, x [*b, m, c]."""
    l, s, r = lw.shape(wl)
    k, q, p = lw.shape(wr)
    sh = lw.shape(x)
    b, c = sh[:-2], sh[-1]
    nb = len(b)
    y = lw.reshape(x, b + (s, l, c))
    y = lw.permute(y, tuple(range(nb)) + (nb + 1, nb, nb + 2))  # [*b, l, s, c]  perm(l, s)
    z = lw.matmul(lw.swap(wl), y)                              # [*b, l, r, c]  blockdiag(Lᵀ)
    z = lw.permute(z, tuple(range(nb)) + (nb + 1, nb, nb + 2))  # [*b, r, l, c]  perm(r, l)
    z = lw.reshape(z, b + (k, q, c))
    w = lw.matmul(lw.swap(wr), z)                              # [*b, k, p, c]  blockdiag(Rᵀ)
    return lw.reshape(w, b + (k * p, c))


def monarch_flops(lshape, rshape, cols):
    l, s, r = lshape
    k, q, p = rshape
    return 2 * (k * q * p + l * s * r) * cols


def _square_split(n: int):
    """(a, n // a) with a the smallest divisor >= 2 of n, or None when n is prime or 1."""
    for a in range(2, n):
        if n % a == 0:
            return a, n // a
    return None


def square_blocks(g, v):
    """monarch(L, R) with square blocks: square, and its inverse a product of block inverses."""
    ls = g.type(g[v].operands[0]).shape
    rs = g.type(g[v].operands[1]).shape
    return g.dims.equal(ls[1], ls[2]) and g.dims.equal(rs[1], rs[2])


def _inv_monarch(g, m):
    """inv(P₁ blockdiag(L) P₂ blockdiag(R)) = blockdiag(R)⁻¹ P₂ᵀ blockdiag(L)⁻¹ P₁ᵀ (square blocks)."""
    n = g[m["M"]]
    if not square_blocks(g, n.id):
        return None
    span = span_of(g, m)
    wl, wr = n.operands
    l, s, r = g.type(wl).shape
    out = g.add("compose", [inv(g, g.add("blockdiag_batched", [wr], span=span), span),
                            g.add("perm", [], {"m": r, "n": l}, span=span),
                            inv(g, g.add("blockdiag_batched", [wl], span=span), span),
                            g.add("perm", [], {"m": l, "n": s}, span=span)], span=span)
    return transpose(g, out, span) if n.attrs.get("transposed") else out


def _logdet_monarch(g, m):
    """logdet(P₁ blockdiag(L) P₂ blockdiag(R)) = logdet(blockdiag(L)) + logdet(blockdiag(R)) (square blocks)."""
    n = g[m["M"]]
    if not square_blocks(g, n.id):
        return None
    span = span_of(g, m)
    return tadd(g, [logdet(g, g.add("blockdiag_batched", [w], span=span), span) for w in n.operands], span)


@register
class Monarch(Kind):
    """`monarch(L, R)` = perm(s, l) · blockdiag(L) · perm(l, r) · blockdiag(R); L [l, s, r], R [k, q, p].

    Square form: L, R : [b, b, b], n = b², monarch(L, R) = P L Pᵀ R with P = perm(b, b).
    """

    name = "monarch"
    constructors = ("monarch",)
    params = ("L", "R")
    arity = (2, 2)
    examples = (
        # square, b = 3 (n = 9)
        "dim b = 3\ninput L : [b, b, b]\ninput R : [b, b, b]\ninput x : [b * b, 4]\nexport y = monarch(L, R) @ x",
        # rectangular: R 4 blocks 3x5 (n = 20), L 2 blocks 3x6 (l r = 12 = k q), m = 6
        "input L : [2, 3, 6]\ninput R : [4, 3, 5]\ninput x : [20, 3]\nexport y = monarch(L, R) @ x",
        # float64 data, transpose, a batched right-hand side
        "dim b = 4\ninput L : [b, b, b] float64\ninput R : [b, b, b] float64\ninput x : [2, b * b, 3] float64\n"
        "export y = monarch(L, R).T @ x\nexport z = monarch(L, R) @ x",
        # rectangular transpose
        "input L : [3, 2, 4]\ninput R : [6, 2, 3]\ninput x : [6, 2]\nexport y = monarch(L, R).T @ x",
        # compositions with kron, diag and lowrank
        "input L : [4, 4, 4]\ninput R : [4, 4, 4]\ninput A : [4, 4]\ninput B : [4, 4]\ninput d : [16]\n"
        "input U : [16, 2]\ninput V : [16, 2]\ninput x : [16, 3]\n"
        "export y = (monarch(L, R) @ kron(A, B) + diag(d) - lowrank(U, V)) @ x\n"
        "export z = (kron(A, B) @ monarch(L, R).T @ monarch(R, L)) @ x",
        # a vector right-hand side, float32 with the perm kind around it
        "input L : [3, 3, 3]\ninput R : [3, 3, 3]\ninput x : [9]\nexport y = (perm(3, 3) @ monarch(L, R)) @ x",
    )

    def shard_mode(self, g, v, s):
        """b split: the factors' blocks split along their contracted axis (sharding.axis_spec), so
        each of the two block-diagonal factors sums partial products: two all-reduces."""
        from ..sharding import symbols_of
        return ("psum", "psum") if s in symbols_of(g, g.type(v)) else "free"

    def sample(self, n, tag):
        split = _square_split(n)
        if split is None:
            return None
        a, c = split
        return (f"input ML{tag} : [{a}, {c}, {c}]\ninput MR{tag} : [{a}, {c}, {c}]",
                f"monarch(ML{tag}, MR{tag})")

    def construct(self, b, args, kwargs, span):
        b.no_kwargs(self, kwargs)
        b.arity(self, args, span)
        wl = b.tensor(args[0], (3,), "monarch's L (blocks [l, s, r])")
        wr = b.tensor(args[1], (3,), "monarch's R (blocks [k, q, p])")
        return b.add(self.name, [wl, wr], {"transposed": False}, span=span)

    def infer(self, g, ops, attrs, span):
        lt = tensor_of_rank(g, ops[0], (3,), span, "monarch's L (blocks [l, s, r])")
        rt = tensor_of_rank(g, ops[1], (3,), span, "monarch's R (blocks [k, q, p])")
        l, s, r = lt.shape
        k, q, p = rt.shape
        if not g.dims.equal(l * r, k * q):
            raise ShapeError(
                f"{written(span, 'monarch(L, R)')}: {written(g[ops[0]].span, 'L')} {lt} and "
                f"{written(g[ops[1]].span, 'R')} {rt} do not meet in the middle: R's blocks give "
                f"k*q = {k * q} values but L's take l*r = {l * r}",
                span, hint="with L [l, s, r] and R [k, q, p], l*r must equal k*q; "
                "the square form is L, R : [b, b, b]")
        rows, cols = s * l, k * p
        if attrs.get("transposed"):
            rows, cols = cols, rows
        return OpType(rows, cols, (), join_dtype(lt.dtype, rt.dtype))

    def dense(self, g, v, vals):
        m = monarch_dense(vals[0], vals[1])
        return m.T if g[v].attrs.get("transposed") else m

    def flops(self, g, v, k):
        ops = g[v].operands
        return monarch_flops(g.type(ops[0]).shape, g.type(ops[1]).shape, k)

    def lower(self, lw, v, x):
        n = lw.src[v]
        wl, wr = (lw.tensor(o) for o in n.operands)
        if n.attrs.get("transposed"):
            return monarch_t_apply(lw, wl, wr, x)
        return monarch_apply(lw, wl, wr, x)

    def transpose(self, g, v):
        n = g[v]
        return g.add(self.name, list(n.operands), {"transposed": not n.attrs.get("transposed")}, span=n.span)

    def cheap_inverse(self, g, v):
        return square_blocks(g, v)

    rules = (
        # inv(P₁ L P₂ R) = R⁻¹ P₂ᵀ L⁻¹ P₁ᵀ
        Rule("inv-monarch", "inv(monarch(L, R)) = blockdiag(R)⁻¹ P₂ᵀ blockdiag(L)⁻¹ P₁ᵀ",
             ("inv", As("M", ("monarch", "L", "R"))), _inv_monarch, where=auto),
        # logdet(monarch(L, R)) = logdet(blockdiag(L)) + logdet(blockdiag(R))
        Rule("logdet-monarch", "logdet(monarch(L, R)) = logdet(blockdiag(L)) + logdet(blockdiag(R))",
             ("logdet", As("M", ("monarch", "L", "R"))), _logdet_monarch),
    )

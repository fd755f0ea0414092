"""Products of Householder reflectors, applied in blocked compact-WY form.

`householder(V)`, V : [n, k] with columns v_1 .. v_k:

    householder(V) = H_1 H_2 ··· H_k,   H_i = I - 2 v_i v_iᵀ / (v_iᵀ v_i)

(so H_k touches x first; a zero column gives H_i = I, never a division by zero: see
wy_factors.s_of).  It is orthogonal: its transpose and inverse are the
reversed product H_k ··· H_1 = householder(V[:, ::-1]).

Lowering: the columns are cut into blocks of at most HH_BLOCK reflectors.  For
a block U = [v_a .. v_b] (unnormalized columns), with G = UᵀU,

    H_a ··· H_b = I - U S⁻¹ Uᵀ,   S = striu(G) + diag(G) / 2   (upper triangular)

(Puglisi 1992; Joffrain, Low, Quintana-Ortí, van de Geijn & Van Zee 2006), so
one block applied to x is x - U solve_triangular(S, Uᵀ x): two matmuls of
width b and a b x b triangular solve, instead of b rank-1 updates.  The
transpose uses Sᵀ (a lower-triangular solve) with the blocks in the other
order.  One unblocked WY over all k columns is never used: its triangular
factor costs O(k²) per column and it is slower than the reflector loop.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from .base import Kind, OpType, register, tensor_of_rank

HH_BLOCK = 64          # reflectors per compact-WY block (benchmarks/bench_families_mbh.py)
HH_MAX_REFLECTORS = 16384   # 256 blocks: the unrolled compile stays under a second (docs/reliability.md)


def householder_dense(v: np.ndarray, transposed: bool = False) -> np.ndarray:
    """H_1 ··· H_k accumulated column by column (O(n² k)); its transpose when asked."""
    n, k = v.shape
    h = np.eye(n)
    norms = np.einsum("ij,ij->j", v, v)
    coef = np.divide(2.0, norms, out=np.zeros_like(norms), where=norms > 0)   # v_i = 0: H_i = I
    for r in range(0, n, 64):         # rows evolve independently under h <- h H_i; 64 rows stay in cache
        rows = h[r:r + 64]
        for i in range(k):
            u = v[:, i]
            rows -= np.outer(rows @ u * coef[i], u)          # rows <- rows H_i
    return h.T if transposed else h


def blocks(k: int, size: int = HH_BLOCK):
    """[(start, stop)] of the column blocks, in column order."""
    return [(a, min(a + size, k)) for a in range(0, k, size)]


def _k(g, t, span):
    k = g.dims.value(t.shape[1])
    if k is None:
        raise ShapeError(f"householder(V) needs a concrete number of reflectors, got V {t}", span,
                         hint="declare the column count with a value (`dim k = 64`); n may stay free")
    if k > HH_MAX_REFLECTORS:
        raise ShapeError(f"householder(V) takes at most {HH_MAX_REFLECTORS} reflectors, got V {t} with k = {k}",
                         span, hint=f"the generated code has statements for each block of {HH_BLOCK} reflectors; "
                                    "n reflectors already give every orthogonal n x n matrix")
    return k


def wy_factors(lw, vv: int, k: int, size: int = None):
    """[(U, S)] per block of columns, in column order, as primitive ids: U = V[:, a:b] and S whose
    upper triangle is striu(UᵀU) + diag(UᵀU)/2 (its lower triangle is never read).

    The Gram matrices of all full blocks come from one batched matmul (V viewed [n, m, size],
    blocks first); a short last block gets its own."""
    size = size or HH_BLOCK
    dtype = lw.dtype(vv)
    n = lw.shape(vv)[0]
    out = []
    full = k // size if k > size else 0

    tiny = float(np.finfo(np.float32 if dtype == "bfloat16" else np.dtype(dtype)).tiny)

    def s_of(gram, w):
        eye = lw.prim("eye", n=w, dtype=dtype)
        diag = lw.mul(gram, eye)
        s = lw.sub(gram, lw.scale(diag, 0.5))
        # A zero column v_i (G_ii = 0) would make S singular (nan, or an error): S_ii = 1 there,
        # so z_i = 0 / 1 and H_i = I (LAPACK's tau = 0).  relu(tiny - G_ii) / tiny is 1 at G_ii = 0
        # and exactly 0 for every G_ii >= tiny (the smallest normal number), which stay as they are.
        zero = lw.scale(lw.prim("unary", lw.prim("shift", lw.scale(diag, -1.0), c=tiny), fn="relu"), 1.0 / tiny)
        return lw.add(s, lw.mul(zero, eye))

    if full:
        head = vv if full * size == k else lw.prim("slice", vv, axis=-1, start=0, stop=full * size)
        vb = lw.permute(lw.reshape(head, (n, full, size)), (1, 0, 2))           # [m, n, size]
        ss = s_of(lw.matmul(lw.swap(vb), vb), size)                             # [m, size, size]
        for j in range(full):
            s = lw.reshape(lw.prim("slice", ss, axis=0, start=j, stop=j + 1), (size, size))
            out.append((lw.prim("slice", vv, axis=-1, start=j * size, stop=(j + 1) * size), s))
    for a, b in blocks(k - full * size, size):
        a, b = a + full * size, b + full * size
        u = lw.prim("slice", vv, axis=-1, start=a, stop=b) if (a, b) != (0, k) else vv
        out.append((u, s_of(lw.matmul(lw.swap(u), u), b - a)))
    return out


def _shaped_like(lw, y, x):
    """y with x's shape spelled as in x: V's rows may be `n` where x has the equal number 5, and the
    elementwise primitives compare shapes syntactically (a no-op view in the generated code)."""
    if tuple(lw.shape(y)) == tuple(lw.shape(x)):
        return y
    return lw.prim("reshape", y, shape=lw.shape(x))


@register
class Householder(Kind):
    """`householder(V)`, V [n, k]: H_1 ··· H_k with H_i = I - 2 v_i v_iᵀ / ‖v_i‖²."""

    name = "householder"
    constructors = ("householder",)
    params = ("V",)
    arity = (1, 1)
    examples = (
        "dim n = 6\ninput V : [n, 3]\ninput x : [n, 2]\nexport y = householder(V) @ x\n"
        "export z = householder(V).T @ x",
        # more reflectors than one block (HH_BLOCK = 64): three blocks, the last one short
        "dim n = 40\ninput V : [n, 150] float64\ninput x : [2, n, 3] float64\n"
        "export y = householder(V) @ x\nexport z = householder(V).T @ householder(V) @ x",
        "input V : [5, 1]\ninput x : [5]\nexport y = householder(V) @ x",
        # free n, k concrete; compositions with kron, diag, lowrank
        "dim n\ninput V : [n, 70]\ninput x : [n, 2]\nexport y = householder(V).T @ x",
        "input V : [12, 4]\ninput A : [3, 3]\ninput B : [4, 4]\ninput d : [12]\ninput U : [12, 2]\n"
        "input W : [12, 2]\ninput x : [12, 3]\n"
        "export y = (householder(V) @ kron(A, B) @ householder(V).T + diag(d) + lowrank(U, W)) @ x",
    )

    def sample(self, n, tag):
        return f"input HV{tag} : [{n}, 2]", f"householder(HV{tag})"

    def construct(self, b, args, kwargs, span):
        b.no_kwargs(self, kwargs)
        b.arity(self, args, span)
        v = b.tensor(args[0], (2,), "householder's V [n, k]")
        return b.add(self.name, [v], {"transposed": False}, span=span)

    def infer(self, g, ops, attrs, span):
        t = tensor_of_rank(g, ops[0], (2,), span, "householder's V [n, k]")
        _k(g, t, span)
        n = t.shape[0]
        return OpType(n, n, (), t.dtype, frozenset({"orthogonal", "invertible"}))

    def dense(self, g, v, vals):
        return householder_dense(vals[0], bool(g[v].attrs.get("transposed")))

    def flops(self, g, v, c):
        t = g.type(g[v].operands[0])
        n = t.shape[0]
        total = 0
        for a, b in blocks(_k(g, t, g[v].span)):
            w = b - a
            # G = UᵀU, Uᵀx, the triangular solve, U z, x - U z
            total += 2 * n * w * w + 2 * n * w * c + w * w * c + 2 * n * w * c + n * c
        return total

    def lower(self, lw, v, x):
        node = lw.src[v]
        t = lw.src.type(node.operands[0])
        k = _k(lw.src, t, node.span)
        vv = lw.tensor(node.operands[0])
        transposed = bool(node.attrs.get("transposed"))
        factors = wy_factors(lw, vv, k)
        for u, s in (factors if transposed else reversed(factors)):
            ut = lw.swap(u)
            w = lw.matmul(ut, x)                                       # Uᵀx
            if transposed:   # (I - U S⁻¹ Uᵀ)ᵀ = I - U S⁻ᵀ Uᵀ; tril(sᵀ) = Sᵀ
                z = lw.prim("solve_triangular", lw.swap(s), w, upper=False)
            else:
                z = lw.prim("solve_triangular", s, w, upper=True)
            x = lw.sub(x, _shaped_like(lw, lw.matmul(u, z), x))
        return x

    def transpose(self, g, v):
        n = g[v]
        return g.add(self.name, list(n.operands), {"transposed": not n.attrs.get("transposed")}, span=n.span)

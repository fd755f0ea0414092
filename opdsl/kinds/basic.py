"""Leaf operators: a tensor used as a matrix, eye, zeros, diag, and the stride permutation."""
from __future__ import annotations

import numpy as np

from .base import Kind, OpType, register, tensor_of_rank
from .linalg_analysis import is_gram, less, tensor_props, tri_of

SQUARE_PROPS = frozenset({"symmetric", "orthogonal", "diagonal", "psd", "permutation", "invertible"})


@register
class Dense(Kind):
    """A tensor [m, n] (or [..., m, n], batched) used as a matrix."""

    name = "dense"
    examples = ("input W : [5, 3]\ninput x : [3, 2]\nexport y = W @ x",)

    def shard_mode(self, g, v, s):
        """Split along its columns (and x along its rows), each device multiplies its own columns
        by its own rows; the partial products are summed (all-reduce)."""
        from ..sharding import symbols_of
        return "psum" if s in symbols_of(g, g.type(v)) else "free"

    def sample(self, n, tag):
        return f"input W{tag} : [{n}, {n}]", f"W{tag}"
    constructors = ()

    def infer(self, g, ops, attrs, span):
        t = tensor_of_rank(g, ops[0], range(2, 9), span, "a dense operator")
        return OpType(t.shape[-2], t.shape[-1], t.shape[:-2], t.dtype, t.props)

    def dense(self, g, v, vals):
        return vals[0]

    def flops(self, g, v, k):
        t = g.type(v)
        from .base import sym_prod
        return 2 * t.rows * t.cols * k * sym_prod(t.batch)

    def lower(self, lw, v, x):
        return lw.matmul(lw.tensor(lw.src[v].operands[0]), x)

    def transpose(self, g, v):
        return g.add("dense", [g.add("tT", [g[v].operands[0]], span=g[v].span)], span=g[v].span)

    def psd_through(self, g, v):                # the tensor X @ X.T (or X.T @ X) used as a matrix
        t = g[g[v].operands[0]]
        return t.kind == "apply" and is_gram(g, *t.operands)

    def chain_factor(self, g, v):           # a matrix: merged into a neighbour by a matmul
        return ("dense", 0) if len(g.type(g[v].operands[0]).shape) == 2 else ("other", 0)

    infer_from_types = True

    def chain_parts(self, g, v):            # a matrix W, taken apart when it is a product X @ Y
        return None if g.type(v).batch else ("matrix", g[v].operands[0])

    def triangular_through(self, g, v):     # the properties of W, through its transposes
        return tri_of(tensor_props(g, g[v].operands[0]))

    def singular(self, g, v):
        """A matrix written as a product X @ Y that passes through fewer dimensions than its size."""
        w = g[v].operands[0]
        parts = g.spec(w).chain_parts(g, w)
        t = g.type(w)
        if parts is not None and parts[0] == "applied" and len(t.shape) >= 2:
            inner = g.type(parts[1]).cols
            if less(g, inner, t.shape[-1]):
                return f"the product passes through {inner} < {t.shape[-1]} dimensions"
        return None

    def matrix(self, lw, v, dtype):         # written down already: its tensor
        return lw.tensor(lw.src[v].operands[0])

    def matrix_props(self, g, v):
        return g.type(v).props | tensor_props(g, g[v].operands[0])

    def matrix_flops(self, g, v):
        return 0


@register
class Eye(Kind):
    """`eye(n)`: the identity."""

    name = "eye"
    examples = ("dim n = 4\ninput W : [n, n]\ninput x : [n, 2]\nexport y = (W + eye(n)) @ x",)

    def shard_mode(self, g, v, s):
        """Row i of the result needs only row i of x: a split dim costs nothing."""
        return "free"

    def sample(self, n, tag):
        return "", f"eye({n})"
    constructors = ("eye",)
    params = ("n",)

    def construct(self, b, args, kwargs, span):
        b.no_kwargs(self, kwargs)
        b.arity(self, args, span, 1, 1)
        return b.add(self.name, [], {"n": b.dim(args[0])}, span=span)

    def infer(self, g, ops, attrs, span):
        return OpType(attrs["n"], attrs["n"], props=SQUARE_PROPS)

    def dense(self, g, v, vals):
        return np.eye(g.dims.value(g[v].attrs["n"]))

    def flops(self, g, v, k):
        return 0

    def lower(self, lw, v, x):
        return x

    def fft_tree(self, g, v, conj, leaves):     # λ = 1 on any grid
        return ("eye",), None

    def transpose(self, g, v):
        return v

    infer_from_types = True

    def chain_parts(self, g, v):
        return ("identity",)

    def cheap_inverse(self, g, v):
        return True

    def matrix(self, lw, v, dtype):
        return lw.prim("eye", n=lw.src.type(v).rows, dtype=dtype)


@register
class Zeros(Kind):
    """`zeros(m, n)`: the zero map."""

    name = "zeros"
    examples = ("input W : [3, 4]\ninput x : [4, 2]\nexport y = (W + zeros(3, 4)) @ x",
                "input x : [4, 2]\nexport y = zeros(3, 4) @ x")

    def shard_mode(self, g, v, s):
        """Row i of the result needs only row i of x: a split dim costs nothing."""
        return "free"

    def sample(self, n, tag):
        return "", f"zeros({n}, {n})"
    constructors = ("zeros",)
    params = ("m", "n")

    def construct(self, b, args, kwargs, span):
        b.no_kwargs(self, kwargs)
        b.arity(self, args, span, 2, 2)
        return b.add(self.name, [], {"m": b.dim(args[0]), "n": b.dim(args[1])}, span=span)

    def infer(self, g, ops, attrs, span):
        return OpType(attrs["m"], attrs["n"], props=frozenset({"diagonal"}))

    def dense(self, g, v, vals):
        a = g[v].attrs
        return np.zeros((g.dims.value(a["m"]), g.dims.value(a["n"])))

    def flops(self, g, v, k):
        return 0

    def lower(self, lw, v, x):
        s = lw.shape(x)
        return lw.prim("zeros", shape=s[:-2] + (lw.src[v].attrs["m"], s[-1]), dtype=lw.dtype(x))

    def transpose(self, g, v):
        a = g[v].attrs
        return g.add("zeros", [], {"m": a["n"], "n": a["m"]}, span=g[v].span)

    def singular(self, g, v):
        return "it is the zero operator"


@register
class Diag(Kind):
    """`diag(d)`: the diagonal matrix with d on its diagonal (d : [n])."""

    name = "diag"
    examples = ("dim n = 5\ninput d : [n]\ninput x : [n, 2]\nexport y = diag(d) @ x",)

    def shard_mode(self, g, v, s):
        """Row i of the result needs only row i of x: a split dim costs nothing."""
        return "free"

    def chain_factor(self, g, v):           # diagonals next to each other multiply elementwise
        return "diag", 0

    def sample(self, n, tag):
        return f"input d{tag} : [{n}]", f"diag(d{tag})"
    constructors = ("diag",)
    params = ("d",)

    def construct(self, b, args, kwargs, span):
        b.no_kwargs(self, kwargs)
        b.arity(self, args, span, 1, 1)
        return b.add(self.name, [b.tensor(args[0], (1,), "diag's argument")], span=span)

    def infer(self, g, ops, attrs, span):
        t = tensor_of_rank(g, ops[0], (1,), span, "diag's argument")
        return OpType(t.shape[0], t.shape[0], (), t.dtype, frozenset({"diagonal", "symmetric"}))

    def dense(self, g, v, vals):
        return np.diag(vals[0])

    def flops(self, g, v, k):
        return g.type(v).rows * k

    def lower(self, lw, v, x):
        d = lw.tensor(lw.src[v].operands[0])
        n = lw.shape(d)[0]
        return lw.mul(lw.reshape(d, (n, 1)), x)

    def transpose(self, g, v):
        return v

    infer_from_types = True

    def cheap_inverse(self, g, v):          # diag(1 / d)
        return True

    def psd_through(self, g, v):            # a diagonal of entries declared positive (noise variances)
        return "positive" in g.type(g[v].operands[0]).props


def stride_perm_index(m: int, n: int) -> np.ndarray:
    """Row i*n + j of L(mn, m) selects entry j*m + i of x (SPIRAL: read at stride m)."""
    i, j = np.meshgrid(np.arange(m), np.arange(n), indexing="ij")
    return (j * m + i).reshape(-1)


@register
class Perm(Kind):
    """`perm(m, n)`: the stride permutation L(mn, m) of the SPIRAL literature.

    y = L(mn, m) x reads x at stride m: y[i*n + j] = x[j*m + i] for i < m, j < n,
    i.e. it transposes x viewed as an n x m row-major matrix.  L(6, 2) maps
    [x0, x1, x2, x3, x4, x5] to [x0, x2, x4, x1, x3, x5].
    """

    name = "perm"
    examples = ("input x : [6, 2]\nexport y = perm(2, 3) @ x",
                "input x : [12]\nexport y = perm(3, 4).T @ x")

    def sample(self, n, tag):
        for m in range(2, n):
            if n % m == 0:
                return "", f"perm({m}, {n // m})"
        return None
    constructors = ("perm",)
    params = ("m", "n")

    def construct(self, b, args, kwargs, span):
        b.no_kwargs(self, kwargs)
        b.arity(self, args, span, 2, 2)
        return b.add(self.name, [], {"m": b.dim(args[0]), "n": b.dim(args[1])}, span=span)

    def infer(self, g, ops, attrs, span):
        mn = attrs["m"] * attrs["n"]
        return OpType(mn, mn, props=frozenset({"permutation", "orthogonal", "invertible"}))

    def dense(self, g, v, vals):
        a = g[v].attrs
        m, n = g.dims.value(a["m"]), g.dims.value(a["n"])
        return np.eye(m * n)[stride_perm_index(m, n)]

    def flops(self, g, v, k):
        return 0

    def lower(self, lw, v, x):
        a = lw.src[v].attrs
        s = lw.shape(x)
        b, k = s[:-2], s[-1]
        t = lw.reshape(x, b + (a["n"], a["m"], k))
        nb = len(b)
        t = lw.permute(t, tuple(range(nb)) + (nb + 1, nb, nb + 2))
        return lw.reshape(t, b + (a["m"] * a["n"], k))

    def transpose(self, g, v):
        a = g[v].attrs
        return g.add("perm", [], {"m": a["n"], "n": a["m"]}, span=g[v].span)

    def cheap_inverse(self, g, v):          # its transpose
        return True

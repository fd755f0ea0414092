"""Row selection: `select([i, j, ...], n)` (docs/block_sparse.md; PyLops' `Restriction`).

The operator [k, n] whose rows are rows i, j, ... of the n x n identity: `select(idx, n) @ x` is
x[idx] (the `take` primitive), and its transpose puts the rows back into zeros, adding where an
index repeats (the `put` primitive: scipy's and PyLops' adjoint).  The indices are compile-time
integers written as a list (the language has no integer tensors yet: runtime index tensors are
issue 18's open part).  A small dense example: select([2, 0], 3) = [[0, 0, 1], [1, 0, 0]].
"""
from __future__ import annotations

import numpy as np

from ..errors import TypeError_
from .base import Kind, OpType, register


@register
class Select(Kind):
    """`select([i, j, ...], n)`: rows of the n x n identity; `.T` scatters (and adds) them back."""

    name = "select"
    constructors = ("select",)
    params = ("idx", "n")
    examples = (
        "dim n = 5\ninput x : [n, 2]\ninput y : [3, 2]\nexport p = select([4, 0, 2], n) @ x\n"
        "export t = select([1, 1, 3], n).T @ y",
        "input x : [2, 4, 3]\ninput W : [4, 4]\nexport y = (select([3, 1], 4) @ W) @ x",
    )

    def sample(self, n, tag):
        return None          # the random programs also run on TVM, which refuses take / put by name

    def construct(self, b, args, kwargs, span):
        b.no_kwargs(self, kwargs)
        b.arity(self, args, span, 2, 2)
        n = b.dim(args[1])
        nv = b.g.dims.value(n)
        lst = args[0]
        if lst.tag != "list" or not lst.v:
            raise TypeError_("select's indices are a non-empty list of integers, e.g. select([0, 2], n)", lst.span,
                             hint="runtime index tensors are not supported yet: the indices are written in the program")
        idx = []
        for item in lst.v:
            v = b.num(item) if item.tag == "num" else None
            if v is None or float(v) != int(v) or int(v) < 0 or (nv is not None and int(v) >= nv):
                raise TypeError_(f"select's index must be an integer in [0, {nv if nv is not None else 'n'}), got "
                                 f"{v if v is not None else item.tag}", item.span)
            idx.append(int(v))
        return b.add(self.name, [], {"idx": tuple(idx), "n": n, "T": False}, span=span)

    def infer(self, g, ops, attrs, span):
        k, n = len(attrs["idx"]), attrs["n"]
        return OpType(n, k, ()) if attrs["T"] else OpType(k, n, ())

    def dense(self, g, v, vals):
        a = g[v].attrs
        out = np.eye(g.dims.value(a["n"]))[list(a["idx"])]
        return out.T if a["T"] else out

    def flops(self, g, v, k):
        return 0

    def lower(self, lw, v, x):
        a = lw.src[v].attrs
        if a["T"]:
            return lw.prim("put", x, idx=a["idx"], n=a["n"])
        return lw.prim("take", x, idx=a["idx"])

    def transpose(self, g, v):
        n = g[v]
        return g.add(self.name, [], {**n.attrs, "T": not n.attrs["T"]}, span=n.span)

"""Zero padding: `pad(n, before, after)` (docs/block_sparse.md; PyLops' `Pad` in one dimension).

The operator [before + n + after, n] that puts x between `before` and `after` zero rows: the identity
with zero rows above and below.  Its transpose crops those rows back off (`pad(...).T @ y` is
y[before:before + n]).  Applied with a concatenation (a slice for the transpose): no matrix, no
FLOPs.  A small dense example: pad(2, 1, 1) = [[0, 0], [1, 0], [0, 1], [0, 0]].
"""
from __future__ import annotations

import numpy as np

from ..errors import TypeError_
from .base import Kind, OpType, register


@register
class Pad(Kind):
    """`pad(n, before, after)`: [before + n + after, n], x between zero rows; `.T` crops them off."""

    name = "pad"
    constructors = ("pad",)
    params = ("n", "before", "after")
    examples = (
        "dim n = 4\ninput x : [n, 2]\ninput y : [n + 3, 2]\nexport p = pad(n, 1, 2) @ x\nexport c = pad(n, 1, 2).T @ y",
        "input x : [2, 3, 1]\ninput W : [5, 5]\nexport y = (W @ pad(3, 0, 2)) @ x\nexport z = pad(3, 2, 0) @ x",
    )

    def sample(self, n, tag):
        return None                      # not square: the random programs use square kinds

    def construct(self, b, args, kwargs, span):
        b.no_kwargs(self, kwargs)
        b.arity(self, args, span, 3, 3)
        n = b.dim(args[0])
        sizes = []
        for a, what in zip(args[1:], ("before", "after")):
            v = b.num(a) if a.tag == "num" else None
            if v is None or float(v) != int(v) or int(v) < 0:
                raise TypeError_(f"pad's {what} must be a non-negative integer, got {v if v is not None else a.tag}",
                                 a.span, hint="pad(n, before, after): numbers of zero rows")
            sizes.append(int(v))
        return b.add(self.name, [], {"n": n, "before": sizes[0], "after": sizes[1], "T": False}, span=span)

    def infer(self, g, ops, attrs, span):
        n = attrs["n"]
        m = n + attrs["before"] + attrs["after"]
        return OpType(n, m, ()) if attrs["T"] else OpType(m, n, ())

    def dense(self, g, v, vals):
        a = g[v].attrs
        n = g.dims.value(a["n"])
        out = np.zeros((n + a["before"] + a["after"], n))
        out[a["before"]:a["before"] + n] = np.eye(n)
        return out.T if a["T"] else out

    def flops(self, g, v, k):
        return 0

    def lower(self, lw, v, x):
        a = lw.src[v].attrs
        s = lw.shape(x)
        if a["T"]:                       # crop: rows before .. before + n
            return lw.prim("slice", x, axis=-2, start=a["before"], stop=a["before"] + a["n"])
        parts = [lw.prim("zeros", shape=s[:-2] + (c, s[-1]), dtype=lw.dtype(x)) if c else None
                 for c in (a["before"], a["after"])]
        pieces = [p for p in (parts[0], x, parts[1]) if p is not None]
        return pieces[0] if len(pieces) == 1 else lw.prim("concat", *pieces, axis=-2)

    def transpose(self, g, v):
        n = g[v]
        return g.add(self.name, [], {**n.attrs, "T": not n.attrs["T"]}, span=n.span)

"""Row selection: `select(idx, n)` (docs/block_sparse.md; PyLops' `Restriction`).

The operator [k, n] whose rows are rows idx[0], idx[1], ... of the n x n identity: `select(idx, n)
@ x` is x[idx] (the `take` primitive), and its transpose puts the rows back into zeros, adding where
an index repeats (the `put` primitive: scipy's and PyLops' adjoint).  The indices are either
written in the program, `select([4, 0, 2], n)`, or an integer tensor argument, `input idx : [k]
int64` (int32 or int64; docs/language.md), checked at the call to lie in [0, n) — numpy and torch
raise a CallError naming the index; JAX checks them too, running such an export op by op (under a
jax.jit of the caller's, its gather clamps, as JAX documents).  A small dense example:
select([2, 0], 3) = [[0, 0, 1], [1, 0, 0]].
"""
from __future__ import annotations

import numpy as np

from ..errors import TypeError_
from .base import INDEX_DTYPES, Kind, OpType, register, tensor_of_rank


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
        # runtime indices: an integer tensor (drawn in [0, n): operand_domains)
        "dim n = 6\ninput idx : [4] int64\ninput x : [2, n, 3]\ninput y : [4, 2]\n"
        "export p = select(idx, n) @ x\nexport t = select(idx, n).T @ y",
    )
    index_operands = (0,)

    def sample(self, n, tag):
        return None          # the random programs also run on TVM, which refuses take / put by name

    def construct(self, b, args, kwargs, span):
        b.no_kwargs(self, kwargs)
        b.arity(self, args, span, 2, 2)
        n = b.dim(args[1])
        nv = b.g.dims.value(n)
        lst = args[0]
        if lst.tag == "node":          # an integer index tensor, read at run time
            t = b.g.type(lst.v)
            if t.is_op or t.dtype not in INDEX_DTYPES:
                raise TypeError_(f"select's indices are an integer tensor [k] (int32 or int64) or a list, got "
                                 f"{'an operator' if t.is_op else f'a {t.dtype} tensor'}", lst.span,
                                 hint="declare them `input idx : [k] int64`, or write select([0, 2], n)")
            tensor_of_rank(b.g, lst.v, (1,), lst.span, "select's index tensor")
            return b.add(self.name, [lst.v], {"n": n, "T": False}, span=span)
        if lst.tag != "list" or not lst.v:
            raise TypeError_("select's indices are a non-empty list of integers, e.g. select([0, 2], n), or an "
                             "integer tensor", lst.span, hint="declare a tensor of indices `input idx : [k] int64`")
        idx = []
        for item in lst.v:
            v = b.num(item) if item.tag == "num" else None
            if v is None or float(v) != int(v) or int(v) < 0 or (nv is not None and int(v) >= nv):
                raise TypeError_(f"select's index must be an integer in [0, {nv if nv is not None else 'n'}), got "
                                 f"{v if v is not None else item.tag}", item.span)
            idx.append(int(v))
        return b.add(self.name, [], {"idx": tuple(idx), "n": n, "T": False}, span=span)

    def infer(self, g, ops, attrs, span):
        k, n = (g.type(ops[0]).shape[0] if ops else len(attrs["idx"])), attrs["n"]
        return OpType(n, k, ()) if attrs["T"] else OpType(k, n, ())

    def operand_domains(self, g, v):
        return {0: ("index", g[v].attrs["n"])} if g[v].operands else {}

    def dense(self, g, v, vals):
        a = g[v].attrs
        idx = vals[0].astype(np.int64) if vals else list(a["idx"])
        out = np.eye(int(g.dims.value(a["n"])))[idx]
        return out.T if a["T"] else out

    def flops(self, g, v, k):
        return 0

    def lower(self, lw, v, x):
        a = lw.src[v].attrs
        idx = [lw.tensor(o) for o in lw.src[v].operands]         # the index tensor, or none (a["idx"])
        where = {} if idx else {"idx": a["idx"]}
        if a["T"]:
            return lw.prim("put", x, *idx, n=a["n"], **where)
        return lw.prim("take", x, *idx, **where)

    def transpose(self, g, v):
        n = g[v]
        return g.add(self.name, list(n.operands), {**n.attrs, "T": not n.attrs["T"]}, span=n.span)

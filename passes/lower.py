"""Lowering: operator IR -> primitive IR.

Each kind lowers itself (Kind.lower); this module holds the Lowerer those
methods call, which builds primitive nodes.  What the kinds' pieces meet in
(a reshape of a reshape, a reshape to the same shape, a swap of a swap) is
cleaned up after lowering by passes/prim_simplify.py.
"""
from __future__ import annotations

import math

import sympy as sp

from opdsl.ir import Graph
from opdsl.primitives import PRIM_REGISTRY, PRIMS


# the real dtypes by width (a primitive whose operands must share one says so: Prim.promote)
_REAL_RANK = {"float16": 0, "bfloat16": 0, "float32": 1, "float64": 2}


class Lowerer:
    def __init__(self, src: Graph):
        self.src = src
        self.dims = src.dims
        self.out = Graph(PRIM_REGISTRY, dims=src.dims, meta=dict(src.meta))
        self._tensors: dict[int, int] = {}
        self._applied: dict[tuple[int, int], int] = {}
        # operator node -> primitive of its matrix, formed outside a loop body and applied by matmul
        # there (linalg_cg.loop_matrices: a kernel inside CG is cheaper formed once while it fits)
        self._dense: dict[int, int] = {}
        self._span = None

    # ---- what kinds call ---------------------------------------------------
    def tensor(self, v: int) -> int:
        """The primitive value of tensor node v."""
        hit = self._tensors.get(v)
        if hit is not None:
            return hit
        outer, self._span = self._span, self.src[v].span or self._span
        p = self.src.spec(v).lower(self, v)
        self._span = outer
        name = self.src[v].name
        if name and not self.out[p].name and self.out.kind(p) != "arg":
            self.out.rename(p, name)
        self._tensors[v] = p
        return p

    def apply(self, v: int, x: int) -> int:
        """The primitive value of (operator v) @ x, x of shape [*b, n, k]."""
        key = (v, x)
        hit = self._applied.get(key)
        if hit is None:
            outer, self._span = self._span, self.src[v].span or self._span
            dense = self._dense.get(v)
            hit = self.matmul(dense, x) if dense is not None else self.src.spec(v).lower(self, v, x)
            self._span = outer
            self._applied[key] = hit
        return hit

    def note(self, text: str) -> None:
        """Record a choice the lowering made (a solver, a matrix formed once), with where it was
        written: `opdsl explain` lists these under "choices"."""
        where = f" ({self._span})" if self._span is not None else ""
        notes = self.out.meta.setdefault("choices", [])
        if text + where not in notes:
            notes.append(text + where)

    def is_split(self, size) -> bool:
        """Whether a size is made of a dim split over a device mesh (graph.meta["split"], set by a
        sharded compile; opdsl/sharding.py): a kind keeps such an axis apart in its reshapes."""
        split = self.src.meta.get("split")
        if not split:
            return False
        names = {str(s) for s in sp.sympify(size).free_symbols}
        for s in list(sp.sympify(size).free_symbols):
            d = self.dims.derived.get(s)
            if d is not None:
                names |= {str(t) for t in d.free_symbols}
        return bool(names & set(split))

    def shape(self, p: int) -> tuple:
        return self.out.type(p).shape

    def dtype(self, p: int) -> str:
        return self.out.type(p).dtype

    def prim(self, _prim: str, *ops, **attrs) -> int:
        if PRIMS[_prim].promote and len(ops) > 1:
            ops = self._promote(ops)
        return self.out.add(_prim, ops, attrs, self._span)

    def _promote(self, ops):
        """Operands of one real dtype: mixed float dtypes are cast to the widest first (numpy
        promotes by itself, torch's matmul does not: `B @ x` with B float64 and x float32)."""
        dts = {self.dtype(o) for o in ops} & set(_REAL_RANK)
        if len(dts) < 2:
            return ops
        want = "float32" if dts == {"float16", "bfloat16"} else max(dts, key=_REAL_RANK.get)
        return tuple(self.out.add("cast", (o,), {"dtype": want}, self._span)
                     if self.dtype(o) in _REAL_RANK and self.dtype(o) != want else o for o in ops)

    # ---- views (a reshape of a reshape, an identity permutation, ... are cleaned up after
    # lowering, by passes/prim_simplify.py) ------------------------------------
    def reshape(self, x: int, shape) -> int:
        return self.prim("reshape", x, shape=tuple(sp.sympify(s) for s in shape))

    def swap(self, x: int) -> int:
        return self.prim("swap", x)

    def permute(self, x: int, perm) -> int:
        return self.prim("permute", x, perm=tuple(perm))

    def matmul(self, a: int, b: int) -> int:
        return self.prim("matmul", a, b)

    def mul(self, a: int, b: int) -> int:
        return self.prim("mul", a, b)

    def add(self, a: int, b: int) -> int:
        return self.prim("add", a, b)

    def sub(self, a: int, b: int) -> int:
        return self.prim("sub", a, b)

    def scale(self, x: int, c: float) -> int:
        if c == 1.0:
            return x
        if not math.isfinite(c):     # never `x * inf` in generated code (a NameError there)
            from opdsl.errors import TypeError_
            raise TypeError_(f"the constants of this expression multiply to a number beyond float64 ({c})",
                             self._span, hint="scale by smaller constants (|c| < 1.8e308 for their product)")
        return self.prim("scale", x, c=float(c))

    def einsum(self, spec: str, *xs) -> int:
        return self.prim("einsum", *xs, spec=spec)


def lower(g: Graph) -> Graph:
    # Kinds' transposes add operator nodes while lowering; work on a copy so the
    # input graph stays as it was (passes are pure).
    src = g.empty_like()
    mapping: dict = {}
    for name, root in g.exports.items():
        src.exports[name] = src.copy_from(g, root, mapping)
    lw = Lowerer(src)
    for name, root in src.exports.items():
        lw.out.exports[name] = lw.tensor(root)
    return lw.out

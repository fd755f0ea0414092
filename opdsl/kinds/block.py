"""Block operators: `block([[A, B], [C, D]])`, `hstack(A, B, ...)`, `vstack(A, B, ...)` (docs/block_sparse.md).

numpy.block's layout: a rectangular grid of operators whose blocks in one block row have the same
rows and in one block column the same columns; `zeros(m, n)` for an empty block.  Applied block by
block: x is split by the block columns (slices), each block row sums its blocks' products, and the
rows are concatenated: O(Σ cost of the blocks), never the whole matrix.

Rules (this file's `rules`; `opdsl explain` names each that fires):
- a product of two blocks whose partitions align is one block of sums of products (zero blocks
  dropped): [[A, B], [C, D]] [[E, F], [G, H]] = [[AE + BG, AF + BH], [CE + DG, CF + DH]];
- 2 x 2 block triangular (a zero off-diagonal block): inv by substitution,
  inv([[A, 0], [C, D]]) = [[A⁻¹, 0], [−D⁻¹ C A⁻¹, D⁻¹]], and logdet = logdet A + logdet D;
- 2 x 2 with a cheaply invertible A (diagonal, Kronecker, block diagonal, ...: Kind.cheap_inverse):
  the Schur complement S = D − C A⁻¹ B, inv = [[A⁻¹ + A⁻¹ B S⁻¹ C A⁻¹, −A⁻¹ B S⁻¹], [−S⁻¹ C A⁻¹, S⁻¹]]
  and logdet = logdet A + logdet S: a saddle-point (KKT) system factors only the m x m S.
Larger grids: nest them (block([[A, block(...)], ...])).
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError, TypeError_
from .base import CONSTRUCTORS, Kind, OpType, join_dtype, op_type, register
from .linalg_build import auto, span_of
from .rule import As, Rule, Window


def _zero(g, v) -> bool:
    return g[v].kind == "zeros"


def grid(g, v):
    """The blocks of block node v as rows of operand ids."""
    r, c = g[v].attrs["grid"]
    ops = g[v].operands
    return [list(ops[i * c:(i + 1) * c]) for i in range(r)]


def _two_by_two(g, m):
    return auto(g, m) and tuple(g[m["B"]].attrs["grid"]) == (2, 2) and _square_diagonal(g, m["B"])


def _square_diagonal(g, v):
    blocks = grid(g, v)
    return all(g.dims.equal(g.type(blocks[i][i]).rows, g.type(blocks[i][i]).cols) for i in range(len(blocks)))


def _triangular(g, m):
    if not _two_by_two(g, m):
        return False
    (_, b), (c, _) = grid(g, m["B"])
    return _zero(g, b) or _zero(g, c)


def _schur(g, m):
    if not _two_by_two(g, m) or _triangular(g, m):
        return False
    a = grid(g, m["B"])[0][0]
    return bool(g.spec(a).cheap_inverse(g, a))


def _inv(g, a, span):
    return g.add("inv", [a], {"method": "auto"}, span=span)


def _neg(g, a, span):
    return g.add("scale", [a], {"c": -1.0}, span=span)


def _compose(g, ops, span):
    return g.add("compose", list(ops), span=span)


def _block(g, rows, span):
    return g.add("block", [o for row in rows for o in row], {"grid": (len(rows), len(rows[0]))}, span=span)


def _zeros_like(g, v, span):
    t = g.type(v)
    return g.add("zeros", [], {"m": t.rows, "n": t.cols}, span=span)


def _inv_triangular(g, m):
    """inv([[A, 0], [C, D]]) = [[A⁻¹, 0], [−D⁻¹ C A⁻¹, D⁻¹]]; inv([[A, B], [0, D]]) = [[A⁻¹, −A⁻¹ B D⁻¹], [0, D⁻¹]]."""
    span = span_of(g, m)
    (a, b), (c, d) = grid(g, m["B"])
    ia, id_ = _inv(g, a, span), _inv(g, d, span)
    if _zero(g, b):
        off = _neg(g, _compose(g, [id_, c, ia], span), span)
        return _block(g, [[ia, _zeros_like(g, b, span)], [off, id_]], span)
    off = _neg(g, _compose(g, [ia, b, id_], span), span)
    return _block(g, [[ia, off], [_zeros_like(g, c, span), id_]], span)


def _schur_complement(g, m, span):
    (a, b), (c, d) = grid(g, m["B"])
    ia = _inv(g, a, span)
    return a, b, c, d, ia, g.add("sum", [d, _neg(g, _compose(g, [c, ia, b], span), span)], span=span)


def _inv_schur(g, m):
    span = span_of(g, m)
    _, b, c, _, ia, s = _schur_complement(g, m, span)
    is_ = _inv(g, s, span)
    right = _compose(g, [ia, b, is_], span)               # A⁻¹ B S⁻¹
    top_left = g.add("sum", [ia, _compose(g, [right, c, ia], span)], span=span)
    bottom_left = _neg(g, _compose(g, [is_, c, ia], span), span)
    return _block(g, [[top_left, _neg(g, right, span)], [bottom_left, is_]], span)


def _logdet_triangular(g, m):
    span = span_of(g, m)
    (a, _), (_, d) = grid(g, m["B"])
    return g.add("tadd", [g.add("logdet", [a], {"method": "auto"}, span=span),
                          g.add("logdet", [d], {"method": "auto"}, span=span)], span=span)


def _logdet_schur(g, m):
    span = span_of(g, m)
    a, _, _, _, _, s = _schur_complement(g, m, span)
    return g.add("tadd", [g.add("logdet", [a], {"method": "auto"}, span=span),
                          g.add("logdet", [s], {"method": "auto"}, span=span)], span=span)


BLOCK = As("B", ("block", "*xs"))
# two adjacent blocks in a product, with the factors around them
BLOCK_PRODUCT = ("compose", Window(As("P", ("block", "*ps")), As("Q", ("block", "*qs")), before="L", after="R"))


def _aligned(g, m):
    """The left grid's block columns are the right grid's block rows (one partition between them)."""
    cols = [g.type(o).cols for o in grid(g, m["P"])[0]]
    rows = [g.type(r[0]).rows for r in grid(g, m["Q"])]
    return len(cols) == len(rows) and all(g.dims.equal(a, b) for a, b in zip(cols, rows))


def _block_product(g, m):
    """[[A, B], [C, D]] [[E, F], [G, H]] = [[AE + BG, AF + BH], [CE + DG, CF + DH]] (any aligned grids);
    products with a zero block are dropped, an entry with none left is a zeros block."""
    span = span_of(g, m)
    p, q = grid(g, m["P"]), grid(g, m["Q"])
    out = []
    for i in range(len(p)):
        row = []
        for j in range(len(q[0])):
            terms = [_compose(g, [p[i][k], q[k][j]], span) for k in range(len(q))
                     if not (_zero(g, p[i][k]) or _zero(g, q[k][j]))]
            if not terms:
                row.append(g.add("zeros", [], {"m": g.type(p[i][0]).rows, "n": g.type(q[0][j]).cols}, span=span))
            else:
                row.append(terms[0] if len(terms) == 1 else g.add("sum", terms, span=span))
        out.append(row)
    ops = list(m["L"]) + [_block(g, out, span)] + list(m["R"])
    return ops[0] if len(ops) == 1 else _compose(g, ops, g[m["_"]].span)


@register
class Block(Kind):
    """`block([[A, B], [C, D]])`: operators in a grid (numpy.block's layout)."""

    name = "block"
    constructors = ("block",)
    params = ("rows",)
    examples = (
        "input A : [2, 3]\ninput B : [2, 4]\ninput C : [5, 3]\ninput D : [5, 4]\ninput x : [7, 2]\ninput z : [7, 3]\n"
        "export y = block([[A, B], [C, D]]) @ x\nexport t = block([[A, B], [C, D]]).T @ z",
        "input A : [3, 3]\ninput C : [2, 3]\ninput d : [2]\ninput x : [5, 2]\n"
        "export y = block([[3 * eye(3) + A, zeros(3, 2)], [C, diag(d) + 3 * eye(2)]]) @ x\n"
        "export s = inv(block([[3 * eye(3) + A, zeros(3, 2)], [C, 2 * eye(2)]])) @ x",
        # a saddle point (KKT) system: the Schur complement of the diagonal block
        "input h : [4]\ninput A : [2, 4]\ninput x : [6, 1]\n"
        "let K = block([[diag(h) + 3 * eye(4), A.T], [A, zeros(2, 2)]])\nexport y = inv(K) @ x\nexport z = logdet(K)",
    )

    def sample(self, n, tag):
        if n < 2:
            return None
        a = n // 2
        return (f"input BA{tag} : [{a}, {a}]\ninput BB{tag} : [{a}, {n - a}]\ninput BC{tag} : [{n - a}, {a}]\n"
                f"input BD{tag} : [{n - a}, {n - a}]", f"block([[BA{tag}, BB{tag}], [BC{tag}, BD{tag}]])")

    def construct(self, b, args, kwargs, span):
        b.no_kwargs(self, kwargs)
        b.arity(self, args, span, 1, 1)
        rows = args[0]
        if rows.tag != "list" or not rows.v or any(r.tag != "list" for r in rows.v):
            raise TypeError_("block(...) takes a list of block rows, e.g. block([[A, B], [C, D]])", rows.span,
                             hint="each block row is a list of operators; zeros(m, n) for an empty block")
        width = len(rows.v[0].v)
        for r in rows.v:
            if len(r.v) != width or not r.v:
                raise ShapeError(f"block rows must have the same number of blocks: {len(r.v)} here, {width} in the "
                                 "first row", r.span, hint="write zeros(m, n) for an empty block")
        ops = [b.op(x) for r in rows.v for x in r.v]
        return b.add(self.name, ops, {"grid": (len(rows.v), width)}, span=span)

    def infer(self, g, ops, attrs, span):
        r, c = attrs["grid"]
        ts = [op_type(g, o, span, "block") for o in ops]
        for t, o in zip(ts, ops):
            if t.batch:
                raise ShapeError(f"blocks cannot be batched, got {t}", g[o].span or span)
        for i in range(r):
            for j in range(c):
                t, o = ts[i * c + j], ops[i * c + j]
                if not g.dims.equal(t.rows, ts[i * c].rows):
                    raise ShapeError(f"block row {i + 1} has {ts[i * c].rows} rows in its first block, but this block "
                                     f"is {t}", g[o].span or span, hint="the blocks of one block row share their rows")
                if not g.dims.equal(t.cols, ts[j].cols):
                    raise ShapeError(f"block column {j + 1} has {ts[j].cols} columns in its first block, but this "
                                     f"block is {t}", g[o].span or span,
                                     hint="the blocks of one block column share their columns")
        rows = sum(ts[i * c].rows for i in range(r))
        cols = sum(ts[j].cols for j in range(c))
        return OpType(rows, cols, (), join_dtype(*(t.dtype for t in ts)), frozenset())

    def dense(self, g, v, vals):
        r, c = g[v].attrs["grid"]
        return np.block([[vals[i * c + j] for j in range(c)] for i in range(r)])

    def flops(self, g, v, k):
        blocks = [o for row in grid(g, v) for o in row]
        return sum(g.spec(o).flops(g, o, k) for o in blocks) + g.type(v).rows * k * (g[v].attrs["grid"][1] - 1)

    def lower(self, lw, v, x):
        """Split x by the block columns, sum each block row's products, concatenate the rows."""
        blocks = grid(lw.src, v)
        widths = [lw.src.type(o).cols for o in blocks[0]]
        parts, start = [], 0
        for w in widths:
            parts.append(lw.prim("slice", x, axis=-2, start=start, stop=start + w))
            start = start + w
        rows = []
        for row in blocks:
            y = None
            for o, p in zip(row, parts):
                if _zero(lw.src, o):
                    continue
                term = lw.apply(o, p)
                y = term if y is None else lw.add(y, term)
            if y is None:                       # a row of zero blocks
                y = lw.apply(row[0], parts[0])
            rows.append(y)
        return rows[0] if len(rows) == 1 else lw.prim("concat", *rows, axis=-2)

    def transpose(self, g, v):
        blocks = grid(g, v)
        span = g[v].span
        t = [[g.add("transpose", [blocks[i][j]], span=span) for i in range(len(blocks))] for j in range(len(blocks[0]))]
        return _block(g, t, span)

    rules = (
        Rule("block-product", "[[A, B], [C, D]] [[E, F], [G, H]] = [[AE + BG, AF + BH], [CE + DG, CF + DH]] when the "
             "partitions align", BLOCK_PRODUCT, _block_product, where=_aligned),
        Rule("inv-block-triangular", "inv([[A, 0], [C, D]]) = [[A⁻¹, 0], [−D⁻¹ C A⁻¹, D⁻¹]] (the upper form alike)",
             ("inv", BLOCK), _inv_triangular, where=_triangular),
        Rule("inv-block-schur", "inv([[A, B], [C, D]]) = [[A⁻¹ + A⁻¹ B S⁻¹ C A⁻¹, −A⁻¹ B S⁻¹], [−S⁻¹ C A⁻¹, S⁻¹]], "
             "S = D − C A⁻¹ B, for A cheap to invert", ("inv", BLOCK), _inv_schur, where=_schur),
        Rule("logdet-block-triangular", "logdet([[A, 0], [C, D]]) = logdet A + logdet D", ("logdet", BLOCK),
             _logdet_triangular, where=_triangular),
        Rule("logdet-block-schur", "logdet([[A, B], [C, D]]) = logdet A + logdet(D − C A⁻¹ B), for A cheap to invert",
             ("logdet", BLOCK), _logdet_schur, where=_schur),
    )


class _Stack(Block):
    """hstack(A, B, ...) = block([[A, B, ...]]); vstack(A, B, ...) = block([[A], [B], ...])."""

    params = None
    options = ()
    examples = ()
    rules = ()
    horizontal = True

    def construct(self, b, args, kwargs, span):
        b.no_kwargs(self, kwargs)
        if len(args) < 1:
            raise TypeError_(f"{self.constructors[0]}(...) takes at least 1 argument, got 0", span)
        ops = [b.op(a) for a in args]
        grid_ = (1, len(ops)) if self.horizontal else (len(ops), 1)
        return b.add("block", ops, {"grid": grid_}, span=span)


class _HStack(_Stack):
    """`hstack(A, B, ...)`: the operators side by side (same rows) = block([[A, B, ...]])."""

    constructors = ("hstack",)


class _VStack(_Stack):
    """`vstack(A, B, ...)`: the operators one above the other (same columns) = block([[A], [B], ...])."""

    constructors = ("vstack",)
    horizontal = False


# Constructors only: each builds a `block` node, the one registry entry.
for _k in (_HStack(), _VStack()):
    CONSTRUCTORS[_k.constructors[0]] = _k

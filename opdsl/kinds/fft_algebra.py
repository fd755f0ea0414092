"""The FFT-diagonal tree of an operator (kinds/fftdiag.py): each kind contributes its part through
its `fft_tree` hook (Kind.fft_tree), and these helpers combine the parts.

A part is (expression, grid sizes or None): ("k", i, conj) the i-th leaf's spectrum (conj: of its
transpose), ("eye",), ("scale", c, e), ("add", e, ...), ("mul", e, ...), ("inv", e); a leaf, appended
to `leaves`, is [operand ids, kernel sizes or None, axis offset, its own grid]: a convolution kernel
(rotated by its centre k // 2 on the grid) or, without sizes, a circulant's first column.
"""
from __future__ import annotations


def fft_tree(g, v, conj=False, leaves=None):
    """(expression, leaves, grid sizes or None) of operator v when it is FFT-diagonal, else None."""
    leaves = [] if leaves is None else leaves
    part = g.spec(v).fft_tree(g, v, conj, leaves)
    return None if part is None else (part[0], leaves, part[1])


def leaf(leaves, ops, ks, grid, conj):
    """A kernel leaf on the whole grid (offset 0): its part."""
    leaves.append([tuple(ops), ks, 0, tuple(grid)])
    return ("k", len(leaves) - 1, conj), tuple(grid)


def combine(g, ops, conj, leaves, op):
    """The part of a sum ("add") or product ("mul") of operators on one grid, or None."""
    parts, sizes = [], None
    for o in ops:
        sub = g.spec(o).fft_tree(g, o, conj, leaves)
        if sub is None:
            return None
        if sub[1] is not None:
            if sizes is not None and (len(sizes) != len(sub[1]) or
                                      not all(g.dims.equal(p, q) for p, q in zip(sizes, sub[1]))):
                return None                     # two grids: not one DFT
            sizes = sub[1]
        parts.append(sub[0])
    return (op, *parts), sizes


def outer(g, ops, conj, leaves):
    """The part of a Kronecker product: (A ⊗ B) = (A ⊗ I)(I ⊗ B), each factor on its own axes."""
    parts, sizes = [], ()
    for o in ops:
        before = len(leaves)
        sub = g.spec(o).fft_tree(g, o, conj, leaves)
        if sub is None or g.type(o).batch:
            return None
        for lf in leaves[before:]:
            lf[2] += len(sizes)
        sizes += sub[1] if sub[1] is not None else (g.type(o).rows,)
        parts.append(sub[0])
    return ("mul", *parts), sizes


def unary(g, v, conj, leaves, wrap):
    """The part of an operator made of its one operand's: wrap(expression)."""
    o = g[v].operands[0]
    sub = g.spec(o).fft_tree(g, o, conj, leaves)
    return None if sub is None else (wrap(sub[0]), sub[1])

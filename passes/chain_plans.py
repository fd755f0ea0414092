"""Plans of a chain (passes/reassociate.py): what a plan is, what it costs, and how two
neighbouring plans merge.

A *factor* is one operator of a chain; a *plan* evaluates a stretch of the chain: a factor as it
is ("atom"), two plans one after the other ("seq"), a sum distributed over its terms
("sumdist"), or two neighbours merged into one operator of a cheaper class (the MERGES table:
a low-rank factor absorbs a neighbour, a matrix multiplies one out, diagonals multiply).  A plan
costs ``f + a·k``: ``f`` FLOPs to form it (once per call) and ``a`` FLOPs per column to apply it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(eq=False)
class Factor:
    """One factor of a chain, already built in the output graph."""

    op: int                     # operator node in the output graph
    rows: float
    cols: float
    a: float                    # FLOPs per column of applying it
    cls: str                    # "lowrank" | "dense" | "diag" | "other"
    batched: bool
    rank: float = 0.0
    parts: tuple = ()           # for a sum that may be distributed: [(factors, scalar)] per term


@dataclass(eq=False)
class Plan:
    how: str                    # atom | seq | lr_left | lr_right | dense_left | dense_right | diag | sumdist
    cls: str                    # the shape of the result: lowrank | dense | diag | other
    f: float                    # FLOPs to form it
    a: float                    # FLOPs per column to apply it
    rows: float
    cols: float
    rank: float = 0.0
    kids: tuple = ()
    factor: Factor | None = None
    batched: bool = False

    def val(self, k: float) -> float:
        return self.f + self.a * k


def in_sequence(p: Plan) -> list[Plan]:
    """The plans a tree of "seq" nodes applies, left to right (p itself when it is not one)."""
    out, stack = [], [p]
    while stack:
        q = stack.pop()
        if q.how == "seq":
            stack += [q.kids[1], q.kids[0]]
        else:
            out.append(q)
    return out


# ---- merging neighbours -------------------------------------------------------------------------
# A merge's build gets the reassociator (passes/reassociate.py) that builds the output graph.

@dataclass(frozen=True)
class Merge:
    """Two neighbouring plans L, R of a chain merged into one plan of class `cls`.

    `cost(L, R, rows, cols)` gives the merged plan's (FLOPs to form it, FLOPs per column,
    rank); `build(reassociator, L, R)` builds its operator; `event` names it in the log."""

    how: str
    cls: str
    cost: Callable
    build: Callable
    event: str


def _lowrank_left(self, L, R):       # L · lowrank(U, V) = lowrank(L U, V)
    u, v = self.out[self.op_of(R)].operands
    return self.add("lowrank", [self.apply_plan(L, u), v], span=self._span)


def _lowrank_right(self, L, R):      # lowrank(U, V) · R = lowrank(U, Rᵀ V)
    u, v = self.out[self.op_of(L)].operands
    return self.add("lowrank", [u, self.apply_plan_T(R, v)], span=self._span)


def _dense_left(self, L, R):         # L · W = dense(L W)
    w = self.out[self.op_of(R)].operands[0]
    return self.add("dense", [self.apply_plan(L, w)], span=self._span)


def _dense_right(self, L, R):        # W · R = dense((Rᵀ Wᵀ)ᵀ)
    w = self.out[self.op_of(L)].operands[0]
    z = self.apply_plan_T(R, self._tT(w, self._span))
    return self.add("dense", [self._tT(z, self._span)], span=self._span)


def _diag_diag(self, L, R):          # diag(d) diag(e) = diag(diag(d) e)
    a, b = self.op_of(L), self.op_of(R)
    return self.add("diag", [self.add("apply", [a, self.out[b].operands[0]], span=self._span)], span=self._span)


ANY = "*"
# (class of the left plan, class of the right plan; ANY: any plan) -> the merge.  In table order:
# ties between merges of one class keep the first.
MERGES = {
    (ANY, "lowrank"): Merge("lr_left", "lowrank", lambda L, R, rows, cols: (L.f + R.f + L.a * R.rank,
                                                                          2 * R.rank * (rows + cols), R.rank),
                            _lowrank_left, "lowrank-absorb"),
    ("lowrank", ANY): Merge("lr_right", "lowrank", lambda L, R, rows, cols: (L.f + R.f + R.a * L.rank,
                                                                           2 * L.rank * (rows + cols), L.rank),
                            _lowrank_right, "lowrank-absorb"),
    (ANY, "dense"): Merge("dense_left", "dense", lambda L, R, rows, cols: (L.f + R.f + L.a * cols, 2 * rows * cols,
                                                                         0.0),
                          _dense_left, "multiply-out"),
    ("dense", ANY): Merge("dense_right", "dense", lambda L, R, rows, cols: (L.f + R.f + R.a * rows, 2 * rows * cols,
                                                                          0.0),
                          _dense_right, "multiply-out"),
    ("diag", "diag"): Merge("diag", "diag", lambda L, R, rows, cols: (L.f + R.f + rows, rows, 0.0),
                            _diag_diag, "diag-product"),
}
MERGE_CLASSES = tuple(dict.fromkeys(m.cls for m in MERGES.values()))     # lowrank, dense, diag
BY_HOW = {m.how: m for m in MERGES.values()}

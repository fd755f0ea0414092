"""Reassociation: the cheapest order for every chain of operators applied to a tensor.

A *chain* is what a tensor expression multiplies together before the last
tensor: ``apply(compose(A, B, C), x)``, nested ``A @ (B @ x)``, and products of
tensors used as matrices (``(Q @ K.T) @ V`` is the chain ``Q · Kᵀ`` applied to
``V``; such a product is taken apart when nothing else uses it).  Scalars
(``c * A``) are pulled out and applied once at the end.

The chain ``F1 … Fm`` applied to ``X`` (k columns) is ordered by a dynamic
program over intervals — matrix-chain ordering generalized to structured
factors.  Every interval ``Fi … Fj`` keeps its best *plan* of each shape:

* ``seq``      — leave it a product and apply the pieces one after the other;
* ``lowrank``  — ``L · lowrank(U, V) = lowrank(L U, V)`` and
                 ``lowrank(U, V) · R = lowrank(U, Rᵀ V)``: a neighbour is
                 absorbed into a thin factor, paying its cost on r columns;
* ``dense``    — multiply out into a matrix (``L · W`` applied to W's columns);
* ``diag``     — ``diag(d) diag(e) = diag(d ∘ e)``.

A plan costs ``f + a·k``: ``f`` FLOPs to form it (once per call) and ``a``
FLOPs per column to apply it; every kind's per-column cost is its own
``Kind.flops``.  A sum in a chain is either applied as it is or distributed —
``(A + B) y = A y + B y``, each term ordered on its own — when the cost model
says that is cheaper (``sum-distribute``).  Ties keep the source order.

Chains longer than ``MAX_DP`` factors are applied right to left as written
(the DP is cubic in the chain length); the pass is linear in the graph size
otherwise: every node is visited once.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from functools import reduce

from opdsl.cost import Evaluator
from opdsl.errors import TypeError_
from opdsl.ir import Graph

from .rewrite import RewriteLog

MAX_DP = 64
EPS = 1e-9


def _kron_columns(self, n, k):
    """Factor i of a Kronecker product is applied to k times the other factors' columns."""
    cols = [self.ev.num(self.src.type(o).cols) for o in n.operands]
    total = 1.0
    for c in cols:
        total *= c
    return [k * total / c for c in cols]


def _same_columns(self, n, k):
    return [k] * len(n.operands)


# Operators whose operands are applied to a known number of columns when the
# operator is: products nested in them are ordered for those columns.
CONTAINERS = {
    "kron": _kron_columns,
    "blockdiag": _same_columns,
    "sum": _same_columns,
    "scale": _same_columns,
    "transpose": _same_columns,
}


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


class Reassociator:
    def __init__(self, src: Graph, log: RewriteLog):
        self.src = src
        self.out = src.empty_like()
        self.log = log
        self.ev = Evaluator(src.dims)
        self.tmap: dict[int, int] = {}
        self.omap: dict[int, int] = {}
        self.fcache: dict[int, Factor] = {}
        self._span = None
        self._quiet = True
        self._k: float | None = None      # columns of the chain being taken apart
        self._types: dict = {}
        self.uses: dict[int, int] = {}
        self.live = src.live()
        for v in self.live:
            for o in src[v].operands:
                self.uses[o] = self.uses.get(o, 0) + 1
        for r in src.exports.values():
            self.uses[r] = self.uses.get(r, 0) + 2   # an export is always kept

    # Shape rules of these kinds read only the operand types and the attributes,
    # so the inferred type is memoized on (kind, operand types, attributes).
    PURE = frozenset({"apply", "tadd", "tscale", "tT", "dense", "lowrank", "diag", "compose", "sum", "scale",
                      "eye", "transpose"})

    def add(self, kind, ops, attrs=None, span=None, name=None) -> int:
        g = self.out
        if kind in ("scale", "tscale") and not math.isfinite(attrs["c"]):
            # the constants pulled out of a chain multiply beyond float64 (1e300 * A @ (1e300 * B))
            raise TypeError_("the constants of this expression multiply to a number beyond float64 "
                             f"({attrs['c']})", span or self._span,
                             hint="scale by smaller constants (|c| < 1.8e308 for their product)")
        if kind not in self.PURE:
            return g.add(kind, ops, attrs, span, name)
        key = (kind, tuple(g.type(o) for o in ops), tuple(sorted((attrs or {}).items())))
        t = self._types.get(key)
        v = g.add(kind, ops, attrs, span, name, type=t)
        if t is None:
            self._types[key] = g.type(v)
        return v

    # ---- the walk ---------------------------------------------------------------
    def run(self) -> Graph:
        src = self.src
        for v in self.live:     # operands first, so the recursion below stays shallow
            if src.spec(v).produces == "tensor" and not self._absorbable(v):
                self.tensor(v)
        for name, root in src.exports.items():
            self.out.exports[name] = self.tensor(root)
        return self.out

    def _absorbable(self, v: int) -> bool:
        """A tensor that a chain may take apart: computed once, for one user."""
        return self.src.kind(v) in ("apply", "tT", "tscale", "tadd") and self.uses.get(v, 0) == 1

    def tensor(self, v: int) -> int:
        hit = self.tmap.get(v)
        if hit is not None:
            return hit
        n = self.src[v]
        if n.kind == "apply":
            out = self.chain(v)
        else:
            ops = [self.tensor(o) if not self.src.type(o).is_op else self.operator(o) for o in n.operands]
            out = self.add(n.kind, ops, n.attrs, n.span, n.name)
        if n.name and not self.out[out].name:
            self.out.rename(out, n.name)
        self.tmap[v] = out
        return out

    def operator(self, v: int, k: float | None = None) -> int:
        """Operator v rebuilt in the output graph.  With k (the columns it is applied to),
        products nested in it (the factors of a Kronecker product, the blocks of a
        block-diagonal, the terms of a sum) are ordered for the columns they see."""
        n = self.src[v]
        split = CONTAINERS.get(n.kind) if k is not None else None
        if split is None:
            k = None
        hit = self.omap.get((v, k))
        if hit is not None:
            return hit
        if split is None:
            ops = [self.operator(o) if self.src.type(o).is_op else self.tensor(o) for o in n.operands]
        else:
            ops = []
            for o, ko in zip(n.operands, split(self, n, k)):
                if not self.src.type(o).is_op:
                    ops.append(self.tensor(o))
                elif self.src.kind(o) == "compose" and not self.src.type(o).batch:
                    ops.append(self.product(o, ko))
                else:
                    ops.append(self.operator(o, ko))
        out = self.add(n.kind, ops, n.attrs, n.span, n.name)
        self.omap[(v, k)] = out
        return out

    def product(self, v: int, k: float) -> int:
        """A product of operators that is not applied to a tensor here, ordered for k columns."""
        fs: list[Factor] = []
        saved, self._k = self._k, k
        tree, c = self.expand_op(v, fs)
        self._k = saved
        if tree is None:
            return self.operator(v)
        atoms = [Plan("atom", f.cls, 0.0, f.a, f.rows, f.cols, f.rank, factor=f, batched=f.batched) for f in fs]
        plan = source = self.to_plan(tree, atoms)
        if not all(f.cls == "other" and not f.parts for f in fs) and len(fs) <= MAX_DP:
            best = self.solve(fs, k)
            if best.val(k) < plan.val(k) * (1 - EPS):
                plan = best
                self.log.add("reassociate")
        span = self.src[v].span
        self._span, self._quiet = span, plan is source
        op = self.op_of(plan)
        return op if c == 1.0 else self.add("scale", [op], {"c": c}, span)

    # ---- taking chains apart ------------------------------------------------------
    # The expanders append factors (left to right) to a list and return a *tree*
    # recording how the source groups them: ("leaf", i), ("seq", [trees]),
    # ("dl", A, Y) for a product A·Y formed as written, ("dr", Yᵀ, Aᵀ) for a
    # transposed one.  The tree gives the as-written plan, which the DP must beat.
    def chain(self, v: int) -> int:
        src = self.src
        ops = []
        x = v
        while True:
            op, nxt = src[x].operands
            ops.append(op)
            if src.kind(nxt) == "apply" and self._absorbable(nxt):
                x = nxt
                continue
            break
        saved, self._k = self._k, self.ev.num(_cols(src.type(nxt).shape))
        fs: list[Factor] = []
        trees = []
        scalar = 1.0
        for op in ops:
            t, c = self.expand_op(op, fs)
            if t is not None:
                trees.append(t)
            scalar *= c
        self._k = saved
        leaf = self.tensor(nxt)
        span = src[v].span
        tree = ("seq", trees) if trees else None
        g = self.out
        if scalar != 1.0 and _size(self, leaf) <= _size_rows(self, fs, leaf):
            leaf = self.add("tscale", [leaf], {"c": scalar}, span)
            scalar = 1.0
        y = self.solve_and_build(fs, tree, leaf, span)
        if scalar != 1.0:
            y = self.add("tscale", [y], {"c": scalar}, span)
        return y

    def expand_op(self, op: int, fs: list):
        """Append the factors of operator op; returns (tree, scalar pulled out)."""
        src = self.src
        n = src[op]
        if n.kind == "compose":
            trees, c = [], 1.0
            for o in n.operands:
                t, s = self.expand_op(o, fs)
                if t is not None:
                    trees.append(t)
                c *= s
            return (("seq", trees) if trees else None), c
        if n.kind == "scale":
            t, s = self.expand_op(n.operands[0], fs)
            return t, s * n.attrs["c"]
        if n.kind == "eye":
            return None, 1.0
        if n.kind == "dense" and not src.type(op).batch:
            return self.expand_tensor(n.operands[0], fs, False, op)
        if n.kind == "sum" and not src.type(op).batch:
            terms = []
            for o in n.operands:
                sub: list = []
                _, c = self.expand_op(o, sub)
                terms.append((sub, c))
            return self._leaf(fs, self.sum_factor(self.operator(op, self._k), terms)), 1.0
        return self._leaf(fs, self.factor(self.operator(op, self._k))), 1.0

    @staticmethod
    def _leaf(fs, f):
        fs.append(f)
        return ("leaf", len(fs) - 1)

    def expand_tensor(self, t: int, fs: list, tr: bool, dense_op: int | None = None):
        """Append the factors of matrix tensor t (of tᵀ when tr) used as an operator."""
        src, g = self.src, self.out
        n = src[t]
        if self._absorbable(t) and len(src.type(t).shape) == 2:
            if n.kind == "apply":
                a, y = n.operands
                if not src.type(a).batch and len(src.type(y).shape) == 2:
                    if not tr:
                        ta, ca = self.expand_op(a, fs)
                        ty, cy = self.expand_tensor(y, fs, False)
                        return (("dl", ta, ty) if ta is not None else ty), ca * cy
                    # (A Y)ᵀ = Yᵀ Aᵀ
                    ty, cy = self.expand_tensor(y, fs, True)
                    ta = self._leaf(fs, self.factor(self._transpose(self.operator(a))))
                    return ("dr", ty, ta), cy
            elif n.kind == "tscale":
                tt, c = self.expand_tensor(n.operands[0], fs, tr)
                return tt, c * n.attrs["c"]
            elif n.kind == "tT":
                return self.expand_tensor(n.operands[0], fs, not tr)
            elif n.kind == "tadd":
                keep = self.tensor(t)
                keep = self.add("dense", [self.add("tT", [keep], span=n.span) if tr else keep], span=n.span)
                terms = []
                for o in n.operands:
                    sub: list = []
                    _, c = self.expand_tensor(o, sub, tr)
                    terms.append((sub, c))
                return self._leaf(fs, self.sum_factor(keep, terms)), 1.0
        if dense_op is not None and not tr:
            return self._leaf(fs, self.factor(self.operator(dense_op))), 1.0
        w = self.tensor(t)
        if tr:
            w = g[w].operands[0] if g.kind(w) == "tT" else self.add("tT", [w], span=n.span)
        return self._leaf(fs, self.factor(self.add("dense", [w], span=n.span))), 1.0

    def _transpose(self, op: int) -> int:
        g = self.out
        if "symmetric" in g.type(op).props:
            return op
        t = g.spec(op).transpose(g, op)
        return t if t is not None else self.add("transpose", [op], span=g[op].span)

    # ---- factors ------------------------------------------------------------------
    def factor(self, op: int) -> Factor:
        hit = self.fcache.get(op)
        if hit is not None:
            return hit
        g, ev = self.out, self.ev
        t = g.type(op)
        cls, rank = "other", 0.0
        if not t.batch:
            cls, r = g.spec(op).chain_factor(g, op)     # the kind's registry entry
            rank = ev.num(r) if r else 0.0
        f = Factor(op, ev.num(t.rows), ev.num(t.cols), ev.num(g.spec(op).flops(g, op, 1)), cls,
                   bool(t.batch), rank)
        self.fcache[op] = f
        return f

    def sum_factor(self, op: int, terms) -> Factor:
        base = self.factor(op)
        if base.batched:
            return base
        return Factor(base.op, base.rows, base.cols, base.a, "other", False, parts=tuple(terms))

    # ---- the dynamic program ---------------------------------------------------------
    def atom(self, f: Factor, k: float) -> Plan:
        p = Plan("atom", f.cls, 0.0, f.a, f.rows, f.cols, f.rank, factor=f, batched=f.batched)
        if f.parts:
            subs = []
            for fs, c in f.parts:
                sub = self.solve(fs, k) if fs else None
                subs.append((sub, c))
            ff = sum(s.f for s, _ in subs if s is not None)
            aa = sum(s.a for s, _ in subs if s is not None) + (len(subs) - 1) * f.rows \
                + sum(f.rows for _, c in subs if c != 1.0)
            dist = Plan("sumdist", "other", ff, aa, f.rows, f.cols, kids=tuple(subs), factor=f)
            if dist.val(k) < p.val(k) * (1 - EPS):
                return dist
        return p

    def solve(self, factors: list[Factor], k: float) -> Plan:
        n = len(factors)
        atoms = [self.atom(f, k) for f in factors]
        if n == 1:
            return atoms[0]
        simple = all(f.cls == "other" and not f.parts for f in factors)
        if simple or n > MAX_DP:
            return reduce(lambda acc, p: self._seq(p, acc), reversed(atoms[:-1]), atoms[-1])
        best = [[None] * n for _ in range(n)]
        lr = [[None] * n for _ in range(n)]
        dn = [[None] * n for _ in range(n)]
        dg = [[None] * n for _ in range(n)]
        batched = [[False] * n for _ in range(n)]
        by_cls = {"lowrank": lr, "dense": dn, "diag": dg}
        for i, p in enumerate(atoms):
            best[i][i] = p
            batched[i][i] = p.batched
            if p.how == "atom" and p.cls in by_cls:
                by_cls[p.cls][i][i] = p
        for length in range(2, n + 1):
            for i in range(n - length + 1):
                j = i + length - 1
                rows, cols = factors[i].rows, factors[j].cols
                bat = batched[i][j - 1] or batched[j][j]
                batched[i][j] = bat
                b = None
                b_lr = b_dn = b_dg = None
                for t in range(i, j):
                    L, R = best[i][t], best[t + 1][j]
                    s = Plan("seq", "other", L.f + R.f, L.a + R.a, rows, cols, kids=(L, R), batched=bat)
                    if b is None or s.val(k) < b.val(k) * (1 - EPS):
                        b = s
                    if bat:
                        continue
                    Rl, Ll = lr[t + 1][j], lr[i][t]
                    if Rl is not None:      # L · lowrank(U, V) = lowrank(L U, V)
                        c = Plan("lr_left", "lowrank", L.f + Rl.f + L.a * Rl.rank, 2 * Rl.rank * (rows + cols),
                                 rows, cols, Rl.rank, kids=(L, Rl))
                        if b_lr is None or c.val(k) < b_lr.val(k):
                            b_lr = c
                    if Ll is not None:      # lowrank(U, V) · R = lowrank(U, Rᵀ V)
                        c = Plan("lr_right", "lowrank", Ll.f + R.f + R.a * Ll.rank, 2 * Ll.rank * (rows + cols),
                                 rows, cols, Ll.rank, kids=(Ll, R))
                        if b_lr is None or c.val(k) < b_lr.val(k):
                            b_lr = c
                    Rd, Ld = dn[t + 1][j], dn[i][t]
                    if Rd is not None:      # L · W = dense(L W), L applied to W's columns
                        c = Plan("dense_left", "dense", L.f + Rd.f + L.a * cols, 2 * rows * cols, rows, cols,
                                 kids=(L, Rd))
                        if b_dn is None or c.val(k) < b_dn.val(k):
                            b_dn = c
                    if Ld is not None:      # W · R = dense((Rᵀ Wᵀ)ᵀ)
                        c = Plan("dense_right", "dense", Ld.f + R.f + R.a * rows, 2 * rows * cols, rows, cols,
                                 kids=(Ld, R))
                        if b_dn is None or c.val(k) < b_dn.val(k):
                            b_dn = c
                    if dg[i][t] is not None and dg[t + 1][j] is not None:   # diag(d) diag(e) = diag(d ∘ e)
                        c = Plan("diag", "diag", dg[i][t].f + dg[t + 1][j].f + rows, rows, rows, cols,
                                 kids=(dg[i][t], dg[t + 1][j]))
                        if b_dg is None or c.val(k) < b_dg.val(k):
                            b_dg = c
                lr[i][j], dn[i][j], dg[i][j] = b_lr, b_dn, b_dg
                for c in (b_lr, b_dn, b_dg):
                    if c is not None and c.val(k) < b.val(k) * (1 - EPS):
                        b = c
                best[i][j] = b
        return best[0][n - 1]

    @staticmethod
    def _seq(L: Plan, R: Plan) -> Plan:
        return Plan("seq", "other", L.f + R.f, L.a + R.a, L.rows, R.cols, kids=(L, R),
                    batched=L.batched or R.batched)

    # ---- building a plan ------------------------------------------------------------
    def to_plan(self, tree, atoms) -> Plan:
        """The plan that evaluates the chain as written."""
        kind = tree[0]
        if kind == "leaf":
            return atoms[tree[1]]
        if kind == "seq":
            ps = [self.to_plan(t, atoms) for t in tree[1]]
            return reduce(lambda acc, p: self._seq(p, acc), reversed(ps[:-1]), ps[-1])
        L, R = self.to_plan(tree[1], atoms), self.to_plan(tree[2], atoms)
        rows, cols = L.rows, R.cols
        if kind == "dl":
            return Plan("dense_left", "dense", L.f + R.f + L.a * cols, 2 * rows * cols, rows, cols, kids=(L, R))
        return Plan("dense_right", "dense", L.f + R.f + R.a * rows, 2 * rows * cols, rows, cols, kids=(L, R))

    def solve_and_build(self, factors: list[Factor], tree, x: int, span) -> int:
        if not factors:
            return x
        k = self.ev.num(_cols(self.out.type(x).shape))
        atoms = [Plan("atom", f.cls, 0.0, f.a, f.rows, f.cols, f.rank, factor=f, batched=f.batched)
                 for f in factors]
        plan = source = self.to_plan(tree, atoms)
        simple = all(f.cls == "other" and not f.parts for f in factors)
        if not simple and len(factors) <= MAX_DP:
            best = self.solve(factors, k)
            if best.val(k) < plan.val(k) * (1 - EPS):
                plan = best
                self.log.add("reassociate")
        self._span = span
        self._quiet = plan is source
        return self.apply_plan(plan, x)

    def apply_plan(self, p: Plan, y: int) -> int:
        g = self.out
        if p.how == "seq":
            return self.apply_plan(p.kids[0], self.apply_plan(p.kids[1], y))
        if p.how == "sumdist":
            self.log.add("sum-distribute")
            ys = []
            for sub, c in p.kids:
                z = self.apply_plan(sub, y) if sub is not None else y
                if c != 1.0:
                    z = self.add("tscale", [z], {"c": c}, self._span)
                ys.append(z)
            return reduce(lambda a, b: self.add("tadd", [a, b], span=self._span), ys)
        return self.add("apply", [self.op_of(p), y], span=self._span)

    def apply_plan_T(self, p: Plan, y: int) -> int:
        """pᵀ applied to y."""
        g = self.out
        if p.how == "seq":        # (L R)ᵀ y = Rᵀ (Lᵀ y)
            return self.apply_plan_T(p.kids[1], self.apply_plan_T(p.kids[0], y))
        if p.how == "sumdist":
            ys = []
            for sub, c in p.kids:
                z = self.apply_plan_T(sub, y) if sub is not None else y
                if c != 1.0:
                    z = self.add("tscale", [z], {"c": c}, self._span)
                ys.append(z)
            return reduce(lambda a, b: self.add("tadd", [a, b], span=self._span), ys)
        return self.add("apply", [self._transpose(self.op_of(p)), y], span=self._span)

    def op_of(self, p: Plan) -> int:
        g, sp_ = self.out, self._span
        if p.how == "atom":
            return p.factor.op
        if p.how == "seq":
            a, b = self.op_of(p.kids[0]), self.op_of(p.kids[1])
            ops = [o for x in (a, b) for o in (g[x].operands if g.kind(x) == "compose" else (x,))]
            return self.add("compose", ops, span=sp_)
        if p.how == "sumdist":
            terms = []
            for sub, c in p.kids:
                o = self.op_of(sub) if sub is not None else self.add("eye", [], {"n": g.type(p.factor.op).rows})
                terms.append(o if c == 1.0 else self.add("scale", [o], {"c": c}, sp_))
            return self.add("sum", terms, span=sp_)
        if not self._quiet:
            self.log.add({"lr_left": "lowrank-absorb", "lr_right": "lowrank-absorb", "dense_left": "multiply-out",
                          "dense_right": "multiply-out", "diag": "diag-product"}[p.how])
        L, R = p.kids
        if p.how == "lr_left":        # L · lowrank(U, V) = lowrank(L U, V)
            u, v = g[self.op_of(R)].operands
            return self.add("lowrank", [self.apply_plan(L, u), v], span=sp_)
        if p.how == "lr_right":       # lowrank(U, V) · R = lowrank(U, Rᵀ V)
            u, v = g[self.op_of(L)].operands
            return self.add("lowrank", [u, self.apply_plan_T(R, v)], span=sp_)
        if p.how == "dense_left":     # L · W = dense(L W)
            w = g[self.op_of(R)].operands[0]
            return self.add("dense", [self.apply_plan(L, w)], span=sp_)
        if p.how == "dense_right":    # W · R = dense((Rᵀ Wᵀ)ᵀ)
            w = g[self.op_of(L)].operands[0]
            wt = self.add("tT", [w], span=sp_) if g.kind(w) != "tT" else g[w].operands[0]
            z = self.apply_plan_T(R, wt)
            return self.add("dense", [self.add("tT", [z], span=sp_) if g.kind(z) != "tT" else g[z].operands[0]], span=sp_)
        if p.how == "diag":           # diag(d) diag(e) = diag(diag(d) e)
            a, b = self.op_of(L), self.op_of(R)
            return self.add("diag", [self.add("apply", [a, g[b].operands[0]], span=sp_)], span=sp_)
        raise AssertionError(p.how)


def _size(self, x):
    """Elements of tensor x (a number)."""
    out = 1.0
    for d in self.out.type(x).shape:
        out *= self.ev.num(d)
    return out


def _size_rows(self, fs, x):
    """Elements of the chain's result when fs is applied to x."""
    if not fs:
        return _size(self, x)
    return _size(self, x) * fs[0].rows / max(fs[-1].cols, 1.0)


def _cols(shape):
    if len(shape) <= 1:
        return 1
    out = shape[-1]
    for d in shape[:-2]:
        out = out * d
    return out


def reassociate(g: Graph, log: RewriteLog | None = None) -> Graph:
    log = log if log is not None else RewriteLog()
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 20000))
    try:
        return Reassociator(g, log).run()
    finally:
        sys.setrecursionlimit(old)


# What the pass logs, for `opdsl explain`.
EVENTS = {
    "reassociate": "a chain is evaluated in a cheaper order than written (dynamic program over the chain)",
    "lowrank-absorb": "L·lowrank(U, V) = lowrank(L U, V); lowrank(U, V)·R = lowrank(U, Rᵀ V)",
    "multiply-out": "L·W = dense(L W): a product formed first because that is cheaper",
    "diag-product": "diag(d) diag(e) = diag(d ∘ e)",
    "sum-distribute": "(A + B) x = A x + B x, each term ordered on its own",
}

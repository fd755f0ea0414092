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

These merges are one table, ``MERGES``: (left class, right class) -> (cost,
build); a kind joins a class through ``Kind.chain_factor``, and the pass reads
the structure of a chain (products, scalars, sums, applications, transposes)
through ``Kind.chain_parts``, never by kind name.  A plan costs ``f + a·k``:
``f`` FLOPs to form it (once per call) and ``a`` FLOPs per column to apply it;
every kind's per-column cost is its own ``Kind.flops``.  A sum in a chain is either applied as it is or distributed —
``(A + B) y = A y + B y``, each term ordered on its own — when the cost model
says that is cheaper (``sum-distribute``).  Ties keep the source order.

Chains longer than ``MAX_DP`` factors are applied right to left as written
(the DP is cubic in the chain length); the pass is linear in the graph size
otherwise: every node is visited once.  A chain is a flat list of factors and
its plans are walked iteratively, so a chain of any length needs no deep
recursion; the walk over nested expressions recurses one level per level of
nesting, and a deep graph runs on opdsl.ir.run_deep's big stack.
"""
from __future__ import annotations

import math
from functools import reduce

from opdsl.cost import Evaluator
from opdsl.errors import TypeError_
from opdsl.ir import Graph, run_deep

from .chain_plans import ANY, BY_HOW, MERGE_CLASSES, MERGES, Factor, Plan, in_sequence
from .rewrite import RewriteLog

MAX_DP = 64
EPS = 1e-9
ATOM = ("atom",)
# What a chain takes apart when a tensor is used once (Kind.chain_parts): an application, a
# transpose, a scalar multiple or a sum of tensors.
TAKEN_APART = frozenset({"applied", "transposed", "scaled", "sum"})


def _parts(g, v):
    """How the kind of node v is taken apart inside a chain (Kind.chain_parts), or ATOM."""
    return g.spec(v).chain_parts(g, v) or ATOM


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
        self._parts: dict = {}
        self.uses: dict[int, int] = {}
        self.live = src.live()
        for v in self.live:
            for o in src[v].operands:
                self.uses[o] = self.uses.get(o, 0) + 1
        for r in src.exports.values():
            self.uses[r] = self.uses.get(r, 0) + 2   # an export is always kept

    def parts(self, v: int):
        """_parts of source node v, once per node (the walks ask several times)."""
        hit = self._parts.get(v)
        if hit is None:
            hit = self._parts[v] = _parts(self.src, v)
        return hit

    def add(self, kind, ops, attrs=None, span=None, name=None) -> int:
        g = self.out
        c = (attrs or {}).get("c")
        if isinstance(c, float) and not math.isfinite(c):
            # the constants pulled out of a chain multiply beyond float64 (1e300 * A @ (1e300 * B))
            raise TypeError_("the constants of this expression multiply to a number beyond float64 "
                             f"({attrs['c']})", span or self._span,
                             hint="scale by smaller constants (|c| < 1.8e308 for their product)")
        if not g.registry[kind].infer_from_types:
            return g.add(kind, ops, attrs, span, name)
        # the kind's shape rule reads only the operand types and the attributes: memoize the type on them
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
        return self.parts(v)[0] in TAKEN_APART and self.uses.get(v, 0) == 1

    def tensor(self, v: int) -> int:
        hit = self.tmap.get(v)
        if hit is not None:
            return hit
        n = self.src[v]
        if self.parts(v)[0] == "applied":
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
        split = self.src.spec(v).operand_columns(self.src, v, k) if k is not None else None
        if split is None:
            k = None
        hit = self.omap.get((v, k))
        if hit is not None:
            return hit
        if split is None:
            ops = [self.operator(o) if self.src.type(o).is_op else self.tensor(o) for o in n.operands]
        else:
            ops = []
            for o, ko in zip(n.operands, (self.ev.num(c) for c in split)):
                if not self.src.type(o).is_op:
                    ops.append(self.tensor(o))
                elif self.parts(o)[0] == "product" and not self.src.type(o).batch:
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
            if self.parts(nxt)[0] == "applied" and self._absorbable(nxt):
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
        if scalar != 1.0 and _size(self, leaf) <= _size_rows(self, fs, leaf):
            leaf = self.add("tscale", [leaf], {"c": scalar}, span)
            scalar = 1.0
        y = self.solve_and_build(fs, tree, leaf, span)
        if scalar != 1.0:
            y = self.add("tscale", [y], {"c": scalar}, span)
        return y

    def expand_op(self, op: int, fs: list):
        """Append the factors of operator op; returns (tree, scalar pulled out)."""
        parts = self.parts(op)
        role = parts[0]
        if role == "product":
            trees, c = [], 1.0
            for o in parts[1]:
                t, s = self.expand_op(o, fs)
                if t is not None:
                    trees.append(t)
                c *= s
            return (("seq", trees) if trees else None), c
        if role == "scaled":
            t, s = self.expand_op(parts[1], fs)
            return t, s * parts[2]
        if role == "identity":
            return None, 1.0
        if role == "matrix":
            return self.expand_tensor(parts[1], fs, False, op)
        if role == "sum":
            terms = []
            for o in parts[1]:
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
        src = self.src
        n = src[t]
        parts = self.parts(t)
        role = parts[0]
        if self._absorbable(t) and len(src.type(t).shape) == 2:
            if role == "applied":
                _, a, y = parts
                if not src.type(a).batch and len(src.type(y).shape) == 2:
                    if not tr:
                        ta, ca = self.expand_op(a, fs)
                        ty, cy = self.expand_tensor(y, fs, False)
                        return (("dl", ta, ty) if ta is not None else ty), ca * cy
                    # (A Y)ᵀ = Yᵀ Aᵀ
                    ty, cy = self.expand_tensor(y, fs, True)
                    ta = self._leaf(fs, self.factor(self._transpose(self.operator(a))))
                    return ("dr", ty, ta), cy
            elif role == "scaled":
                tt, c = self.expand_tensor(parts[1], fs, tr)
                return tt, c * parts[2]
            elif role == "transposed":
                return self.expand_tensor(parts[1], fs, not tr)
            elif role == "sum":
                keep = self.tensor(t)
                keep = self.add("dense", [self.add("tT", [keep], span=n.span) if tr else keep], span=n.span)
                terms = []
                for o in parts[1]:
                    sub: list = []
                    _, c = self.expand_tensor(o, sub, tr)
                    terms.append((sub, c))
                return self._leaf(fs, self.sum_factor(keep, terms)), 1.0
        if dense_op is not None and not tr:
            return self._leaf(fs, self.factor(self.operator(dense_op))), 1.0
        w = self.tensor(t)
        if tr:
            w = self._tT(w, n.span)
        return self._leaf(fs, self.factor(self.add("dense", [w], span=n.span))), 1.0

    def _tT(self, w: int, span) -> int:
        """Tensor wᵀ in the output graph, without a double transpose."""
        parts = _parts(self.out, w)
        return parts[1] if parts[0] == "transposed" else self.add("tT", [w], span=span)

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
        # the best plan of each class that merges (MERGES) for every interval
        by_cls = {c: [[None] * n for _ in range(n)] for c in MERGE_CLASSES}
        batched = [[False] * n for _ in range(n)]
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
                merged = dict.fromkeys(MERGE_CLASSES)
                for t in range(i, j):
                    L, R = best[i][t], best[t + 1][j]
                    s = Plan("seq", "other", L.f + R.f, L.a + R.a, rows, cols, kids=(L, R), batched=bat)
                    if b is None or s.val(k) < b.val(k) * (1 - EPS):
                        b = s
                    if bat:
                        continue
                    for (lc, rc), mg in MERGES.items():
                        Lp = L if lc == ANY else by_cls[lc][i][t]
                        Rp = R if rc == ANY else by_cls[rc][t + 1][j]
                        if Lp is None or Rp is None:
                            continue
                        f, a, rank = mg.cost(Lp, Rp, rows, cols)
                        c = Plan(mg.how, mg.cls, f, a, rows, cols, rank, kids=(Lp, Rp))
                        if merged[mg.cls] is None or c.val(k) < merged[mg.cls].val(k):
                            merged[mg.cls] = c
                for cls, c in merged.items():
                    by_cls[cls][i][j] = c
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
        tag = tree[0]
        if tag == "leaf":
            return atoms[tree[1]]
        if tag == "seq":
            ps = [self.to_plan(t, atoms) for t in tree[1]]
            return reduce(lambda acc, p: self._seq(p, acc), reversed(ps[:-1]), ps[-1])
        # a product of matrices formed as written: A·Y ("dl") or (Yᵀ Aᵀ)ᵀ ("dr")
        L, R = self.to_plan(tree[1], atoms), self.to_plan(tree[2], atoms)
        mg = MERGES[(ANY, "dense")] if tag == "dl" else MERGES[("dense", ANY)]
        f, a, rank = mg.cost(L, R, L.rows, R.cols)
        return Plan(mg.how, mg.cls, f, a, L.rows, R.cols, rank, kids=(L, R))

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

    # A sequence of plans is a tree of "seq" nodes as deep as the chain is long: the walks below
    # are iterative, and build the nodes in the order a right-to-left evaluation would.
    def apply_plan(self, p: Plan, y: int) -> int:
        for q in reversed(in_sequence(p)):      # (L R) y = L (R y)
            y = self._apply_one(q, y, False)
        return y

    def apply_plan_T(self, p: Plan, y: int) -> int:
        """pᵀ applied to y."""
        for q in in_sequence(p):                # (L R)ᵀ y = Rᵀ (Lᵀ y)
            y = self._apply_one(q, y, True)
        return y

    def _apply_one(self, p: Plan, y: int, transposed: bool) -> int:
        """p (pᵀ when transposed) applied to y, for a plan that is not a sequence."""
        if p.how == "sumdist":                   # (A + cB) y = A y + c (B y)
            if not transposed:
                self.log.add("sum-distribute")
            apply = self.apply_plan_T if transposed else self.apply_plan
            ys = []
            for sub, c in p.kids:
                z = apply(sub, y) if sub is not None else y
                if c != 1.0:
                    z = self.add("tscale", [z], {"c": c}, self._span)
                ys.append(z)
            return reduce(lambda a, b: self.add("tadd", [a, b], span=self._span), ys)
        op = self.op_of(p)
        return self.add("apply", [self._transpose(op) if transposed else op, y], span=self._span)

    def op_of(self, p: Plan) -> int:
        """The operator node of plan p (a product of the operators of a sequence)."""
        g = self.out
        done: list[int] = []
        stack = [(p, False)]
        while stack:                             # post-order over the seq nodes: left, right, then the product
            q, ready = stack.pop()
            if q.how != "seq":
                done.append(self._op_of_one(q))
            elif not ready:
                stack += [(q, True), (q.kids[1], False), (q.kids[0], False)]
            else:
                b = done.pop()
                a = done.pop()
                ops = [o for x in (a, b) for o in (g[x].operands if _parts(g, x)[0] == "product" else (x,))]
                done.append(self.add("compose", ops, span=self._span))
        return done[0]

    def _op_of_one(self, p: Plan) -> int:
        g, sp_ = self.out, self._span
        if p.how == "atom":
            return p.factor.op
        if p.how == "sumdist":
            terms = []
            for sub, c in p.kids:
                o = self.op_of(sub) if sub is not None else self.add("eye", [], {"n": g.type(p.factor.op).rows})
                terms.append(o if c == 1.0 else self.add("scale", [o], {"c": c}, sp_))
            return self.add("sum", terms, span=sp_)
        mg = BY_HOW[p.how]
        if not self._quiet:
            self.log.add(mg.event)
        return mg.build(self, *p.kids)


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
    # the walk recurses once per level of nesting: a deep graph gets a big stack (restored after)
    return run_deep(lambda: Reassociator(g, log).run(), g.depth())


# What the pass logs, for `opdsl explain`.
EVENTS = {
    "reassociate": "a chain is evaluated in a cheaper order than written (dynamic program over the chain)",
    "lowrank-absorb": "L·lowrank(U, V) = lowrank(L U, V); lowrank(U, V)·R = lowrank(U, Rᵀ V)",
    "multiply-out": "L·W = dense(L W): a product formed first because that is cheaper",
    "diag-product": "diag(d) diag(e) = diag(d ∘ e)",
    "sum-distribute": "(A + B) x = A x + B x, each term ordered on its own",
}

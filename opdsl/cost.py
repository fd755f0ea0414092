"""The cost model: FLOPs and the largest intermediate, as sympy expressions in the dims.

Each kind knows the FLOPs of applying itself to an ``[n, k]`` tensor
(``Kind.flops``); everything here is built on that:

* ``apply_cost(g, op, k)`` — FLOPs and largest intermediate of applying one
  operator (any kind) to ``[n, k]``.  The largest intermediate is read off the
  operator's own lowering, so it needs no second per-kind rule.
* ``graph_flops(g, roots)`` — the whole graph: every live tensor node once
  (hash-consing shares common subexpressions, so they are counted once).
  On the operator graph *as written* this is the **source-order** cost: chains
  applied right to left, products of tensors formed where they are written
  (``(Q Kᵀ) V`` forms the L×L matrix).  On the optimized graph it is the
  **optimized** cost.
* ``dense_flops(g, roots)`` — every operator materialized: an application of
  an ``m × n`` operator to ``k`` columns costs ``2·m·n·k``; an inverse or a
  log-determinant costs the dense factorization of its operand's matrix (LU
  ``2n³/3``, Cholesky ``n³/3`` when PSD) and its solves.
* ``largest_intermediate(prim, roots)`` — the largest tensor a lowered graph
  computes.
* ``Evaluator`` turns an expression into a number: concrete dims, then derived
  dims, then size hints (``dim B ~ 256``), then a default of 256;
  ``leading_order`` keeps only the highest-degree terms in the free dims.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .ir import Graph
from .kinds.linalg_analysis import triangular
from .primitives import PRIMS

DEFAULT_HINT = 256


class Evaluator:
    """Numbers for cost expressions: known values, derived dims, hints, then a default."""

    def __init__(self, dims, default: int = DEFAULT_HINT):
        self.dims = dims
        self.default = default
        env: dict = {}
        if dims is not None:
            for s in dims.symbols.values():
                if s in dims.values:
                    env[s] = sp.Integer(dims.values[s])
                elif s not in dims.derived:
                    env[s] = sp.Integer(dims.hints.get(s, default))
            for _ in range(len(dims.derived) + 1):
                for s, e in dims.derived.items():
                    if s not in dims.values:
                        env[s] = sp.sympify(e).xreplace(env)
        self.env = env
        self._cache: dict = {}

    def num(self, expr) -> float:
        if isinstance(expr, (int, float)):
            return float(expr)
        hit = self._cache.get(expr)
        if hit is not None:
            return hit
        e = sp.sympify(expr).xreplace(self.env)
        if e.free_symbols:
            e = e.xreplace({s: sp.Integer(self.default) for s in e.free_symbols})
        v = float(e)
        self._cache[expr] = v
        return v

    def assumed(self) -> dict:
        """The free dims and the numbers used for them (hint or default)."""
        if self.dims is None:
            return {}
        out = {}
        for name, s in self.dims.symbols.items():
            if s not in self.dims.values and s not in self.dims.derived:
                out[name] = (self.dims.hints.get(s, self.default), s in self.dims.hints)
        return out


def known(g: Graph, expr):
    """expr with every concrete and derived dim substituted (free dims stay symbols)."""
    t = g.dims
    e = sp.sympify(expr)
    if t is None:
        return e
    for _ in range(len(t.derived) + 1):
        new = e.xreplace(t.derived)
        if new == e:
            break
        e = new
    return sp.expand(e.xreplace({s: sp.Integer(v) for s, v in t.values.items()}))


def leading_order(g: Graph, expr):
    """The highest-degree terms of expr in the free dims (expr itself when no dim is free)."""
    e = known(g, expr)
    free = sorted(e.free_symbols, key=str)
    if not free:
        return e
    try:
        p = sp.Poly(e, *free)
    except sp.PolynomialError:
        return e
    top = max(sum(m) for m in p.monoms())
    return sp.Add(*[c * sp.Mul(*[s ** k for s, k in zip(free, m)])
                    for m, c in zip(p.monoms(), p.coeffs()) if sum(m) == top])


def _cols(shape):
    """Columns an operator sees when applied to a tensor of this shape (batch folded in)."""
    if len(shape) <= 1:
        return sp.Integer(1)
    out = sp.sympify(shape[-1])
    for d in shape[:-2]:
        out = out * d
    return out


def numel(shape):
    out = sp.Integer(1)
    for d in shape:
        out = out * d
    return out


def node_flops(g: Graph, v: int):
    """FLOPs of computing tensor node v from its operands (0 for inputs and operators)."""
    n = g[v]
    spec = g.registry[n.kind]
    if spec.produces != "tensor":
        return sp.Integer(0)
    return sp.sympify(spec.flops(g, v))


def graph_flops(g: Graph, roots=None):
    """Total FLOPs of the live tensor nodes (each once), a sympy expression."""
    total = sp.Integer(0)
    for v in g.live(roots):
        total += node_flops(g, v)
    return total


def dense_flops(g: Graph, roots=None):
    """FLOPs with every operator materialized (its matrix taken as given): 2·m·n per column of
    each application.  Linear algebra is what a dense library does with that matrix: an inverse
    factors its operand (``_dense_factorization``; once per operand and method) and then solves,
    2·n² per column (n² triangular), and an inverse inside a larger operator is formed (n
    columns); ``logdet`` factors the same way and sums n logs, ``trace`` adds n numbers,
    ``diag_of`` and ``dense`` read the matrix.  Each kind says which (Kind.dense_flops,
    Kind.dense_apply_flops) with the help of a DenseCost."""
    live = g.live(roots)
    dense = DenseCost(g, live)
    total = sp.Integer(0)
    for v in live:
        total += sp.sympify(g.spec(v).dense_flops(g, v, dense))
    return total


class DenseCost:
    """What a dense library pays on one graph (dense_flops): every operator's matrix is given,
    and a matrix is factored once for all its uses."""

    def __init__(self, g: Graph, live):
        self.g = g
        self.factored: set = set()
        self.applied: set = set()       # operators applied to a tensor
        self.used: set = set()          # nodes used otherwise (their matrix is needed)
        for v in live:
            parts = g.spec(v).chain_parts(g, v)
            if parts is not None and parts[0] == "applied":
                self.applied.add(parts[1])
            else:
                self.used.update(g[v].operands)

    def needs_matrix(self, op: int) -> bool:
        """Whether operator op is used other than applied to a tensor (or not applied at all)."""
        return op in self.used or op not in self.applied

    def factorization(self, a: int, method: str = "auto") -> str:
        return _dense_factorization(self.g, a, method)

    def factor(self, a: int, how: str):
        """FLOPs to factor operand a's matrix `how`; 0 when it was factored so before."""
        if (a, how) in self.factored:
            return sp.Integer(0)
        self.factored.add((a, how))
        t = self.g.type(a)
        n3 = t.cols ** 3 * numel(t.batch)
        # a symmetric eigendecomposition with vectors ~9n³ (Golub & Van Loan's count); expm by
        # scaling and squaring ~ a Padé-13 evaluation (6 products and a solve) plus ~4 squarings
        return {"lu": sp.Rational(2, 3) * n3, "cholesky": sp.Rational(1, 3) * n3, "eigh": 9 * n3,
                "expm": 22 * n3}.get(how, sp.Integer(0))

    def solve(self, inv: int, cols):
        """FLOPs of inverse node inv applied to `cols` columns: factor its operand, then solve."""
        g = self.g
        a = g[inv].operands[0]
        how = self.factorization(a, g[inv].attrs.get("method", "auto"))
        t = g.type(a)
        per_col = (1 if how == "triangular" else 2) * t.rows * t.cols * numel(t.batch)
        return self.factor(a, how) + per_col * cols

    def matmul(self, op: int, cols):
        """FLOPs of operator op's matrix times `cols` columns."""
        t = self.g.type(op)
        return 2 * t.rows * t.cols * numel(t.batch) * cols


def _dense_factorization(g: Graph, a: int, method: str = "auto") -> str:
    """How a dense library inverts the matrix of operator a: 'lu' (2n³/3 FLOPs), 'cholesky'
    (n³/3: known PSD, or asked for; conjugate gradients need an SPD matrix too), 'triangular'
    or 'orthogonal' (no factorization)."""
    props = g.type(a).props
    if method in ("cholesky", "cg") or (method == "auto" and "psd" in props):
        return "cholesky"
    if method == "auto" and "orthogonal" in props:
        return "orthogonal"
    if method == "auto" and triangular(g, a) is not None:
        return "triangular"
    return "lu"


def largest_intermediate(prim: Graph, roots=None, ev: Evaluator | None = None):
    """(size expression, number) of the largest tensor a lowered graph computes (arguments excluded)."""
    ev = ev or Evaluator(prim.dims)
    best, best_n = sp.Integer(0), 0.0
    for v in prim.live(roots):
        n = prim[v]
        if PRIMS[n.kind].view:      # arguments and views hold no new data
            continue
        size = numel(n.type.shape)
        x = ev.num(size)
        if x > best_n:
            best, best_n = size, x
    return best, best_n


@dataclass
class Cost:
    flops: object          # sympy expression
    peak: object           # sympy expression: elements of the largest intermediate

    def __str__(self):
        return f"{self.flops} FLOPs, largest intermediate {self.peak}"


def apply_cost(g: Graph, op: int, k=None) -> Cost:
    """FLOPs and largest intermediate of applying operator op (any kind) to an [n, k] tensor."""
    from opdsl.passes.prim_simplify import to_primitives
    k = sp.Symbol("k", integer=True, positive=True) if k is None else sp.sympify(k)
    scratch = g.empty_like()
    m: dict = {}
    o = scratch.copy_from(g, op, m)
    t = scratch.type(o)
    x = scratch.add("input", [], {"name": "__x", "shape": (t.cols, k), "dtype": "float32", "role": "input"})
    y = scratch.add("apply", [o, x])
    scratch.exports["__y"] = y
    prim = to_primitives(scratch)
    ev = Evaluator(prim.dims)
    sizes = [numel(prim[v].type.shape) for v in prim.live() if not PRIMS[prim.kind(v)].view]
    peak = max(sizes, key=lambda s: ev.num(s.subs(k, 64))) if sizes else sp.Integer(0)
    return Cost(sp.sympify(g.spec(op).flops(g, op, k)), peak)


@dataclass
class Summary:
    """The cost table of one export: sympy expressions and the evaluator that turns them into numbers."""

    dense: object              # every operator materialized
    source: object             # the program as written
    optimized: object          # after the passes
    peak_source: object        # elements of the largest intermediate, as written
    peak_optimized: object     # ... after the passes
    ev: Evaluator

    def numbers(self) -> dict:
        return {k: self.ev.num(getattr(self, k)) for k in ("dense", "source", "optimized",
                                                           "peak_source", "peak_optimized")}


def summarize(program, export: str) -> Summary:
    """Dense, source-order and optimized FLOPs and the largest intermediates of one export of a Program."""
    from opdsl.passes.prim_simplify import to_primitives
    src, opt = program.graph, program.optimized
    ev = Evaluator(src.dims)
    cache = program.__dict__.setdefault("_cost_cache", {})
    if "source-lowered" not in cache:
        cache["source-lowered"] = to_primitives(src)
    prim_src = cache["source-lowered"]
    peak_s, _ = largest_intermediate(prim_src, [prim_src.exports[export]], ev)
    peak_o, _ = largest_intermediate(program.primitive, [program.primitive.exports[export]], ev)
    return Summary(dense_flops(src, [src.exports[export]]), graph_flops(src, [src.exports[export]]),
                   graph_flops(opt, [opt.exports[export]]), peak_s, peak_o, ev)

"""Passes (pure functions Graph -> Graph) and the pass manager that runs them.

The pipeline (docs/architecture.md): ``simplify`` (algebraic identities, passes/simplify.py)
→ ``reassociate`` (cost-driven order of every chain, passes/reassociate.py)
→ ``cleanup`` (the simplify table again, for what reassociation built)
→ ``lower`` (primitive IR) → ``prim-simplify`` (small rewrites of the primitives the kinds'
lowerings meet in, passes/prim_simplify.py).  Common subexpressions are shared by construction
(``Graph.add`` is hash-consed, lowering memoizes (operator, tensor) pairs) and
dead code is never emitted (everything walks ``Graph.live()`` from the exports).

The manager records, for each pass, the graph before and after (text on
demand), the rules that fired and the time taken; with verify=True (tests, or
OPDSL_VERIFY=1) it re-runs every shape rule on the result of each pass.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

from opdsl.ir import Graph

from .lower import lower
from .prim_simplify import prim_simplify
from .reassociate import reassociate
from .rewrite import RewriteLog
from .simplify import simplify


@dataclass
class PassRecord:
    """What one pass did: the graphs around it, the rules that fired, the time taken."""

    name: str
    graph_before: Graph | None = None
    graph_after: Graph | None = None
    fired: dict = field(default_factory=dict)
    seconds: float = 0.0
    level: str = "operator"

    @property
    def before(self) -> str:
        return self.graph_before.to_text() if self.graph_before is not None else ""

    @property
    def after(self) -> str:
        return self.graph_after.to_text() if self.graph_after is not None else ""

    @property
    def changed(self) -> bool:
        return bool(self.fired) or self.level != "operator" or self.before != self.after


@dataclass
class Pass:
    name: str
    fn: Callable            # (graph, log) -> graph
    level: str = "operator"  # the level of the graph it returns
    doc: str = ""


def _simplify(g, log):
    return simplify(g, log)


def _reassociate(g, log):
    out = reassociate(g, log)
    out.meta["reassociated"] = bool(log.fired)
    return out


def _cleanup(g, log):
    # The input of reassociate was a simplify fixed point; when reassociate changed
    # nothing there is nothing new to simplify.
    if not g.meta.get("reassociated", True):
        return g
    return simplify(g, log)


def _lower(g, log):
    return lower(g)


def operator_passes() -> list[Pass]:
    """The operator-level pipeline; other modules may register more (see register_pass)."""
    return list(_PIPELINE)


_PIPELINE: list[Pass] = [
    Pass("simplify", _simplify, doc="algebraic identities to a fixed point"),
    Pass("reassociate", _reassociate, doc="the cheapest order of every chain (cost model)"),
    Pass("cleanup", _cleanup, doc="the simplify table again, on what reassociation built"),
]
LOWER = Pass("lower", _lower, "primitive", doc="operator IR to primitive IR")
# after lowering, on the primitive graph (prim_simplify.to_primitives runs the same, unrecorded)
PRIMITIVE_PASSES: list[Pass] = [
    Pass("prim-simplify", prim_simplify, "primitive", doc="small rewrites of primitives (passes/prim_simplify.py)"),
]


def pass_names() -> list[str]:
    return [p.name for p in operator_passes()] + [LOWER.name] + [p.name for p in PRIMITIVE_PASSES]


def register_pass(p: Pass, after: str | None = None):
    """Insert a pass into the operator-level pipeline (after the named one, or at the end)."""
    if any(q.name == p.name for q in _PIPELINE):
        return
    idx = len(_PIPELINE)
    if after is not None:
        idx = next(i for i, q in enumerate(_PIPELINE) if q.name == after) + 1
    _PIPELINE.insert(idx, p)


def verify(g: Graph) -> None:
    """Re-run every shape rule: rebuild each live node and compare the inferred type."""
    from opdsl.dims import CURRENT
    token = CURRENT.set(g.dims)       # as Graph.add does: shape rules compare sizes with the dims' values
    try:
        types = [(v, g.registry[g[v].kind].infer(g, g[v].operands, dict(g[v].attrs), g[v].span)) for v in g.live()]
    finally:
        CURRENT.reset(token)
    for v, t in types:
        n = g[v]
        if t != n.type:
            raise AssertionError(f"verify: node %{v} {n.kind} has type {n.type}, its rule gives {t}")


def run(g: Graph, verify_each: bool | None = None, stop_after: str | None = None):
    """Run the pipeline; returns (primitive graph, operator graph after the passes, records).

    With stop_after naming an operator pass, the pipeline stops after it and the
    primitive graph is None.
    """
    if verify_each is None:
        verify_each = os.environ.get("OPDSL_VERIFY", "") not in ("", "0")
    records: list[PassRecord] = []
    operator_graph = g
    for p in operator_passes() + [LOWER] + PRIMITIVE_PASSES:
        if stop_after is not None and records and records[-1].name == stop_after:
            break
        log = RewriteLog()
        t0 = time.perf_counter()
        out = p.fn(g, log)
        dt = time.perf_counter() - t0
        if verify_each:
            try:
                verify(out)
            except AssertionError as e:
                raise AssertionError(f"after pass {p.name}: {e}") from None
        records.append(PassRecord(p.name, g, out, dict(log.fired), dt, p.level))
        if p.level == "operator":
            operator_graph = out
        g = out
    if records[-1].level == "operator":
        return None, g, records
    return g, operator_graph, records

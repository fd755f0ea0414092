"""Passes (pure functions Graph -> Graph) and the pass manager that runs them.

The manager records, for each pass, the IR before and after, the rules that
fired and the time taken; with verify=True (tests, or OPDSL_VERIFY=1) it
re-runs every shape rule on the result of each pass.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

from opdsl.ir import Graph

from .lower import lower
from .rewrite import RewriteLog
from .simplify import simplify


@dataclass
class PassRecord:
    name: str
    before: str
    after: str
    fired: dict = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Pass:
    name: str
    fn: Callable            # (graph, log) -> graph
    level: str = "operator"  # the level of the graph it returns


def _simplify(g, log):
    return simplify(g, log)


def _lower(g, log):
    return lower(g)


def operator_passes() -> list[Pass]:
    """The operator-level pipeline; other modules may register more (see register_pass)."""
    return list(_PIPELINE)


_PIPELINE: list[Pass] = [Pass("simplify", _simplify)]


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
    for v in g.live():
        n = g[v]
        t = g.registry[n.kind].infer(g, n.operands, dict(n.attrs), n.span)
        if t != n.type:
            raise AssertionError(f"verify: node %{v} {n.kind} has type {n.type}, its rule gives {t}")


def run(g: Graph, verify_each: bool | None = None, stop_after: str | None = None):
    """Run the pipeline; returns (primitive graph, operator graph after the passes, records)."""
    if verify_each is None:
        verify_each = os.environ.get("OPDSL_VERIFY", "") not in ("", "0")
    records: list[PassRecord] = []
    for p in operator_passes() + [Pass("lower", _lower, "primitive")]:
        if stop_after is not None and records and records[-1].name == stop_after:
            break
        log = RewriteLog()
        before = g.to_text()
        t0 = time.perf_counter()
        out = p.fn(g, log)
        dt = time.perf_counter() - t0
        if verify_each:
            verify(out)
        records.append(PassRecord(p.name, before, out.to_text(), dict(log.fired), dt))
        if p.level == "primitive":
            return out, g, records
        g = out
    return None, g, records

"""Shared timing helpers: median of several runs after warm-up, 2 threads, FLOPs from the cost rules."""
from __future__ import annotations

import statistics
import time

import sympy as sp


def setup_threads(n: int = 2):
    import torch
    torch.set_num_threads(n)


def median_ms(fn, reps: int = 7, warmup: int = 2, min_time: float = 0.0) -> float:
    """Median wall time of fn() in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def export_flops(prog, export: str, **free) -> float:
    """FLOPs of one call of an export, from each kind's cost rule, with free dims bound."""
    g = prog.graph
    root = g.exports[export]
    expr = sp.sympify(g.spec(root).flops(g, root, None))
    expr = g.dims.subs(expr)
    expr = expr.subs({s: free[s.name] for s in expr.free_symbols if s.name in free})
    return float(expr)


def row(workload, baseline, opdsl_ms, baseline_ms, flop_ratio=None, target=None, note=""):
    """One result row; `target` is the minimum speed-up asked for (None: no target)."""
    speedup = baseline_ms / opdsl_ms if opdsl_ms else None
    return {
        "workload": workload, "baseline": baseline, "flop_ratio": flop_ratio,
        "opdsl_ms": opdsl_ms, "baseline_ms": baseline_ms, "speedup": speedup,
        "target": f">= {target}x" if target else "",
        "met": (speedup >= target) if (target and speedup) else None,
        "note": note,
    }

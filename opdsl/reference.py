"""The oracle: dense numpy meaning of an operator graph, and random inputs for it.

Every kind's ``dense`` gives its matrix; evaluating a graph with them in
float64 gives what any compiled program must compute.
"""
from __future__ import annotations

import numpy as np

from .ir import Graph

SMALL_FREE_DIM = 3


def dense_eval(g: Graph, root: int, inputs: dict) -> np.ndarray:
    """The value of node root with every operator materialized (float64)."""
    vals: dict[int, np.ndarray] = {}
    for v in g.live([root]):
        n = g[v]
        if n.kind == "input":
            vals[v] = np.asarray(inputs[n.attrs["name"]], dtype=np.float64)
        else:
            vals[v] = np.asarray(g.spec(v).dense(g, v, [vals[o] for o in n.operands]), dtype=np.float64)
    return vals[root]


def bind_free_dims(g: Graph, free: dict | None = None, default: int = SMALL_FREE_DIM) -> dict:
    """Values for every dim: declared ones, then `free`, then hints capped small, then `default`."""
    t = g.dims
    env = {}
    for name, s in t.symbols.items():
        if s in t.values:
            env[s] = t.values[s]
        elif free and name in free:
            env[s] = free[name]
        elif s not in t.derived:
            env[s] = min(t.hints.get(s, default), default)
    for s, e in t.derived.items():
        if s not in env:
            env[s] = int(e.subs(t.derived).subs(env))
    return env


def random_inputs(g: Graph, export: str, free: dict | None = None, dtype=None, seed: int = 0) -> dict:
    """Random arguments for one export at its declared shapes (free dims small)."""
    rng = np.random.default_rng(seed)
    env = bind_free_dims(g, free)
    out = {}
    for v in g.live([g.exports[export]]):
        n = g[v]
        if n.kind != "input":
            continue
        shape = tuple(int(g.dims.subs(d).subs(env)) for d in n.attrs["shape"])
        x = rng.standard_normal(shape)
        if len(shape) >= 2:
            x = x / np.sqrt(shape[-1])  # keep products of several factors O(1)
        out[n.attrs["name"]] = x.astype(dtype or n.attrs["dtype"])
    return out

"""The primitive interpreter: a lowered program evaluated with numpy, one primitive at a time,
through each primitive's own numpy meaning (`Prim.np`, opdsl/primitives.py).

It is the reference the backends' emit entries are tested against, primitive by primitive
(tests/test_primitives.py), and it cross-checks lowering: on every catalogue program it agrees
with the dense reference of the operator graph (opdsl/reference.py).  Values keep the dtypes the
primitive graph gives them (a float32 program computes in float32), as a backend's do.

    from opdsl.interpret import interpret
    out = interpret(program.primitive, "y", {"A": a, "x": x})
"""
from __future__ import annotations

import numpy as np
import sympy as sp

from .ir import Graph
from .primitives import PRIMS


def interpret(g: Graph, export: str, inputs: dict) -> np.ndarray:
    """The value of export `export` of primitive graph g for numpy arrays `inputs` (by argument name)."""
    root = g.exports[export]
    return evaluate(g, root, inputs, _bind_dims(g, root, inputs))


def _args(g: Graph, root: int) -> dict:
    """The arguments below root: node id -> node."""
    return {v: g[v] for v in g.live([root]) if g[v].is_arg}


def evaluate(g: Graph, root: int, inputs: dict, dims: dict) -> np.ndarray:
    """The value of node root; `dims` holds a value for every dim (symbol -> int)."""
    # the caller's arrays, as the generated code takes them (in their declared dtypes)
    vals = {v: _typed(_array(inputs[n.attrs["name"]]), n.attrs["dtype"]) for v, n in _args(g, root).items()}
    for v in g.live([root]):
        n = g[v]
        if v in vals:
            continue
        ops = [vals[o] for o in n.operands]
        attrs = {k: _concrete(a, dims, inputs, ops) for k, a in n.attrs.items()}
        vals[v] = _typed(np.asarray(PRIMS[n.kind].np(*ops, **attrs)), n.type.dtype)
    return vals[root]


def _concrete(a, dims, inputs, ops):
    """An attribute with its dims replaced by their values (shapes, sizes, slice bounds); a loop
    body (cg's) as a numpy function of its loop variable."""
    if isinstance(a, sp.Basic):
        v = sp.sympify(a).xreplace(dims)
        return int(v) if v.is_integer else float(v)
    if isinstance(a, (tuple, list)):
        return type(a)(_concrete(x, dims, inputs, ops) for x in a)
    if hasattr(a, "graph") and hasattr(a, "root"):
        return _body(a, dims, inputs, ops[len(ops) - len(a.captures):] if a.captures else [])
    return a


def _body(body, dims, inputs, captured):
    """p -> body.root evaluated with p as the loop variable, the captured values and the
    function's own arguments (what the loop body's arg nodes stand for)."""
    values = {body.graph[c].attrs["name"]: x for c, x in zip(body.captures, captured)}
    loop = body.graph[body.loop].attrs["name"]

    def apply(p):
        return evaluate(body.graph, body.root, {**inputs, **values, loop: p}, dims)
    return apply


def _array(x):
    """An argument as the interpreter holds it: a numpy array, or a scipy.sparse matrix as it is."""
    return x if hasattr(x, "tocsr") else np.asarray(x)


def _typed(x: np.ndarray, dtype: str) -> np.ndarray:
    """x in `dtype` (the primitive graph's), where numpy has that dtype (it has no bfloat16)."""
    try:
        want = np.dtype(dtype)
    except TypeError:
        return x
    return x if x.dtype == want else x.astype(want)


def _bind_dims(g: Graph, root: int, inputs: dict) -> dict:
    """A value for every dim of g: the declared ones, the free ones bound from the shapes of the
    arguments (as the generated code binds them), then the derived ones."""
    t = g.dims
    env = {s: sp.Integer(v) for s, v in t.values.items()}
    for n in _args(g, root).values():
        if n.attrs["name"] in inputs:
            for d, size in zip(n.attrs["shape"], np.shape(inputs[n.attrs["name"]])):
                d = sp.sympify(d)
                if isinstance(d, sp.Symbol) and d not in env:
                    env[d] = sp.Integer(size)
    for _ in range(len(t.derived) + 1):
        for s, e in t.derived.items():
            if s not in env:
                val = sp.sympify(e).xreplace(env)
                if not val.free_symbols:
                    env[s] = val
    return env

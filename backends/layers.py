"""What the torch and JAX layer code (each backend's initializer table) shares: the params of a
program, the export a layer computes, the default scale of an initializer, the dims params need."""
from __future__ import annotations

import sympy as sp

from opdsl.ir import Graph

from .pyexpr import pyexpr


def param_specs(g: Graph) -> list[tuple]:
    """Every param any export uses, in declaration order: (name, shape, dtype, (init, args))."""
    inits = g.meta.get("inits", {})
    seen = {}
    for name in g.exports:
        for a, s, d, r in g.meta["signatures"][name]:
            if r == "param" and a not in seen:
                seen[a] = (a, s, d, inits.get(a, ("normal", ())))
    order = g.meta.get("decl_order", list(seen))
    return [seen[a] for a in order if a in seen]


def layer_export(g: Graph) -> str:
    """The export a layer computes by default: the one named `apply`, else the first."""
    return "apply" if "apply" in g.exports else next(iter(g.exports))


def init_scale(shape) -> str:
    """Default std / bound of `normal` and `uniform`: 1/sqrt(last dim) for a matrix, 1 for a vector."""
    if len(shape) < 2:
        return "1.0"
    last = sp.sympify(shape[-1])
    return repr(1.0 / float(last) ** 0.5) if last.is_Integer else f"{pyexpr(last)} ** -0.5"


def param_dims(g: Graph, specs) -> tuple[list[str], list[str]]:
    """Free dims the params' shapes need (keyword arguments of an init function), and lines
    computing the derived dims over them."""
    t = g.dims
    used = set()
    for _, shape, _, _ in specs:
        for d in shape:
            used |= sp.sympify(d).free_symbols
    derived = [s for s in t.derived if s not in t.values and s in used]
    for s in derived:
        used |= t.derived[s].free_symbols
    free = [s.name for s in t.symbols.values() if s in used and s not in t.values and s not in t.derived]
    return free, [f"{s.name} = {pyexpr(t.derived[s])}" for s in derived]

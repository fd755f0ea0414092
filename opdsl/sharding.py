"""Sharding a program over a device mesh: which array axes split, and what communication follows.

`opdsl.compile(src, backend="jax", mesh=mesh, shard={"B": "data", "h": "model"})` names, per dim
of the program, the mesh axis it is split over.  This module is the analysis (pure functions of
the graph); JAX's partitioner (GSPMD) is the engine that runs the split program
(backends/jax_shard.py emits the placement), and docs/backends.md ("Sharding") describes both.

- An argument's axis is split over mesh axis `a` when its size is a sharded dim, or a product
  with one (`n = nb * p` with `nb` sharded: contiguous chunks of whole blocks).  An export's
  result is split the same way, so results come back sharded.
- How each operator kind splits is its registry entry's `shard_mode` hook (kinds/base.py):
  `free` (no communication: batch dims, blockdiag's blocks, a diagonal's rows, the columns an
  operator is applied to), `psum` (a contracted dim: local partial products summed —
  kron along a factor) or `gather` (the operand vector is gathered first: the default for a
  dim an operator mixes).  `Apply.shard` turns the modes into the collectives of one export,
  with their bytes, which `opdsl explain` lists.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .errors import OpdslError

MODES = ("free", "psum", "gather")            # in increasing cost: a composite takes its operands' worst


@dataclass(frozen=True)
class Comm:
    """One collective an export needs: its kind, the mesh axis, the bytes moved, why, and where."""
    collective: str             # "all-reduce" | "all-gather"
    axis: str
    bytes: object               # a sympy expression in the program's dims
    why: str
    site: str = ""

    def row(self, dims) -> dict:
        b = dims.subs(self.bytes)
        return {"collective": self.collective, "axis": self.axis,
                "bytes": float(b) if not sp.sympify(b).free_symbols else str(b), "why": self.why,
                **({"site": self.site} if self.site else {})}


def itemsize(dtype: str) -> int:
    import numpy as np
    return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize     # numpy has no bfloat16


def rounds(m) -> tuple:
    """A shard_mode answer as a tuple of rounds: a kind applied in several steps that each
    communicate (Monarch: two block-diagonal factors) answers one mode per step."""
    return (m,) if isinstance(m, str) else tuple(m)


def worst(modes) -> str:
    return max((r for m in modes for r in rounds(m)), key=MODES.index, default="free")


def resolve(g, shard: dict, mesh_axes: dict) -> dict:
    """{dim symbol: mesh axis} from the user's {dim name: mesh axis}; an unknown dim or axis, or a
    concrete dim the axis does not divide, is an OpdslError with a hint."""
    out = {}
    used = {}
    for name, axis in (shard or {}).items():
        if name not in g.dims.symbols:
            raise OpdslError(f"shard={{{name!r}: {axis!r}}}: the program has no dim {name!r}",
                             hint=f"dims: {', '.join(g.dims.symbols) or 'none'}")
        if axis not in mesh_axes:
            raise OpdslError(f"shard={{{name!r}: {axis!r}}}: the mesh has no axis {axis!r}",
                             hint=f"mesh axes: {', '.join(f'{a} ({n})' for a, n in mesh_axes.items())}")
        if axis in used:
            raise OpdslError(f"shard: dims {used[axis]!r} and {name!r} are both split over mesh axis {axis!r}",
                             hint="split each mesh axis over one dim (a 2-D mesh splits two dims)")
        used[axis] = name
        s = g.dims.symbols[name]
        value = g.dims.subs(s)
        if value.is_Integer and int(value) % mesh_axes[axis]:
            raise OpdslError(f"shard: dim {name} = {int(value)} does not split evenly over mesh axis {axis!r} "
                             f"of {mesh_axes[axis]} devices",
                             hint="pick a mesh size that divides the dim (or pad the dim)")
        out[s] = axis
    return out


def expand(g, expr):
    """A size with derived dims written out in the dims they are made of (n -> nb*p)."""
    e = sp.sympify(expr)
    for _ in range(len(g.dims.derived) + 1):
        new = e.subs(g.dims.derived)
        if new == e:
            break
        e = new
    return e


def axis_spec(g, shape, sharded: dict) -> tuple:
    """Per axis of a shape, the mesh axis it is split over (None: whole on every device).

    An axis splits when its size is a sharded dim or a product with a sharded factor.  A mesh
    axis splits at most one axis of an array: the last such, which for a matrix applied as an
    operator (`W : [n, n]`, a Kronecker factor) is the one contracted with x's split rows, so
    that each device multiplies its own columns by its own rows and the partial products are
    summed (the plan's all-reduce) rather than x gathered."""
    spec, taken = [None] * len(shape), set()
    for i in reversed(range(len(shape))):
        e = expand(g, shape[i])
        factors = e.args if isinstance(e, sp.Mul) else (e,)
        hit = next((sharded[f] for f in factors if f in sharded and sharded[f] not in taken), None)
        if hit is not None:
            taken.add(hit)
            spec[i] = hit
    while spec and spec[-1] is None:          # P("d") rather than P("d", None, None)
        spec.pop()
    return tuple(spec)


def export_specs(g, export: str, signature, sharded: dict) -> tuple[dict, tuple]:
    """({argument: spec}, result spec) of one export of the primitive graph `g`.  A sparse
    argument stays whole on every device (a BCOO's arrays are its entries, not its rows)."""
    ins = {a: axis_spec(g, node["shape"], sharded) for a, node in signature if not node.get("sparse")}
    out = axis_spec(g, g.type(g.exports[export]).shape, sharded)
    return {a: s for a, s in ins.items() if s}, out


def mode(g, v, s) -> str:
    """How operator node v applies when dim symbol s is split (its kind's shard_mode hook)."""
    return g.spec(v).shard_mode(g, v, s)


def symbols_of(g, t) -> set:
    """The dims an operator type's rows and columns are made of."""
    return set().union(*(expand(g, d).free_symbols for d in (t.rows, t.cols)))


def communication(g, export: str, sharded: dict) -> list[Comm]:
    """The collectives applying the export needs on the operator graph `g`, by the kinds' hooks."""
    out = []
    for v in g.live([g.exports[export]]):
        out.extend(g.spec(v).shard(g, v, sharded))
    return out


def check_mesh(mesh, shard) -> dict:
    """{axis: size} of a jax Mesh or of a {axis: size} dict (the CLI's --mesh)."""
    if mesh is None:
        if shard:
            raise OpdslError("shard= needs mesh=", hint="pass mesh=jax.make_mesh((8,), ('data',)) "
                             "(or {'data': 8} to see the plan without devices)")
        return {}
    if isinstance(mesh, dict):
        axes = dict(mesh)
    elif hasattr(mesh, "shape") and hasattr(mesh, "axis_names"):
        axes = {a: int(mesh.shape[a]) for a in mesh.axis_names}
    else:
        raise OpdslError(f"mesh= takes a jax.sharding.Mesh or a dict of axis sizes, not {type(mesh).__name__}")
    bad = [a for a, n in axes.items() if not isinstance(a, str) or not a.isidentifier() or int(n) < 1]
    if bad:
        raise OpdslError(f"mesh axis {bad[0]!r}: axes are names with a positive size")
    return {a: int(n) for a, n in axes.items()}


def plan(program) -> tuple[dict, dict]:
    """({mesh axis: size}, {export: [Comm]}) of a compiled Program ({}, {} when not sharded)."""
    backend = program._backend
    axes = getattr(backend, "mesh_axes", {})
    if not axes or not getattr(backend, "shard", None):
        return {}, {}
    g = program.optimized
    sharded = backend.sharded(g)
    # a mesh axis of one device splits nothing: no communication over it
    return axes, {name: [c for c in communication(g, name, sharded) if axes[c.axis] > 1]
                  for name in program.functions}

"""Sharded JAX exports: the code a module compiled with `mesh=` / `shard=` carries.

The analysis (which axes split, what communication follows) is opdsl/sharding.py; here is the
placement.  Each sharded export's entry point puts its arguments on the mesh with
`jax.device_put(x, NamedSharding(mesh, P(...)))` and constrains its result the same way
(`jax.lax.with_sharding_constraint`), so results come back sharded; XLA's partitioner (GSPMD)
derives every intermediate's placement and inserts the collectives the plan predicts.  The
module names the mesh axes it was compiled for; `use_mesh(mesh)` binds devices (Program does it
for the mesh given to compile), and an unbound module runs unsharded.

jax.make_mesh gives Explicit axes by default in current JAX, under which every op must state its
output sharding; the module uses an Auto-axes view of the same devices instead, so both kinds of
mesh work and the partitioner decides.
"""
from __future__ import annotations

RUNTIME = '''

# ---- sharding over a device mesh (docs/backends.md, "Sharding") -------------------
# Per sharded export: the mesh axis each argument's axes split over, and the result's.
MESH_AXES = {axes!r}
_MESH = []          # the bound mesh (an Auto-axes view), set by use_mesh
_SHARDED = {{}}       # (export, mesh) -> the jitted, result-constrained function


def use_mesh(mesh):
    """Run the sharded exports on `mesh`, a jax.sharding.Mesh with the axes MESH_AXES (None:
    unsharded again).  jax.make_mesh's Explicit axes are used through an Auto-axes view."""
    if mesh is None:
        _MESH[:] = []
        return
    from jax.sharding import AxisType, Mesh
    sizes = {{a: int(mesh.shape[a]) for a in mesh.axis_names}}
    if any(sizes.get(a) != n for a, n in MESH_AXES.items()):
        raise ValueError(f"this module was compiled for a mesh with axes {{MESH_AXES}}, not {{sizes}}")
    _MESH[:] = [Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))]


def _named(spec):
    from jax.sharding import NamedSharding, PartitionSpec
    return NamedSharding(_MESH[0], PartitionSpec(*spec))


def _place(name, kwargs, specs, nested):
    """The arguments on the mesh (inside a caller's trace: as sharding constraints)."""
    out = dict(kwargs)
    for a, spec in specs.items():
        if a not in out:
            continue
        try:
            out[a] = (jax.lax.with_sharding_constraint(out[a], _named(spec)) if nested
                      else jax.device_put(out[a], _named(spec)))
        except ValueError as e:
            raise ArgumentError(f"{{name}}(): argument {{a!r}} cannot be split as PartitionSpec{{spec}} over "
                                f"the mesh {{MESH_AXES}}: {{e}}") from None
    return out


def _sharded_fn(fn, shard, jit):
    key = (fn.__name__, id(_MESH[0]))
    hit = _SHARDED.get(key)
    if hit is None:
        out_spec = shard[1]

        @functools.wraps(fn)
        def constrained(**kwargs):
            return jax.lax.with_sharding_constraint(fn(**kwargs), _named(out_spec))
        top = jax.jit(constrained, compiler_options=_XLA_OPTIONS) if jit and _XLA_OPTIONS else \\
            (jax.jit(constrained) if jit else constrained)
        hit = _SHARDED[key] = (constrained, top)
    return hit


def _run_sharded(fn, shard, kwargs, jit, nested):
    constrained, top = _sharded_fn(fn, shard, jit)
    placed = _place(fn.__name__, kwargs, shard[0], nested)
    return (constrained if nested else top)(**placed)
'''


def entry_arg(in_specs: dict, out_spec: tuple) -> str:
    """The `shard=` argument of an export's `_jit(...)` call."""
    return f", shard=({in_specs!r}, {out_spec!r})"

"""opdsl.jax: params for the JAX backend.

A program compiled with ``backend="jax"`` that declares ``param``s gets, in its
generated module (and so in ``opdsl compile --backend jax -o layer.py``):

* ``init_params(key)`` (also ``init``): a dict of fresh param values, the
  params pytree, drawn with the initializers of the ``.op`` file;
* every export with params also accepts that dict as its first argument, so
  ``apply(params, x=x)`` works next to ``apply(x=x, L=..., R=...)``; ``apply``
  is the export named ``apply``, or else an alias of the first export.

In Python, ``prog.init(key)`` and ``prog.apply(params, **inputs)`` reach the
same functions (opdsl/api.py).  Everything is a plain function of arrays, so it
composes with ``jax.jit``, ``jax.grad`` and ``jax.vmap``.

This module holds the code emission (hooked into backends/jax_backend.py).
"""
from __future__ import annotations

from .backends.pycodegen import init_scale, layer_export, param_dims, param_specs, pyexpr, shape_code


def _normal(key, shape, dt, args, dims):
    mean = float(args[0]) if args else 0.0
    std = repr(float(args[1])) if len(args) > 1 else init_scale(dims)
    draw = f"{std} * jax.random.normal({key}, {shape}, {dt})"
    return draw if mean == 0.0 else f"{mean!r} + {draw}"


def _uniform(key, shape, dt, args, dims):
    lo, hi = (repr(float(a)) for a in args) if args else (f"-{init_scale(dims)}", init_scale(dims))
    return f"jax.random.uniform({key}, {shape}, {dt}, {lo}, {hi})"


def _eye(key, shape, dt, args, dims):
    eye = f"jnp.eye({pyexpr(dims[-2])}, {pyexpr(dims[-1])}, dtype={dt})"
    return eye if len(dims) == 2 else f"jnp.broadcast_to({eye}, {shape})"


JAX_INIT = {   # initializer (frontend.INIT_ARGS) -> fn(key code, shape code, dtype code, args, shape) -> expression
    "normal": _normal,
    "uniform": _uniform,
    "zeros": lambda key, shape, dt, args, dims: f"jnp.zeros({shape}, {dt})",
    "ones": lambda key, shape, dt, args, dims: f"jnp.ones({shape}, {dt})",
    "eye": _eye,
    "orthogonal": lambda key, shape, dt, args, dims: f"_orthogonal({key}, {shape}, {dt})",
}

ORTHOGONAL = '''

def _orthogonal(key, shape, dtype):
    """Orthonormal columns (or rows, when wide) per matrix: Q of the QR of a Gaussian matrix, signs fixed."""
    m, n = shape[-2], shape[-1]
    work = jnp.float64 if dtype == jnp.float64 else jnp.float32
    a = jax.random.normal(key, tuple(shape[:-2]) + (max(m, n), min(m, n)), work)
    q, r = jnp.linalg.qr(a)
    q = q * jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))[..., None, :]
    return (q if m >= n else jnp.swapaxes(q, -1, -2)).astype(dtype)'''

WITH_PARAMS = '''

def _with_params(fn, names):
    """fn(params, **inputs), params a dict (the pytree of init_params), as well as fn(**inputs, **params)."""
    @functools.wraps(fn)
    def call(params=None, /, **inputs):
        if params is not None:
            inputs = {**{k: params[k] for k in names if k in params}, **inputs}
        return fn(**inputs)

    return call'''


def params_source(backend, g) -> str:
    """The code appended to a generated JAX module whose program declares params ("" when it has none)."""
    specs = param_specs(g)
    if not specs:
        return ""
    free, derived = param_dims(g, specs)
    kw = "".join(f", {d}" for d in free)
    names = tuple(a for a, *_ in specs)
    out = ["", "", "# ---- params: init_params(key) gives the params pytree (a dict); exports take it as a "
           "first argument", f"PARAMS = {names!r}"]
    if any(init[0] == "orthogonal" for *_, init in specs):
        out.extend(ORTHOGONAL.splitlines())
    out += ["", "", f"def init_params(key=0{', *' + kw if free else ''}):",
            '    """Fresh values of every param (a dict: the params pytree), drawn with the initializers of '
            "the .op file.",
            "",
            '    key: a jax.random key or an int seed."""',
            "    if isinstance(key, int):",
            "        key = jax.random.PRNGKey(key)",
            "    if X64:   # float64 params: drawn with 64-bit types enabled",
            "        with jax.enable_x64(True):",
            f"            return _init_params(key{''.join(f', {d}={d}' for d in free)})",
            f"    return _init_params(key{''.join(f', {d}={d}' for d in free)})",
            "", "",
            f"def _init_params(key{', *' + kw if free else ''}):"]
    out += [f"    {line}" for line in derived]
    out += [f"    _keys = jax.random.split(key, {len(specs)})", "    return {"]
    for i, (a, shape, dt, (iname, args)) in enumerate(specs):
        out.append(f"        {a!r}: {JAX_INIT[iname](f'_keys[{i}]', shape_code(shape), backend.dtype(dt), args, shape)},")
    out.append("    }")
    if "init" not in g.exports:
        out += ["", "", "init = init_params"]
    out.extend(WITH_PARAMS.splitlines())
    out.append("")
    out.append("")
    for name in g.exports:
        own = tuple(a for a, _, _, r in g.meta["signatures"][name] if r == "param")
        if own:
            out.append(f"{name} = _with_params({name}, {own!r})")
    if "apply" not in g.exports:
        main = layer_export(g)
        wrapped = any(r == "param" for *_, r in g.meta["signatures"][main])
        out.append(f"apply = {main if wrapped else f'_with_params({main}, ())'}  # the layer: apply(params, **inputs)")
    return "\n".join(out) + "\n"

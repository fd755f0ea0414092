"""The JAX backend: emit table for jax.numpy, every export jit-compiled.

The generated module defines each export as a plain function (argument checks,
then one statement per primitive) and then rebinds its name to a jit-compiled
entry point.  The entry point

* checks the dtype of every array argument *before* tracing: with 64-bit
  types disabled, ``jax.jit`` silently converts a float64 argument to float32,
  so a check inside the traced function alone would never fire;
* enables 64-bit types only around calls of a program that computes in
  float64 (``jax.enable_x64(True)`` is a context manager: the user's global
  ``jax_enable_x64`` setting is left as it is);
* runs the shape checks while tracing (shapes are static under jit, so they
  run once per new argument shape and cost nothing afterwards).
"""
from __future__ import annotations

from opdsl.primitives import orf_expr

from .array_api import array_api_emit
from .pycodegen import PythonBackend, nested_function, site

ENTRY = '''

# ---- jit-compiled entry points ------------------------------------------------
# Dtypes are checked before tracing (jax.jit would convert a float64 argument to
# float32 silently when 64-bit types are off); shapes are checked while tracing.
X64 = {x64}  # {x64_why}


def _compiler_options():
    """XLA options for every export: XLA:CPU's YNNPACK fusions off.  In jaxlib 0.10 they run a
    batched matmul (blockdiag, Monarch, kron's second factor) on one thread, where XLA's own
    kernels use all cores (blockdiag n=4096 on 2 cores: 9.3 -> 4.8 ms; docs/backends.md).
    None where this jaxlib does not know the option."""
    options = {{"xla_cpu_experimental_ynn_fusion_type": ""}}
    try:
        jax.jit(lambda v: v, compiler_options=options).lower(np.zeros(1, np.float32)).compile()
    except Exception:  # noqa: BLE001 - an older or newer XLA: its defaults
        return None
    return options


_XLA_OPTIONS = _compiler_options()


def _jit(fn, dtypes, jit=True, singular=None):
    """The entry point of export `fn`: dtype checks, then fn under jax.jit (jit=False: op by op,
    for exports whose loops need values on the host, e.g. conjugate gradients); `singular` names
    the solves of the export, whose non-finite result raises SingularError after the call."""
    traced = jax.jit(fn) if jit else fn
    # compiler options are for top-level jits only: inside the user's jit / vmap / grad the
    # plain one is traced into the user's computation
    top = jax.jit(fn, compiler_options=_XLA_OPTIONS) if jit and _XLA_OPTIONS else traced

    @functools.wraps(fn)
    def call(**kwargs):
        for name, want in dtypes.items():
            value = kwargs.get(name)
            if hasattr(value, "dtype") and value.dtype != want:
                _dtype_error(fn.__name__, name, value, want.name)
        if X64:
            with jax.enable_x64(True):
                return run(kwargs)
        return run(kwargs)

    def run(kwargs):
        nested = any(isinstance(v, jax.core.Tracer) for v in jax.tree_util.tree_leaves(kwargs))
        out = (traced if nested else top)(**kwargs)
        if singular is not None:
            _finite(singular, out)
        return out

    call.traced = top                  # the jit function direct calls go through
    return call
'''

BATCH = '''

def _cho_solve(l, b):
    """x with l lᵀ x = b, l lower triangular."""
    return jax.scipy.linalg.cho_solve((l, True), b)


def _batched(a, b):
    """a [..., n, n] and b [..., n, k] with their batch dims broadcast to each other (lax.linalg needs it)."""
    batch = jnp.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return jnp.broadcast_to(a, batch + a.shape[-2:]), jnp.broadcast_to(b, batch + b.shape[-2:])
'''
# exports using these primitives run op by op (their loop needs values on the host)
EAGER_PRIMS = ("cg",)
# exports using these report a singular matrix (a non-finite result) as SingularError after the call
SINGULAR_PRIMS = ("solve", "cholesky", "cho_solve", "checked")


def uses_float64(g) -> bool:
    """Whether any value of the primitive graph is float64 (or complex128)."""
    return any(g.type(v).dtype in ("float64", "complex128") for v in g.live())


def _cg(c, n, a):
    """jax.scipy.sparse.linalg.cg on the loop body as a nested function (implicitly differentiated,
    no residual report; docs/linalg.md)."""
    jac = n.attrs.get("precond") == "jacobi"
    fname, lines = nested_function(c, n.attrs["body"], a[1 + jac:])
    m = f", M=lambda _r: {a[1]} * _r" if jac else ""
    return lines, (f"jax.scipy.sparse.linalg.cg({fname}, {a[0]}, tol={n.attrs['tol']!r}, "
                   f"maxiter={int(n.attrs['maxiter'])}{m})[0]")


class JaxBackend(PythonBackend):
    name = "jax"
    imports = ("import functools", "", "import jax", "import jax.numpy as jnp", "import jax.scipy.linalg",
               "import numpy as np")
    dtypes = {"float32": "jnp.float32", "float64": "jnp.float64", "float16": "jnp.float16",
              "bfloat16": "jnp.bfloat16"}
    reserved = ("np", "jnp", "jax", "functools", "X64")
    array = "a jax or numpy array"
    layer_api = ("key",)              # init_params(key, ...)
    emit = {
        **array_api_emit("jnp"),
        "einsum": lambda c, n, a: f"jnp.einsum({n.attrs['spec']!r}, {', '.join(a)})",
        # FAVOR+ features: numpy at trace time, a constant of the compiled function
        "orf": lambda c, n, a: (f"jnp.asarray({orf_expr(n.attrs['m'], n.attrs['d'], n.attrs['seed'])}, "
                                f"dtype={c.backend.dtype(n.attrs['dtype'])})"),
        # linear algebra: inside jit nothing can raise, so a singular matrix shows as a non-finite
        # result, which the entry point reports as SingularError (see _jit)
        "solve": lambda c, n, a: f"jnp.linalg.solve({a[0]}, {a[1]})",
        "cholesky": lambda c, n, a: f"jnp.linalg.cholesky({a[0]})",
        "cho_solve": lambda c, n, a: f"_cho_solve(*_batched({a[0]}, {a[1]}))",
        "solve_triangular": lambda c, n, a: (f"jax.lax.linalg.triangular_solve(*_batched({a[0]}, {a[1]}), "
                                             f"left_side=True, lower={not bool(n.attrs.get('upper', True))})"),
        "checked": lambda c, n, a: a[0],
        "cg": _cg,
    }

    def generate(self, g) -> str:
        src = super().generate(g)
        x64 = uses_float64(g)
        lines = [ENTRY.format(x64=x64, x64_why="this program computes in float64: 64-bit types are "
                              "enabled around its calls only" if x64 else "float32 program: 64-bit "
                              "types are left as configured").rstrip("\n")]
        if any(g[v].kind in ("cho_solve", "solve_triangular") for v in g.live()):
            lines.append(BATCH.rstrip("\n"))
        lines.append("")
        for name, root in g.exports.items():
            want = ", ".join(f"{a!r}: np.dtype({self.dtype(node['dtype'])})" for a, node in self._args(g, name))
            used = [g[v] for v in g.live([root])]
            extra = ""
            if any(n.kind in EAGER_PRIMS for n in used):
                extra += ", jit=False"
            sites = sorted({site(n.span) for n in used if n.kind in SINGULAR_PRIMS})
            if sites:
                extra += f", singular={'; '.join(sites)!r}"
            lines.append("")
            lines.append(f"{name} = _jit({name}, {{{want}}}{extra})")
        from opdsl.jax import params_source   # init_params(key), exports taking the params pytree
        return src + "\n".join(lines) + "\n" + params_source(self, g)

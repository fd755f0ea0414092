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

A program with ``param``s also gets ``init_params(key)`` (the params pytree, drawn
with the initializers of the .op file) and exports that take that dict first
(``params_source``; what users see of it is described in opdsl/jax.py).
"""
from __future__ import annotations

from opdsl.primitives import CG_PRECOND_OPERANDS, PRIMS

from .array_api import array_api_emit, emit_pivchol, emit_slq, index_code
from .layers import init_scale, layer_export, param_dims, param_specs
from .pycodegen import PythonBackend, nested_function
from .pyexpr import pyexpr, shape_code, shape_str
from .pyruntime import KERNEL_RUNTIME, SQDIST_RUNTIME, const_name, helpers_used, site
from .sparse_runtime import JAX_CHECK, JAX_EMIT, JAX_SPARSE
from . import jax_shard

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


def _matmul(a, b):
    """a @ b.  A matrix applied to a batch (b has more dims) is broadcast to the batch first when
    that copy is no larger than b: XLA then runs one batched GEMM instead of a GEMM and a transpose
    of its result (kron's second factor: 5.7 -> 3.4 ms at 64x64, 256 columns, 2 cores).  Shapes
    are static under jit: the test runs once, while tracing."""
    if 2 <= a.ndim < b.ndim:
        batch = b.shape[:-2]
        if int(np.prod(batch)) * a.shape[-2] * a.shape[-1] <= b.size:
            a = jnp.broadcast_to(a, batch + a.shape[-2:])
    return a @ b


def _jit(fn, dtypes, jit=True, singular=None, sparse=None, shard=None):
    """The entry point of export `fn`: dtype checks, then fn under jax.jit (jit=False: op by op,
    for exports whose loops need values on the host, e.g. conjugate gradients); `singular` names
    the solves of the export, whose non-finite result raises SingularError after the call;
    `sparse`: argument -> declaration of the sparse ones, checked to be BCOOs first; `shard`:
    (argument -> partition spec, result spec) of a module compiled for a mesh, used once
    use_mesh has bound one."""
    traced = jax.jit(fn) if jit else fn
    # compiler options are for top-level jits only: inside the user's jit / vmap / grad the
    # plain one is traced into the user's computation
    top = jax.jit(fn, compiler_options=_XLA_OPTIONS) if jit and _XLA_OPTIONS else traced

    @functools.wraps(fn)
    def call(**kwargs):
        for name, decl in (sparse or {{}}).items():
            if name in kwargs:
                _check_sparse(fn.__name__, name, kwargs[name], decl)
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
        if shard is not None and _MESH:
            out = _run_sharded(fn, shard, kwargs, jit, nested)
        else:
            out = (traced if nested else top)(**kwargs)
        if singular is not None:
            _finite(singular, out)
        return out

    def hlo(**kwargs):
        """The compiled HLO text of this export for these arguments (sharded: with its collectives)."""
        if not jit:
            raise ValueError(f"{{fn.__name__}} runs op by op (a loop on the host): it has no one HLO module")
        with jax.enable_x64(X64):
            if shard is not None and _MESH:
                f, kwargs = _sharded_fn(fn, shard, jit)[1], _place(fn.__name__, kwargs, shard[0], False)
            else:
                f = top
            return f.lower(**kwargs).compile().as_text()

    call.traced = top                  # the jit function direct calls go through
    call.hlo = hlo
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


LINREC_SCAN = '''

def _linrec_scan(p, h):
    """The states entering each step of S_{c+1} = P_c S_c + H_c, S_0 = 0 (primitive linrec), as one
    jax.lax.scan over axis -3 (differentiable; compiled once, not unrolled per chunk)."""
    batch = jnp.broadcast_shapes(p.shape[:-3], h.shape[:-3])
    p = jnp.moveaxis(jnp.broadcast_to(p, batch + p.shape[-3:]), -3, 0)
    h = jnp.moveaxis(jnp.broadcast_to(h, batch + h.shape[-3:]), -3, 0)

    def step(s, ph):
        return ph[0] @ s + ph[1], s
    _, states = jax.lax.scan(step, jnp.zeros(h.shape[1:], h.dtype), (p, h))
    return jnp.moveaxis(states, 0, -3)
'''


NEWTON_LOOP = '''

def _newton_root_jax(a, root, eps, tol, maxiter):
    """a^(-1/root) by the coupled Newton iteration (pyruntime's _newton_root) as a jax.lax.while_loop:
    traceable under jit; not reverse-differentiable (use the eigendecomposition for gradients)."""
    ident = jnp.eye(a.shape[-1], dtype=a.dtype)
    alpha = -1.0 / root
    a = a + eps * ident
    z = (root + 1) / (2 * jnp.sqrt((a * a).sum((-2, -1)))[..., None, None])

    def step(s):
        x, m, k = s
        mp = alpha * m + (1 - alpha) * ident
        return x @ mp, jnp.linalg.matrix_power(mp, root) @ m, k + 1

    def going(s):
        return (jnp.abs(s[1] - ident).max() > tol) & (s[2] < maxiter)
    x, _, _ = jax.lax.while_loop(going, step, (z ** (1.0 / root) * ident, z * a, 0))
    return x
'''


JAX_KERNEL = SQDIST_RUNTIME + KERNEL_RUNTIME + '''


def _kernel_apply_jax(x, y, v, ls, s, family, tile):
    """s K(X, Y) V as a lax.map over row tiles, each checkpointed: the backward recomputes a tile
    instead of keeping n x m values."""
    n = x.shape[0]
    tile = min(_kernel_rows(tile, y), n)
    count = -(-n // tile)
    tiles = jnp.pad(x, ((0, count * tile - n), (0, 0))).reshape(count, tile, x.shape[1])
    one = jax.checkpoint(lambda xt: _kernel_tile(xt, y, v, ls, s, family, jnp.exp))
    return jax.lax.map(one, tiles).reshape(count * tile, v.shape[-1])[:n]


def _kernel_matrix_jax(x, y, ls, s, family, tile):
    """s K(X, Y) [n, m] in one expression: XLA fuses the formula's elementwise steps."""
    return _kernel_matrix_tile(x, y, ls, s, family, jnp.exp)
'''


def uses_float64(g) -> bool:
    """Whether any value of the primitive graph is float64 (or complex128, or int64 indices)."""
    return any(g.type(v).dtype in ("float64", "complex128", "int64") for v in g.live())


def _cg(c, n, a):
    """jax.scipy.sparse.linalg.cg on the loop body as a nested function (implicitly differentiated,
    no residual report; docs/linalg.md), with the preconditioner as M."""
    precond = n.attrs.get("precond", "none")
    pre = CG_PRECOND_OPERANDS[precond]
    fname, lines = nested_function(c, n.attrs["body"], a[1 + pre:])
    m = ""
    if precond == "jacobi":
        m = f", M=lambda _r: {a[1]} * _r"
    elif precond == "pivchol":       # (L Lᵀ + D)⁻¹ = D⁻¹ − U Uᵀ (kinds/linalg_cg.py)
        m = f", M=lambda _r: {a[1]} * _r - {a[2]} @ ({a[2]}.T @ _r)"
    return lines, (f"jax.scipy.sparse.linalg.cg({fname}, {a[0]}, tol={n.attrs['tol']!r}, "
                   f"maxiter={int(n.attrs['maxiter'])}{m})[0]")


# ---- params: initializers, init_params(key) and exports taking the params pytree ----------------
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


class JaxBackend(PythonBackend):
    name = "jax"
    own_runtime = {"linrec": LINREC_SCAN, "expm": None, "newton": NEWTON_LOOP, "kernel": JAX_KERNEL, "put": None,
                   "sparse": JAX_SPARSE}
    sparse_check = JAX_CHECK   # scans, not unrolled loops
    imports = ("import functools", "", "import jax", "import jax.numpy as jnp", "import jax.scipy.linalg",
               "import numpy as np")
    dtypes = {"float32": "jnp.float32", "float64": "jnp.float64", "float16": "jnp.float16",
              "bfloat16": "jnp.bfloat16", "int32": "jnp.int32", "int64": "jnp.int64",
              "complex64": "jnp.complex64", "complex128": "jnp.complex128"}
    reserved = ("np", "jnp", "jax", "functools", "X64", "MESH_AXES", "use_mesh")
    array = "a jax or numpy array"
    emits_initializers = True
    layer_api = ("key",)              # init_params(key, ...)
    emit = {
        **JAX_EMIT,
        "complex": lambda c, n, a: (f"jax.lax.complex({a[0]}[..., 0], {'-' if n.attrs.get('conj') else ''}"
                                    f"{a[0]}[..., 1])"),
        **array_api_emit("jnp"),
        "einsum": lambda c, n, a: f"jnp.einsum({n.attrs['spec']!r}, {', '.join(a)})",
        "matmul": lambda c, n, a: f"_matmul({a[0]}, {a[1]})",
        # a constant: a numpy array computed once, at the module's top (pyruntime.module_constants),
        # which jax.jit folds into the compiled function
        "const": lambda c, n, a: f"jnp.asarray({const_name(n)}, dtype={c.backend.dtype(n.attrs['dtype'])})",
        # linear algebra: inside jit nothing can raise, so a singular matrix shows as a non-finite
        # result, which the entry point reports as SingularError (see _jit)
        "solve": lambda c, n, a: f"jnp.linalg.solve({a[0]}, {a[1]})",
        "cholesky": lambda c, n, a: f"jnp.linalg.cholesky({a[0]})",
        "cho_solve": lambda c, n, a: f"_cho_solve(*_batched({a[0]}, {a[1]}))",
        "solve_triangular": lambda c, n, a: (f"jax.lax.linalg.triangular_solve(*_batched({a[0]}, {a[1]}), "
                                             f"left_side=True, lower={not bool(n.attrs.get('upper', True))}"
                                             + (", unit_diagonal=True)" if n.attrs.get("unit") else ")")),
        "checked": lambda c, n, a: a[0],
        "cg": _cg,
        "pivchol": emit_pivchol("jnp.arange", "jnp.stack", "jnp.where"),
        # lax's tridiagonal solve takes the sub- and super-diagonals padded to n (dl[0], du[n-1] unused)
        "tridiag_solve": lambda c, n, a: (f"jax.lax.linalg.tridiagonal_solve(jnp.concatenate([{a[1]}[:1] * 0, {a[0]}]), "
                                          f"{a[1]}, jnp.concatenate([{a[2]}, {a[1]}[:1] * 0]), {a[3]})"),
        "tridiag_logdet": lambda c, n, a: f"_tridiag_logdet({', '.join(a)}, jnp.concatenate, jnp.stack, jnp.log)",
        "put": lambda c, n, a: (f"jnp.zeros({a[0]}.shape[:-2] + ({pyexpr(n.attrs['n'])}, {a[0]}.shape[-1]), "
                                f"{a[0]}.dtype).at[..., {index_code(n, a, pyexpr(n.attrs['n']))}, :].add({a[0]})"),
        "slq": emit_slq("jnp.linalg.eigh", "lambda m: jnp.eye(m, dtype={z}.dtype)", "jnp.log"),
        "linrec": lambda c, n, a: f"_linrec_scan({a[0]}, {a[1]})",
        "eigh": lambda c, n, a: f"_eigh({a[0]}, jnp.linalg.eigh, jnp.concatenate)",
        "expm": lambda c, n, a: f"jax.scipy.linalg.expm({a[0]})",
        "kernel_apply": lambda c, n, a: (f"_kernel_apply_jax({', '.join(a)}, {n.attrs['family']!r}, "
                                         f"{int(n.attrs['tile'])})"),
        "kernel_matrix": lambda c, n, a: (f"_kernel_matrix_jax({', '.join(a)}, {n.attrs['family']!r}, "
                                          f"{int(n.attrs['tile'])})"),
        "invroot_newton": lambda c, n, a: (f"_newton_root_jax({a[0]}, {int(n.attrs['root'])}, "
                                           f"{float(n.attrs['eps'])!r}, {float(n.attrs['tol'])!r}, "
                                           f"{int(n.attrs['maxiter'])})"),
    }

    def __init__(self, mesh=None, shard=None):
        from opdsl.sharding import check_mesh
        self.mesh_axes = check_mesh(mesh, shard)       # {axis: size}; {} when not sharded
        self.mesh = mesh if self.mesh_axes and not isinstance(mesh, dict) else None   # devices to bind
        self.shard = dict(shard or {})

    def sharded(self, g) -> dict:
        """{dim symbol: mesh axis} of the program (validated against its dims and the mesh)."""
        from opdsl.sharding import resolve
        return resolve(g, self.shard, self.mesh_axes)

    def load(self, source, g):
        module = super().load(source, g)
        if self.mesh is not None and self.shard:
            module.use_mesh(self.mesh)
        return module

    def generate(self, g) -> str:
        from opdsl.sharding import export_specs
        sharded = self.sharded(g) if self.shard else {}
        src = super().generate(g)
        x64 = uses_float64(g)
        lines = [ENTRY.format(x64=x64, x64_why="this program computes in float64: 64-bit types are "
                              "enabled around its calls only" if x64 else "float32 program: 64-bit "
                              "types are left as configured").rstrip("\n")]
        if "batched" in helpers_used(g):     # _cho_solve, _batched (Prim.runtime)
            lines.append(BATCH.rstrip("\n"))
        lines.append("")
        for name, root in g.exports.items():
            want = ", ".join(f"{a!r}: np.dtype({self.dtype(node['dtype'])})" for a, node in self.signature(g, name))
            used = [g[v] for v in g.live([root])]
            extra = ""
            if any(PRIMS[n.kind].is_eager(n.attrs) for n in used):   # a loop, a check of indices: host values
                extra += ", jit=False"
            # a singular matrix shows as a non-finite result, reported as SingularError after the call
            sites = sorted({site(n.span) for n in used if PRIMS[n.kind].singular})
            if sites:
                extra += f", singular={'; '.join(sites)!r}"
            sparse = {a: shape_str(node["shape"]) + " sparse" for a, node in self.signature(g, name) if node["sparse"]}
            if sparse:
                extra += f", sparse={sparse!r}"
            if sharded:
                extra += jax_shard.entry_arg(*export_specs(g, name, self.signature(g, name), sharded))
            lines.append("")
            lines.append(f"{name} = _jit({name}, {{{want}}}{extra})")
        if sharded:
            lines.append(jax_shard.RUNTIME.format(axes=self.mesh_axes).rstrip("\n"))
        return src + "\n".join(lines) + "\n" + self.params_source(g)

    @staticmethod
    def from_numpy(arrays: dict) -> dict:
        import jax
        import jax.numpy as jnp
        import scipy.sparse
        from jax.experimental import sparse as jsparse

        def one(v):
            return jsparse.BCOO.from_scipy_sparse(v) if scipy.sparse.issparse(v) else jnp.asarray(v)
        with jax.enable_x64(True):   # float64 inputs stay float64 (the global setting may be 32-bit)
            return {k: one(v) for k, v in arrays.items()}

    def params_source(self, g) -> str:
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
            out.append(f"        {a!r}: {JAX_INIT[iname](f'_keys[{i}]', shape_code(shape), self.dtype(dt), args, shape)},")
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


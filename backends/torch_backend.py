"""The PyTorch backend: emit table for torch (CPU or GPU, whichever device the arguments are on), and
the layer code: params with their declared initializers, each export that has params as an nn.Module.

Linear algebra (opdsl/kinds/linalg.py, docs/linalg.md): singular matrices raise SingularError.
"""
from __future__ import annotations

import warnings

import numpy as np

from opdsl.primitives import CG_PRECOND_OPERANDS
from opdsl.pytext import docstring

from .array_api import emit_pivchol, index_code, newton_call, python_emit
from . import torch_fuse
from .layers import init_scale, param_dims, param_specs
from .pycodegen import PythonBackend, function_doc, nested_function
from .pyexpr import fill_value, number, pyexpr, shape_code
from .pyruntime import CG_RUNTIME, KERNEL_RUNTIME, SLQ_RUNTIME, SQDIST_EXACT, const_name, site
from .sparse_runtime import TORCH_CHECK, TORCH_EMIT, TORCH_SPARSE

UNARY = {
    "neg": "-{x}", "exp": "torch.exp({x})", "log": "torch.log({x})", "sqrt": "torch.sqrt({x})",
    "recip": "torch.reciprocal({x})", "relu": "torch.relu({x})", "abs": "torch.abs({x})",
    "square": "torch.square({x})",
    # elu1 in the stable form where(x >= 0, x + 1, exp(min(x, 0))), written as
    # exp(min(x, 0)) + max(x, 0) (the same numbers) with in-place ops: 2 temporaries instead of 4.
    # The in-place add_ goes into max(x, 0), whose gradient does not need it: exp_'s saved result
    # stays intact for autograd (adding into the exp_ result instead breaks backward).
    "elu1": "{x}.clamp(min=0).add_({x}.clamp(max=0).exp_())",
}


def _tril(c, n, a):
    k, fill = int(n.attrs.get("k", 0)), n.attrs.get("fill", 0.0)
    if fill == 0.0:
        return f"torch.tril({a[0]}, {k})"
    r, cl = (pyexpr(s) for s in n.type.shape[-2:])
    return (f"{a[0]}.masked_fill(torch.ones({r}, {cl}, dtype=torch.bool, device={a[0]}.device)"
            f".triu({k + 1}), {number(fill)})")


def _dtype(c, n) -> str:
    return c.backend.dtype(n.attrs["dtype"])


# ---- layers: initializers ----------------------------------------------------------------------
def _normal(shape, dt, args, dims):
    mean = float(args[0]) if args else 0.0
    std = repr(float(args[1])) if len(args) > 1 else init_scale(dims)
    return f"torch.empty({shape}, dtype={dt}, device=device).normal_({mean!r}, {std}, generator=generator)"


def _uniform(shape, dt, args, dims):
    lo, hi = (repr(float(a)) for a in args) if args else (f"-{init_scale(dims)}", init_scale(dims))
    return f"torch.empty({shape}, dtype={dt}, device=device).uniform_({lo}, {hi}, generator=generator)"


def _eye(shape, dt, args, dims):
    eye = f"torch.eye({pyexpr(dims[-2])}, {pyexpr(dims[-1])}, dtype={dt}, device=device)"
    return eye if len(dims) == 2 else f"{eye}.expand({shape}).clone()"


TORCH_INIT = {   # initializer (frontend.INIT_ARGS) -> fn(shape code, dtype code, args, shape) -> expression
    "normal": _normal,
    "uniform": _uniform,
    "zeros": lambda shape, dt, args, dims: f"torch.zeros({shape}, dtype={dt}, device=device)",
    "ones": lambda shape, dt, args, dims: f"torch.ones({shape}, dtype={dt}, device=device)",
    "eye": _eye,
    "orthogonal": lambda shape, dt, args, dims: f"_orthogonal({shape}, {dt}, device, generator)",
}

ORTHOGONAL = '''

def _orthogonal(shape, dtype, device, generator):
    """Orthonormal columns (or rows, when wide) per matrix: Q of the QR of a Gaussian matrix, signs fixed."""
    m, n = shape[-2], shape[-1]
    work = torch.float64 if dtype == torch.float64 else torch.float32
    a = torch.randn(tuple(shape[:-2]) + (max(m, n), min(m, n)), dtype=work, device=device, generator=generator)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    return (q if m >= n else q.mT).to(dtype).contiguous()'''


def _camel(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in name.split("_") if p) or "Layer"


TORCH_SQDIST = SQDIST_EXACT + '''


def _sqdist(x, y, exact):
    """|x_i - y_j|^2, never negative, as the other backends' _sqdist (pyruntime.SQDIST_RUNTIME); the
    expanded form as one addmm and two in-place passes instead of five fresh temporaries (the RBF
    matvec at n = 10,000, 2 threads: 151 ms, against 476 ms summing differences and 254 ms for
    row tiles of exp(-cdist^2 / 2) @ v)."""
    if exact and x.shape[1] <= 8:
        return _sqdist_exact(x, y)
    r2 = torch.addmm((y * y).sum(-1)[None, :], x, y.T, alpha=-2)
    return r2.add_((x * x).sum(-1)[:, None]).clamp_(min=0)'''

TORCH_KERNEL = TORCH_SQDIST + KERNEL_RUNTIME + '''


def _exp_(t):
    """exp in place: _kernel_of passes it fresh temporaries only (-0.5 r2, -r), whose producers
    keep no reference to them for autograd; saves a tile-sized allocation per call."""
    return t.exp_()


def _tile_grads(fn, saved, need, grad, tile):
    """The gradients of fn(x[rows], *rest) (one tile of rows of x = saved[0]) against grad, tile
    by tile, each tile recomputed (KeOps' way): x's gradient is written into one result, the
    others summed.  `need`: which of saved want one."""
    total = [None] * len(saved)
    if need[0]:
        total[0] = torch.zeros_like(saved[0])     # written tile by tile (no list to concatenate)
    for i in range(0, saved[0].shape[0], tile):
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(w) for t, w in zip((saved[0][i:i + tile],) + saved[1:], need)]
            out = fn(*leaves)
            wanted = [t for t, w in zip(leaves, need) if w]
            grads = iter(torch.autograd.grad(out, wanted, grad[i:i + tile]) if wanted else ())
        for k, w in enumerate(need):
            if w and k == 0:
                total[0][i:i + tile] = next(grads)
            elif w:
                gk = next(grads)
                total[k] = gk if total[k] is None else total[k] + gk
    return total


def _kernel_backward(ctx, grad, tile_fn):
    """The backward of _KernelApply and _KernelMatrix: tile_fn(rows of x, *the other saved, family,
    exp) recomputed tile by tile; no gradient for family and tile."""
    saved = ctx.saved_tensors
    total = _tile_grads(lambda *a: tile_fn(*a, ctx.family, _exp_), saved, ctx.needs_input_grad[:len(saved)],
                        grad, _kernel_rows(ctx.tile, saved[1]))
    return (*total, None, None)


class _KernelApply(torch.autograd.Function):
    """s K(X, Y) V by row tiles, with a backward that recomputes each tile (KeOps' way): memory
    O(tile m) forward and backward, never the n x m matrix or its graph."""

    @staticmethod
    def forward(ctx, x, y, v, ls, s, family, tile):
        ctx.save_for_backward(x, y, v, ls, s)
        ctx.family, ctx.tile = family, tile
        return _kernel_apply(x, y, v, ls, s, family, tile, _exp_)

    @staticmethod
    def backward(ctx, grad):
        return _kernel_backward(ctx, grad, _kernel_tile)


class _KernelMatrix(torch.autograd.Function):
    """s K(X, Y) [n, m] by row tiles, with a backward that recomputes each tile: the matrix and its
    gradient are held, not the kernel formula's n x m temporaries (autograd of the formula would
    keep about six of them)."""

    @staticmethod
    def forward(ctx, x, y, ls, s, family, tile):
        ctx.save_for_backward(x, y, ls, s)
        ctx.family, ctx.tile = family, tile
        return _kernel_matrix(x, y, ls, s, family, tile, _exp_)

    @staticmethod
    def backward(ctx, grad):
        return _kernel_backward(ctx, grad, _kernel_matrix_tile)


def _kernel_matrix_torch(x, y, ls, s, family, tile):
    return _KernelMatrix.apply(x, y, ls, s, family, tile)


def _kernel_apply_torch(x, y, v, ls, s, family, tile):
    return _KernelApply.apply(x, y, v, ls, s, family, tile)'''


TORCH_CG = CG_RUNTIME + '''


def _operator_grads(matvec, x, values, need, weight):
    """The gradients for `values` (those `need` marks) of <weight, A x>, A applied by
    matvec(p, *values) with x held fixed."""
    if not any(need):
        return [None] * len(values)
    with torch.enable_grad():
        leaves = [v.detach().requires_grad_(w) for v, w in zip(values, need)]
        out = matvec(x.detach(), *leaves)
        wanted = [t for t, w in zip(leaves, need) if w]
        grads = iter(torch.autograd.grad(out, wanted, weight, allow_unused=True))
    return [next(grads) if w else None for w in need]


def _multiple_of(grad, b, x):
    """A⁻¹ grad without a solve when grad is a multiple of b column by column (c b, as in the
    gradient of bᵀ A⁻¹ b): c x, the forward's solution.  None otherwise."""
    if grad.shape != b.shape:
        return None
    bb = (b * b).sum(-2, keepdim=True)
    c = (grad * b).sum(-2, keepdim=True) / (bb + (bb == 0))
    rest = grad - c * b
    if float((rest * rest).sum()) > 1e-12 * float((grad * grad).sum()):
        return None
    return c * x


def _narrow(matvec, values):
    """p -> matvec(p, *values) with p [n, k] handed over column-major: a large matrix times a narrow
    one runs 1.4x faster that way in torch's CPU sgemm (72 vs 52 ms for 10,000² x 10,000 x 10, 2
    threads); a copy of p costs n k."""
    return lambda p: matvec(p.mT.contiguous().mT, *values)


class _CGSolve(torch.autograd.Function):
    """x = A⁻¹ b by _cg, differentiated implicitly (GPyTorch's way, not autograd through the
    steps): ∂x = A⁻¹ (∂b − ∂A x), so the backward is one more solve λ = A⁻¹ ḡ (A symmetric), b's
    gradient is λ and the values A reads get the gradient of −λᵀ A x.  `precond` (a tuple: _cg's
    minv, lowrank) preconditions both solves and gets no gradient (the solution does not depend
    on it)."""

    @staticmethod
    def forward(ctx, what, matvec, tol, maxiter, b, precond, *values):
        x = _cg(what, _narrow(matvec, values), b, tol, maxiter, *precond)
        ctx.what, ctx.matvec, ctx.tol, ctx.maxiter, ctx.precond = what, matvec, tol, maxiter, precond
        ctx.save_for_backward(x, b, *values)
        return x

    @staticmethod
    def backward(ctx, grad):
        x, b, *values = ctx.saved_tensors
        lam = _multiple_of(grad, b, x)
        if lam is None:
            lam = _cg(ctx.what + " (its gradient)", _narrow(ctx.matvec, values), grad, ctx.tol,
                      ctx.maxiter, *ctx.precond)
        grads = _operator_grads(ctx.matvec, x, values, ctx.needs_input_grad[6:], -lam)
        return (None, None, None, None, lam if ctx.needs_input_grad[4] else None, None, *grads)


def _cg_torch(what, matvec, b, tol, maxiter, precond, *values):
    return _CGSolve.apply(what, matvec, tol, maxiter, b, precond, *values)'''

TORCH_SLQ = SLQ_RUNTIME + '''


class _SLQ(torch.autograd.Function):
    """log det A by _slq, with GPyTorch's gradient estimator instead of autograd through the
    Lanczos steps: ∂ log det A = tr(A⁻¹ ∂A) ≈ (1/t) Σ zᵢᵀ A⁻¹ ∂A zᵢ over the same probes, from the
    solves wᵢ = A⁻¹ zᵢ (_cg at `tol`, preconditioned by `precond` as _CGSolve's).  An unbiased estimate of the exact gradient, not the
    derivative of the probe estimate itself (docs/kernels.md)."""

    @staticmethod
    def forward(ctx, what, matvec, z, steps, eigh, eye, log, tol, maxiter, precond, *values):
        ctx.what, ctx.matvec, ctx.tol, ctx.maxiter, ctx.precond = what, matvec, tol, maxiter, precond
        ctx.save_for_backward(z, *values)
        return _slq(_narrow(matvec, values), z, steps, eigh, eye, log)

    @staticmethod
    def backward(ctx, grad):
        z, *values = ctx.saved_tensors
        w = _cg(ctx.what + " (its gradient)", _narrow(ctx.matvec, values), z, ctx.tol, ctx.maxiter,
                *ctx.precond)
        grads = _operator_grads(ctx.matvec, z, values, ctx.needs_input_grad[10:], grad * w / z.shape[-1])
        return (None,) * 10 + tuple(grads)


def _slq_torch(what, matvec, z, steps, eigh, eye, log, tol, maxiter, precond, *values):
    return _SLQ.apply(what, matvec, z, steps, eigh, eye, log, tol, maxiter, precond, *values)'''


def _emit_cg(ctx, n, a):
    """_cg_torch: the loop body as a nested function taking what it reads as parameters (the
    inputs of the custom autograd function _CGSolve); the preconditioner's operands in a tuple
    (no gradient goes to them)."""
    pre = CG_PRECOND_OPERANDS[n.attrs.get("precond", "none")]
    fname, lines, values = nested_function(ctx, n.attrs["body"], a[1 + pre:], explicit=True)
    precond = "(" + "".join(x + ", " for x in a[1:1 + pre]) + ")"
    args = ", ".join([repr(site(n.span)), fname, a[0], repr(n.attrs["tol"]), str(int(n.attrs["maxiter"])),
                      precond] + values)
    return lines, f"_cg_torch({args})"


def _emit_slq(ctx, n, a):
    """_slq_torch; the steps x steps tridiagonal is decomposed in float64: in float32 its nearly
    repeated Ritz values make eigh ill-conditioned (nan gradients at n = 1,000 when autograd ran
    through it)."""
    pre = CG_PRECOND_OPERANDS[n.attrs.get("precond", "none")]
    fname, lines, values = nested_function(ctx, n.attrs["body"], a[1 + pre:], explicit=True)
    eigh = "lambda t: tuple(r.to(t.dtype) for r in torch.linalg.eigh(t.double()))"
    eye = f"lambda m: torch.eye(m, dtype={a[0]}.dtype, device={a[0]}.device)"
    precond = "(" + "".join(x + ", " for x in a[1:1 + pre]) + ")"
    args = ", ".join([repr(site(n.span)), fname, a[0], str(int(n.attrs["steps"])), eigh, eye, "torch.log",
                      repr(float(n.attrs.get("tol", 1e-2))), str(int(n.attrs.get("maxiter", 1000))), precond]
                     + values)
    return lines, f"_slq_torch({args})"


class TorchBackend(PythonBackend):
    name = "torch"
    own_runtime = {"expm": None, "kernel": TORCH_KERNEL, "cg": TORCH_CG, "slq": TORCH_SLQ, "put": None,
                   "sparse": TORCH_SPARSE}
    sparse_check = TORCH_CHECK
    imports = ("import numpy as np", "import torch")
    dtypes = {"float32": "torch.float32", "float64": "torch.float64", "float16": "torch.float16",
              "bfloat16": "torch.bfloat16", "int32": "torch.int32", "int64": "torch.int64",
              "complex64": "torch.complex64", "complex128": "torch.complex128"}
    has_device = True
    emits_initializers = True
    reserved = ("np", "torch", "_dev")
    array = "a torch.Tensor"
    array_module, arrays, convert = "torch", "torch tensors", "torch.as_tensor(...)"
    layer_api = ("self", "generator", "names", "device")   # init_params(...), Layer(...), forward(self, ...)

    def __init__(self, compile: bool = False, fuse: bool = True):
        self.compile = bool(compile)       # each export through torch.compile (backends/torch_compile.py)
        self.fuse = bool(fuse)             # fused library calls, in-place into dead temporaries (torch_fuse.py)

    def fusions(self, g, root):
        return torch_fuse.plan(g, root) if self.fuse else ({}, set())

    def wrap(self, fn, graph, export):
        if not self.compile:
            return fn
        from .torch_compile import compiled
        return compiled(fn, export)
    emit = {
        **python_emit(),
        **TORCH_EMIT,
        "eye": lambda c, n, a: f"torch.eye({pyexpr(n.attrs['n'])}, dtype={_dtype(c, n)}, device={c.dev})",
        "zeros": lambda c, n, a: f"torch.zeros({shape_code(n.attrs['shape'])}, dtype={_dtype(c, n)}, device={c.dev})",
        "fill": lambda c, n, a: (f"torch.full({shape_code(n.attrs['shape'])}, {fill_value(n.attrs['value'])}, "
                                 f"dtype={_dtype(c, n)}, device={c.dev})"),
        "tri": lambda c, n, a: (f"torch.ones({pyexpr(n.attrs['n'])}, {pyexpr(n.attrs['m'])}, "
                                f"dtype={_dtype(c, n)}, device={c.dev}).tril({int(n.attrs['k'])})"),
        "permute": lambda c, n, a: f"{a[0]}.permute{tuple(n.attrs['perm'])}",
        "swap": lambda c, n, a: f"{a[0]}.mT",
        "flip": lambda c, n, a: f"torch.flip({a[0]}, dims=({n.attrs['axis']},))",
        "concat": lambda c, n, a: f"torch.cat([{', '.join(a)}], dim={n.attrs['axis']})",
        "tril": _tril,
        "diagonal": lambda c, n, a: f"torch.diagonal({a[0]}, dim1=-2, dim2=-1)",
        "einsum": lambda c, n, a: f"torch.einsum({n.attrs['spec']!r}, {', '.join(a)})",
        "shift": lambda c, n, a: f"{a[0]} + {number(n.attrs['c'])}",
        "unary": lambda c, n, a: UNARY[n.attrs["fn"]].format(x=a[0]),
        "cast": lambda c, n, a: f"{a[0]}.to({_dtype(c, n)})",
        "sum": lambda c, n, a: f"{a[0]}.sum(dim={n.attrs['axis']}, keepdim={bool(n.attrs.get('keepdims'))})",
        "max": lambda c, n, a: f"{a[0]}.amax(dim={n.attrs['axis']}, keepdim={bool(n.attrs.get('keepdims'))})",
        "cumsum": lambda c, n, a: f"torch.cumsum({a[0]}, dim={n.attrs['axis']})",
        "rfft": lambda c, n, a: f"torch.fft.rfft({a[0]}, n={pyexpr(n.attrs['n'])}, dim=-1)",
        "irfft": lambda c, n, a: f"torch.fft.irfft({a[0]}, n={pyexpr(n.attrs['n'])}, dim=-1)",
        "rfftn": lambda c, n, a: (f"torch.fft.rfftn({a[0]}, s={shape_code(n.attrs['s'])}, "
                                  f"dim={tuple(range(-len(n.attrs['s']), 0))})"),
        "irfftn": lambda c, n, a: (f"torch.fft.irfftn({a[0]}, s={shape_code(n.attrs['s'])}, "
                                   f"dim={tuple(range(-len(n.attrs['s']), 0))})"),
        "complex": lambda c, n, a: (f"torch.view_as_complex({a[0]}.contiguous())"
                                    + (".conj()" if n.attrs.get("conj") else "")),
        # a constant: a numpy array computed once, at the module's top (pyruntime.module_constants)
        "const": lambda c, n, a: f"torch.as_tensor({const_name(n)}, dtype={_dtype(c, n)}, device={c.dev})",
        # linear algebra: _linalg / _finite raise the module's SingularError (pyruntime.LINALG_RUNTIME)
        "solve": lambda c, n, a: f"_linalg({site(n.span)!r}, torch.linalg.solve, {a[0]}, {a[1]})",
        "cholesky": lambda c, n, a: f"_linalg({site(n.span)!r}, torch.linalg.cholesky, {a[0]})",
        "cho_solve": lambda c, n, a: f"_linalg({site(n.span)!r}, torch.cholesky_solve, {a[1]}, {a[0]})",
        "solve_triangular": lambda c, n, a: (f"torch.linalg.solve_triangular({a[0]}, {a[1]}, "
                                             f"upper={bool(n.attrs.get('upper', True))}"
                                             + (", unitriangular=True)" if n.attrs.get("unit") else ")")),
        "checked": lambda c, n, a: f"_finite({site(n.span)!r}, {a[0]})",
        "slogdet": lambda c, n, a: f"torch.linalg.slogdet({a[0]})[1]",
        "cg": _emit_cg,
        "pivchol": emit_pivchol("lambda m: torch.arange(m, device={d}.device)", "torch.stack", "torch.where"),
        "tridiag_solve": lambda c, n, a: f"_tridiag_solve({', '.join(a)}, torch.cat, torch.stack, torch.log)",
        "put": lambda c, n, a: (f"torch.zeros({a[0]}.shape[:-2] + ({pyexpr(n.attrs['n'])}, {a[0]}.shape[-1]), "
                                f"dtype={a[0]}.dtype, device={a[0]}.device).index_add(-2, "
                                + (index_code(n, a, pyexpr(n.attrs['n'])) if len(a) > 1 else
                                   f"torch.as_tensor({list(n.attrs['idx'])!r}, device={a[0]}.device)")
                                + f", {a[0]})"),
        "tridiag_logdet": lambda c, n, a: f"_tridiag_logdet({', '.join(a)}, torch.cat, torch.stack, torch.log)",
        "slq": _emit_slq,
        "linrec": lambda c, n, a: f"_linrec({a[0]}, {a[1]}, torch.stack)",
        "eigh": lambda c, n, a: f"_eigh({a[0]}, torch.linalg.eigh, torch.cat)",
        # torch's matrix_exp returns NaN in bfloat16 / float16: computed in float32 there
        "expm": lambda c, n, a: (f"torch.linalg.matrix_exp({a[0]}.float()).to({a[0]}.dtype)"
                                 if n.type.dtype in ("bfloat16", "float16") else f"torch.linalg.matrix_exp({a[0]})"),
        "kernel_apply": lambda c, n, a: (f"_kernel_apply_torch({', '.join(a)}, {n.attrs['family']!r}, "
                                         f"{int(n.attrs['tile'])})"),
        "kernel_matrix": lambda c, n, a: (f"_kernel_matrix_torch({', '.join(a)}, {n.attrs['family']!r}, "
                                          f"{int(n.attrs['tile'])})"),
        "invroot_newton": lambda c, n, a: newton_call(
            n, a, f"torch.eye({a[0]}.shape[-1], dtype={a[0]}.dtype, device={a[0]}.device)"),
    }

    @staticmethod
    def from_numpy(arrays: dict) -> dict:
        import torch
        import scipy.sparse

        def one(v):
            if scipy.sparse.issparse(v):        # a sparse argument: CSR, as torch.sparse.mm takes it
                v = scipy.sparse.csr_array(v)
                v.sum_duplicates()                  # sorted, distinct column indices per row
                with warnings.catch_warnings():     # "CSR support is in beta"
                    warnings.simplefilter("ignore", UserWarning)
                    return torch.sparse_csr_tensor(torch.from_numpy(v.indptr).long(),
                                                   torch.from_numpy(v.indices).long(), torch.from_numpy(v.data),
                                                   v.shape, check_invariants=True)
            # ascontiguousarray makes a 0-d array 1-d: keep the shape
            return torch.from_numpy(np.ascontiguousarray(v).reshape(np.shape(v)))
        return {k: one(v) for k, v in arrays.items()}

    def layer_lines(self, g) -> list[str]:
        """`init_params(generator, names=..., device=...)` and, for each export with params, a class
        `<Export>(torch.nn.Module)` whose params are nn.Parameters and whose forward takes the inputs."""
        import torch
        specs = param_specs(g)
        if not specs:
            return []
        free, derived = param_dims(g, specs)
        kw = "".join(f"{d}, " for d in free)
        out = ["", "", "# ---- layers: the params with their declared initializers; each export that has params "
               "as a torch.nn.Module", f"PARAMS = {tuple(a for a, *_ in specs)!r}"]
        if any(init[0] == "orthogonal" for *_, init in specs):
            out.extend(ORTHOGONAL.splitlines())
        out += ["", "", f"def init_params(generator=None, *, {kw}names=PARAMS, device=None):",
                '    """Fresh values of the params `names` (default: all), drawn with the initializers of the .op file.',
                "",
                '    generator: a torch.Generator or an int seed (None: the global RNG)."""',
                "    if isinstance(generator, int):",
                "        generator = torch.Generator(device=device or 'cpu').manual_seed(generator)"]
        out += [f"    {line}" for line in derived]
        out.append("    _out = {}")
        for a, shape, dt, (iname, args) in specs:
            out.append(f"    if {a!r} in names:")
            out.append(f"        _out[{a!r}] = {TORCH_INIT[iname](shape_code(shape), self.dtype(dt), args, shape)}")
        out.append("    return _out")
        # a layer class is named after its export (w -> W): away from every user name (param W)
        taken = set(g.exports) | set(g.dims.symbols) | {"PARAMS", "ArgumentError"} | {
            a for sig in g.meta["signatures"].values() for a, *_ in sig}
        for name in g.exports:
            sig = g.meta["signatures"][name]
            params = [a for a, _, _, r in sig if r == "param"]
            inputs = [a for a, _, _, r in sig if r != "param"]
            if not params:
                continue
            clash = [a for a in params if hasattr(torch.nn.Module, a)] + [a for a in inputs if a == "self"]
            cls = _camel(name)
            while cls in taken:
                cls += "Layer"
            taken.add(cls)
            out += ["", ""]
            if clash:
                out.append(f"# no layer class for {name}: {', '.join(clash)} would shadow torch.nn.Module attributes")
                continue
            doc = (f"The export `{name}` as a layer: params {', '.join(params)} are torch.nn.Parameters "
                   f"initialized as declared.\n\n{function_doc(g, name, literal=False)}\n    ")
            out += [f"class {cls}(torch.nn.Module):", f"    {docstring(doc)}", "",
                    f"    def __init__(self, *, {kw}device=None, generator=None):",
                    "        super().__init__()",
                    f"        _params = init_params(generator, {''.join(f'{d}={d}, ' for d in free)}"
                    f"names={tuple(params)!r}, device=device)"]
            out += [f"        self.{a} = torch.nn.Parameter(_params[{a!r}])" for a in params]
            call = ", ".join([f"{a}={a}" for a in inputs] + [f"{a}=self.{a}" for a in params])
            out += ["", f"    def forward(self{''.join(f', {a}' for a in inputs)}):",
                    f"        return {name}({call})"]
        return out

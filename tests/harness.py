"""The shared test harness: compile a program, run its exports on a backend, compare with the dense
reference (opdsl/reference.py).

Every test that checks compiled values against `dense_eval` goes through `run_against_dense`, or
through its pieces `call` (numpy arrays in, the backend's tensors through, float64 numpy out) and
`assert_matches` (one error measure, one tolerance table), so how a backend takes and returns arrays
is written once.  A test that deliberately draws other inputs or allows another error passes them
as parameters.  `assert_sound` is the rewrite tests' check: the optimized graph and the program
keep the dense meaning of the graph as written.

Also here, because several test modules use them (a test module never imports another, so each can
be renamed alone): the catalogue of every kind's examples in the forms the tests run it (.op source,
a Python function for @opdsl.jit, a layer whose operator data are params), directional derivatives
checked against the dense reference, and where a compile error must point.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

import opdsl
from opdsl import backends
from opdsl.cli import to_backend, to_numpy
from opdsl.errors import OpdslError, text_lines
from opdsl.kinds import CONSTRUCTORS, REGISTRY
from opdsl.reference import bind_free_dims, dense_eval, random_inputs


def __getattr__(name):
    """BACKENDS (every installed backend) and PY_BACKENDS (those that generate a Python module; TVM
    builds kernels), computed on first use: finding them imports every framework (TVM alone takes
    seconds), which a test module that only calls `run_against_dense` should not pay."""
    if name not in ("BACKENDS", "PY_BACKENDS"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    found = tuple(backends.available())
    globals().update(BACKENDS=found, PY_BACKENDS=tuple(b for b in ("numpy", "torch", "jax") if b in found))
    return globals()[name]


# max |out - ref| / max(1, max |ref|) allowed, by the dtype the program computes in
TOL = {"float32": 2e-4, "float64": 1e-9}

# every registered kind's examples: a kind is covered by every catalogue test the moment it registers
CATALOGUE = [(name, i, src) for name in sorted(REGISTRY) for i, src in enumerate(REGISTRY[name].examples)]
CATALOGUE_IDS = [f"{k}-{i}" for k, i, _ in CATALOGUE]


# ---- compile, run, compare ------------------------------------------------------------------------

def relative_error(out: np.ndarray, ref: np.ndarray) -> float:
    """max |out - ref| / max(1, max |ref|): absolute for small values, relative for large ones."""
    if ref.size == 0:
        return 0.0
    scale = max(1.0, float(np.max(np.abs(ref))))
    return float(np.max(np.abs(out - ref))) / scale


def assert_matches(out, ref: np.ndarray, dtype: str, tol: float | None = None, what: str = ""):
    """out (any backend's tensor) has ref's shape and is within tol (default TOL[dtype]) of it."""
    out = to_numpy(out)
    assert out.shape == ref.shape, (what, out.shape, ref.shape)
    tol = TOL[dtype] if tol is None else tol
    err = relative_error(out, ref)
    assert err <= tol, f"{what + ': ' if what else ''}relative error {err:.3e} > {tol}"


def call(prog, name: str, inputs: dict) -> np.ndarray:
    """prog's export `name` on numpy arrays, through its backend's tensors; the result as float64 numpy."""
    return to_numpy(prog[name](**to_backend(prog.backend_name, inputs)))


def reference(prog, name: str, inputs: dict) -> np.ndarray:
    """The dense meaning of export `name` on inputs (float64)."""
    return dense_eval(prog.graph, prog.graph.exports[name], inputs)


def run_against_dense(src_or_prog, backend: str = "numpy", dtype: str = "float32", inputs=None,
                      tol: float | None = None, exports=None, seed=0, require_finite: bool = False,
                      **compile_kw):
    """Check every export (or those named in `exports`) against the dense reference; the program.

    src_or_prog: .op source, a Path to a .op file, or a compiled Program (then backend and compile_kw
    are unused; dtype still names the tolerance).  inputs: None draws `random_inputs(graph, export,
    seed=seed)`; a function (graph, export, seed) -> arrays draws them its own way; a dict gives the
    arrays (each export takes the ones it declares).  seed: an int or a tuple (one check per seed).
    require_finite: the reference must be finite (a random program that overflows is a bad draw)."""
    if isinstance(src_or_prog, opdsl.Program):
        prog = src_or_prog
    elif isinstance(src_or_prog, Path):
        prog = opdsl.compile_file(src_or_prog, backend=backend, dtype=dtype, **compile_kw)
    else:
        prog = opdsl.compile(src_or_prog, backend=backend, dtype=dtype, **compile_kw)
    for name in exports or prog.functions:
        for s in (seed if isinstance(seed, tuple) else (seed,)):
            if inputs is None:
                args = random_inputs(prog.graph, name, seed=s)
            elif callable(inputs):
                args = inputs(prog.graph, name, s)
            else:
                args = {k: v for k, v in inputs.items() if k in prog[name].params}
            ref = reference(prog, name, args)
            if require_finite:
                assert np.all(np.isfinite(ref)), f"{name}: the dense reference is not finite"
            assert_matches(call(prog, name, args), ref, dtype, tol, what=name)
    return prog


def assert_sound(src: str, seeds=(0,), rtol: float = 1e-10, atol: float | None = None, inputs=None,
                 **compile_kw):
    """The passes kept the meaning: for every export and seed, the dense value of the optimized graph
    and the compiled program's value equal the dense value of the graph as written (numpy, float64,
    every pass verified).  atol: absolute; None: rtol times max(1, max |value|).  inputs: as for
    run_against_dense (None: random_inputs; or a function (graph, export, seed) -> arrays)."""
    compile_kw = {"backend": "numpy", "dtype": "float64", "verify": True, **compile_kw}
    prog = opdsl.compile(src, **compile_kw)
    for name in prog.functions:
        for seed in seeds:
            args = random_inputs(prog.graph, name, seed=seed) if inputs is None else inputs(prog.graph, name, seed)
            before = reference(prog, name, args)
            after = dense_eval(prog.optimized, prog.optimized.exports[name], args)
            tol = rtol * max(1.0, float(np.max(np.abs(before)))) if atol is None else atol
            np.testing.assert_allclose(after, before, rtol=rtol, atol=tol, err_msg=f"{name}: optimized graph")
            np.testing.assert_allclose(call(prog, name, args), before, rtol=rtol, atol=tol, err_msg=f"{name}: program")
    return prog


def structured_inputs(g, name, seed=0):
    """random_inputs, each made to honour its declared properties (an input that is `psd`
    gets A Aᵀ/n + I, `lower` a triangular matrix with a dominant diagonal, ...): the draw of the
    linear-algebra tests, kept as they were written against it."""
    out = random_inputs(g, name, seed=seed)
    rng = np.random.default_rng(seed + 100)
    for v in g.live([g.exports[name]]):
        n = g[v]
        if n.kind != "input":
            continue
        props = set(n.attrs.get("props", ()))
        x = out[n.attrs["name"]]
        if not props or issparse(x) or x.ndim < 2:      # a sparse input is drawn with its properties
            continue
        k = x.shape[-1]
        eye = np.eye(k)
        if "psd" in props:
            x = x @ np.swapaxes(x, -1, -2) + eye
        elif "symmetric" in props:
            x = x + np.swapaxes(x, -1, -2)
        elif "orthogonal" in props:
            x = np.linalg.qr(x)[0]
        if "lower" in props or "upper" in props:
            tri = np.tril if "lower" in props else np.triu
            x = tri(x) + np.sign(rng.standard_normal(x.shape[:-1]))[..., None] * 2 * eye
        out[n.attrs["name"]] = x.astype(n.attrs["dtype"])
    return out


# ---- a catalogue example as a Python function (@opdsl.jit) and as a layer -------------------------

class _Names(dict):
    """Evaluation namespace: unknown bare words (feature=relu) evaluate to their name, as in .op."""

    def __missing__(self, key):
        return key


def all_inputs(g) -> dict:
    """Random float64 values of every input of every export (an input shared by exports: one value)."""
    inputs = {}
    for export in g.exports:
        for k, x in random_inputs(g, export, dtype="float64").items():
            inputs.setdefault(k, x)
    return inputs


def python_version(src: str):
    """(fn, graph, inputs): fn(**tensors) -> {export: traced tensor}, built from src's let/export
    statements with opdsl.<constructor> calls; inputs are random numpy values of every input."""
    from opdsl.frontend import parse
    prog_graph = opdsl.compile(src, backend="numpy").graph
    env = bind_free_dims(prog_graph)
    consts = {name: int(env[s]) for name, s in prog_graph.dims.symbols.items()}
    consts.update({"true": True, "false": False})
    consts.update({name: getattr(opdsl, name) for name in CONSTRUCTORS})
    stmts = []
    for st in parse(src).children:
        if st.data in ("let_stmt", "export_stmt"):
            name, expr = st.children
            stmts.append((st.data, str(name), src[expr.meta.start_pos:expr.meta.end_pos]))
    inputs = {}
    for export in prog_graph.exports:
        for k, v in random_inputs(prog_graph, export).items():
            inputs.setdefault(k, v)

    def fn(**tensors):
        ns = _Names(consts)
        ns.update(tensors)
        out = {}
        for kind, name, text in stmts:
            val = eval(text, {"__builtins__": {}}, ns)   # noqa: S307 (catalogue text, not user input)
            if kind == "let_stmt":
                ns[name] = val
            else:
                out[name] = val
        return out

    return fn, prog_graph, inputs


def torch_inputs(inputs: dict, dtype: str, grad: bool = False) -> dict:
    """torch tensors of numpy arrays (a scipy.sparse matrix: a sparse CSR tensor), in dtype; grad: leaves
    that require gradients (a sparse one's gradient has its pattern)."""
    import torch
    from opdsl.backends.torch_backend import TorchBackend
    out = {}
    for k, v in inputs.items():
        if np.issubdtype(v.dtype, np.integer):     # indices: as they are, without gradients
            out[k] = torch.from_numpy(v)
            continue
        t = TorchBackend.from_numpy({k: v.astype(dtype) if issparse(v) else np.asarray(v, dtype=dtype)})[k]
        out[k] = t.requires_grad_() if grad else t
    return out


def issparse(x) -> bool:
    import scipy.sparse
    return scipy.sparse.issparse(x)


def as_numpy_grad(grad, like):
    """A torch gradient as numpy, or as a scipy.sparse matrix for a sparse argument (its pattern);
    zeros where autograd gave none."""
    import scipy.sparse
    if grad is None:
        return like * 0.0 if issparse(like) else np.zeros(np.shape(like))
    if grad.layout != __import__("torch").strided:
        return scipy.sparse.csr_array(grad.detach().to_dense().numpy()).multiply(like != 0)
    return grad.detach().numpy()


def _dot(a, b) -> float:
    """Σ a ∘ b for arrays or scipy.sparse matrices."""
    if issparse(a) or issparse(b):
        prod = (a if issparse(a) else b).multiply(b if issparse(a) else a)
        return float(prod.sum())
    return float(np.sum(np.asarray(a, dtype=np.float64) * b))


def _fixed(node) -> bool:
    """An input that stays an input in a layer: a sparse matrix (its pattern comes with the call) or
    integer indices."""
    return node.attrs.get("layout") == "sparse" or node.attrs["dtype"] in ("int32", "int64")


def as_layer(src: str):
    """(src with operator data turned into params, the names turned, values for free dims).  Operator
    data: inputs that are operands of an operator node (kron's factors, diag's d, attention's Q, K...)."""
    g = opdsl.compile(src, backend="numpy").graph
    data = {g[o].attrs["name"] for n in g.nodes() if REGISTRY[n.kind].produces == "op"
            for o in n.operands if g.kind(o) == "input" and not _fixed(g[o])}
    out = re.sub(r"(?m)^input (\w+)", lambda m: f"param {m.group(1)}" if m.group(1) in data else m.group(0), src)
    env = bind_free_dims(g)
    return out, data, {s.name: int(env[s]) for s in g.dims.free()}


# ---- gradients against the dense reference --------------------------------------------------------

def dense_directional(g, root, inputs: dict, direction: dict, w: np.ndarray, h: float = 1e-6) -> float:
    """d/dt w · dense(inputs + t direction) at t = 0, by a central difference of the dense reference."""
    plus = {k: v + h * direction.get(k, 0.0) for k, v in inputs.items()}
    minus = {k: v - h * direction.get(k, 0.0) for k, v in inputs.items()}
    return float(np.sum(w * dense_eval(g, root, plus)) - np.sum(w * dense_eval(g, root, minus))) / (2 * h)


def directions(inputs: dict, out_shape, seed: int = 1, g=None):
    """A random direction for every input and a random cotangent of the output.  A sparse argument
    varies in its stored entries only; with the graph g, an input declared symmetric or psd varies
    symmetrically (its declared domain: a solver may read one triangle)."""
    rng = np.random.default_rng(seed)
    sym = set() if g is None else {n.attrs["name"] for n in g.nodes() if n.is_input
                                   and {"psd", "symmetric"} & set(n.attrs.get("props", ()))}
    v = {}
    for k, x in inputs.items():
        if issparse(x):
            v[k] = x.astype(np.float64).copy()
            v[k].data = rng.standard_normal(v[k].data.shape)
        else:
            v[k] = rng.standard_normal(np.shape(x))
        if k in sym:
            v[k] = (v[k] + v[k].T) / 2 if issparse(x) else (v[k] + np.swapaxes(v[k], -1, -2)) / 2
    return v, rng.standard_normal(out_shape)


def check_directional(grads: dict, g, root, inputs: dict, v: dict, w, estimate: float | None = None):
    """Autograd's <grad, v> against the dense reference's directional derivative: to 1e-6 of
    max(1, Σ |∂ᵢ · vᵢ|), or for a stochastic estimator (gradient_estimate) to `estimate` of Σ |∂ᵢ · vᵢ|
    (no floor: a gradient twice the right one fails)."""
    analytic = sum(_dot(grads[k], v[k]) for k in grads)
    numeric = dense_directional(g, root, inputs, {k: v[k] for k in grads}, w)
    total = sum(_dot(abs(grads[k]), abs(v[k])) for k in grads)
    scale, rtol = (max(1.0, total), 1e-6) if estimate is None else (total, estimate)
    assert abs(analytic - numeric) <= rtol * scale, f"<grad, v> = {analytic:.12g}, dense: {numeric:.12g}"


def gradient_estimate(g, root) -> float | None:
    """The loosest relative accuracy a stochastic gradient estimator under root promises
    (Kind.gradient_estimate), or None when every node's gradient is its value's derivative."""
    tols = [t for t in (g.spec(u).gradient_estimate(g, u) for u in g.live([root])) if t is not None]
    return max(tols) if tols else None


# ---- compile errors -------------------------------------------------------------------------------

def assert_error_at(src: str, message: str, at: str, backend: str = "numpy"):
    """Compiling src fails with an OpdslError whose text has `message`, located (caret shown) on the
    last line of src at a column where that line continues with `at`."""
    import pytest
    with pytest.raises(OpdslError) as e:
        opdsl.compile(src, backend=backend)
    text = str(e.value)
    line = src.rstrip("\n").count("\n") + 1
    where = f"<string>:{line}:"
    assert message in text and where in text and "^" in text, text
    col = int(text.split(where)[1].split(":")[0])
    assert src.splitlines()[line - 1][col - 1:].startswith(at), (text, at)


def assert_located(e: OpdslError, text: str):
    """The error points into the input: a line of it and a column on that line (or just past it)."""
    assert e.span is not None, f"error without a location: {e.message}"
    lines = text_lines(text)
    assert 1 <= e.span.line <= len(lines), (e.span, len(lines), e.message)
    assert 1 <= e.span.column <= len(lines[e.span.line - 1]) + 1, (e.span, lines[e.span.line - 1], e.message)
    rendered = str(e)
    assert rendered.startswith(f"{e.span.file}:{e.span.line}:{e.span.column}: error: "), rendered
    assert "Traceback" not in rendered

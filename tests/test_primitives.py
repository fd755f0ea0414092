"""Conformance of the primitive layer (opdsl/primitives.py), in the style of tinygrad's test_ops:
every primitive, through every backend's emit entry, against the primitive interpreter
(opdsl/interpret.py, each primitive's numpy meaning `Prim.np`); and the interpreter against the
dense reference on every catalogue program, which cross-checks lowering.

CASES holds at least one small graph per primitive (a test fails when a primitive, or a unary
function, has none).  All cases of one dtype are the exports of one program, compiled once per
backend (TVM compiles them together)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from opdsl import backends
from opdsl.cli import to_backend
from opdsl.dims import DimTable
from opdsl.errors import BackendError
from opdsl.interpret import interpret
from opdsl.ir import Graph
from opdsl.kinds.attention_features import orf_expr, orthogonal_features
from opdsl.kinds.linalg_cg import Body
from opdsl.primitives import PRIM_REGISTRY, PRIMS, UNARY
from opdsl.reference import random_inputs, sparse_input

from .harness import BACKENDS, CATALOGUE, CATALOGUE_IDS, assert_matches, call, reference

DTYPES = ("float32", "float64")


@dataclass
class Case:
    """One small primitive graph: `build(p, dtype, *args)` -> its root, p(prim, *operands, **attrs)
    adding a node; `args`: (shape, draw) of each argument (draw: how its values are made, DRAWS)."""
    name: str
    args: tuple
    build: object
    refused: tuple = ()        # backends that refuse it, with a BackendError naming the primitive
    tol: dict | None = None    # dtype -> tolerance, where not harness.TOL (an iterative solve)


def _wellcond(rng, shape):
    n = shape[-1]
    return rng.standard_normal(shape) / n + 2 * np.eye(n)


def _spd(rng, shape):
    m = rng.standard_normal(shape)
    return m @ np.swapaxes(m, -1, -2) / shape[-1] + np.eye(shape[-1])


DRAWS = {
    "normal": lambda rng, shape: rng.standard_normal(shape),
    "positive": lambda rng, shape: rng.uniform(0.5, 2.0, shape),
    "wellcond": _wellcond,
    "spd": _spd,
    "dominant": lambda rng, shape: 8 + np.abs(rng.standard_normal(shape)),
    "lower": lambda rng, shape: np.tril(_wellcond(rng, shape)),
    "upper": lambda rng, shape: np.triu(_wellcond(rng, shape)),
    # a sparse argument (scipy.sparse CSR; each backend's own format through its from_numpy), and a
    # square one that is well conditioned
    "sparse": lambda rng, shape: sparse_input(rng, shape, set()),
    "sparse_square": lambda rng, shape: sparse_input(rng, shape, set(), factored=True),
    # integer indices in [0, 5) (an int64 argument)
    "index5": lambda rng, shape: rng.integers(0, 5, size=shape),
}


def _cg_case(precond):
    def build(p, dt, b, a):
        body = Graph(PRIM_REGISTRY, dims=p.graph.dims)
        loop = body.add("arg", (), {"name": "_p", "shape": (4, 2), "dtype": dt, "role": "loop"})
        cap = body.add("arg", (), {"name": "_c0", "shape": (4, 4), "dtype": dt, "role": "capture"})
        root = body.add("matmul", (cap, loop))
        tol = 1e-10 if dt == "float64" else 1e-5
        ops = (b, p("reshape", p("unary", p("diagonal", a), fn="recip"), shape=(4, 1))) if precond == "jacobi" else (b,)
        return p("cg", *ops, a, body=Body(body, loop, root, [cap]), tol=tol, maxiter=50, precond=precond)
    return Case(f"cg-{precond}", (((4, 2), "normal"), ((4, 4), "spd")), build, refused=("tvm",),
                tol={"float32": 1e-3, "float64": 1e-7})


def _pivchol_case():
    """The rank-3 pivoted Cholesky factor of a 4 x 4 SPD matrix (its columns through the body)."""
    def build(p, dt, a):
        body = Graph(PRIM_REGISTRY, dims=p.graph.dims)
        loop = body.add("arg", (), {"name": "_p", "shape": (4, 1), "dtype": dt, "role": "loop"})
        cap = body.add("arg", (), {"name": "_c0", "shape": (4, 4), "dtype": dt, "role": "capture"})
        root = body.add("matmul", (cap, loop))
        return p("pivchol", p("diagonal", a), a, body=Body(body, loop, root, [cap]), rank=3)
    return Case("pivchol", (((4, 4), "spd"),), build, refused=("tvm",), tol={"float32": 1e-4, "float64": 1e-10})


def _cg_pivchol_case():
    """cg preconditioned by D⁻¹ − U Uᵀ (what precond=pivchol lowers to), U any [4, 2]."""
    def build(p, dt, b, a, dinv, u):
        body = Graph(PRIM_REGISTRY, dims=p.graph.dims)
        loop = body.add("arg", (), {"name": "_p", "shape": (4, 2), "dtype": dt, "role": "loop"})
        cap = body.add("arg", (), {"name": "_c0", "shape": (4, 4), "dtype": dt, "role": "capture"})
        root = body.add("matmul", (cap, loop))
        tol = 1e-10 if dt == "float64" else 1e-5
        return p("cg", b, dinv, p("scale", u, c=0.1), a, body=Body(body, loop, root, [cap]), tol=tol, maxiter=50,
                 precond="pivchol")
    return Case("cg-pivchol", (((4, 2), "normal"), ((4, 4), "spd"), ((4, 1), "positive"), ((4, 2), "normal")),
                build, refused=("tvm",), tol={"float32": 1e-3, "float64": 1e-7})


def _slq_case():
    def build(p, dt, z, a):
        body = Graph(PRIM_REGISTRY, dims=p.graph.dims)
        loop = body.add("arg", (), {"name": "_p", "shape": (4, 3), "dtype": dt, "role": "loop"})
        cap = body.add("arg", (), {"name": "_c0", "shape": (4, 4), "dtype": dt, "role": "capture"})
        root = body.add("matmul", (cap, loop))
        return p("slq", z, a, body=Body(body, loop, root, [cap]), steps=4)    # steps = n: the exact form
    return Case("slq", (((4, 3), N), ((4, 4), "spd")), build, refused=("tvm",),
                tol={"float32": 1e-3, "float64": 1e-8})


def _other(dt):
    return "float32" if dt == "float64" else "float64"


N, P = "normal", "positive"
CASES = [
    # constants and arguments
    Case("arg", (((3, 4), N),), lambda p, dt, x: x),
    Case("eye", (((3, 3), N),), lambda p, dt, x: p("add", x, p("eye", n=3, dtype=dt))),
    Case("zeros", (((3, 4), N),), lambda p, dt, x: p("add", x, p("zeros", shape=(1, 4), dtype=dt))),
    Case("fill", (((3, 4), N),), lambda p, dt, x: p("mul", x, p("fill", shape=(3, 1), value=2.5, dtype=dt))),
    Case("tri", (((3, 4), N),), lambda p, dt, x: p("mul", x, p("tri", n=3, m=4, k=1, dtype=dt))),
    Case("const", (((3, 4), N),),
         lambda p, dt, x: p("add", x, p("const", expr="np.arange(12.0).reshape(3, 4) / 7", dtype=dt, name="c34"))),
    Case("const-favor", (((5, 4), N),),
         lambda p, dt, x: p("matmul", x, p("swap", p("const", expr=orf_expr(6, 4, 2), dtype=dt,
                                                             name="favor_6x4_seed2")))),
    # views and data movement
    Case("reshape", (((3, 4), N),), lambda p, dt, x: p("reshape", p("scale", x, c=2.0), shape=(2, 6))),
    Case("reshape-arg", (((3, 4), N),), lambda p, dt, x: p("reshape", x, shape=(4, 3))),
    Case("permute", (((2, 3, 4), N),), lambda p, dt, x: p("permute", x, perm=(2, 0, 1))),
    Case("swap", (((2, 3, 4), N),), lambda p, dt, x: p("scale", p("swap", x), c=1.5)),
    Case("concat", (((3, 2), N), ((3, 4), N)), lambda p, dt, x, y: p("concat", x, y, axis=-1)),
    Case("slice", (((3, 5), N),), lambda p, dt, x: p("slice", x, axis=1, start=1, stop=4)),
    Case("flip", (((3, 5), N),), lambda p, dt, x: p("flip", x, axis=0)),
    Case("diagonal", (((2, 3, 3), N),), lambda p, dt, x: p("diagonal", x)),
    Case("cast", (((3, 4), N),), lambda p, dt, x: p("cast", x, dtype=_other(dt))),
    # elementwise
    Case("add", (((2, 3, 4), N), ((3, 1), N)), lambda p, dt, x, y: p("add", x, y)),
    Case("sub", (((2, 3, 4), N), ((4,), N)), lambda p, dt, x, y: p("sub", x, y)),
    Case("mul", (((3, 4), N), ((2, 1, 4), N)), lambda p, dt, x, y: p("mul", x, y)),
    Case("div", (((2, 3, 4), N), ((3, 4), P)), lambda p, dt, x, y: p("div", x, y)),
    Case("scale", (((3, 4), N),), lambda p, dt, x: p("scale", x, c=-1.5)),
    Case("shift", (((3, 4), N),), lambda p, dt, x: p("shift", x, c=0.25)),
    *[Case(f"unary-{fn}", (((3, 4), P if fn in ("log", "sqrt", "recip") else N),),
           lambda p, dt, x, fn=fn: p("unary", x, fn=fn)) for fn in UNARY],
    Case("tril", (((2, 3, 4), N),), lambda p, dt, x: p("tril", x, k=0, fill=0.0)),
    Case("tril-inf", (((3, 3), N),), lambda p, dt, x: p("unary", p("tril", x, k=-1, fill=float("-inf")), fn="exp")),
    # contractions, reductions, scans, FFT
    Case("matmul", (((2, 3, 4), N), ((4, 5), N)), lambda p, dt, x, y: p("matmul", x, y)),
    Case("einsum", (((2, 3, 4), N), ((2, 4, 5), N)), lambda p, dt, x, y: p("einsum", x, y, spec="bij,bjk->bik")),
    Case("sum", (((2, 3, 4), N),), lambda p, dt, x: p("sum", x, axis=-1, keepdims=True)),
    Case("sum-drop", (((2, 3, 4), N),), lambda p, dt, x: p("sum", x, axis=0)),
    Case("max", (((2, 3, 4), N),), lambda p, dt, x: p("max", x, axis=-1, keepdims=True)),
    Case("cumsum", (((2, 3, 4), N),), lambda p, dt, x: p("cumsum", x, axis=-2)),
    Case("rfft-irfft", (((2, 8), N), ((2, 8), N)),
         lambda p, dt, x, y: p("irfft", p("mul", p("rfft", x, n=8), p("rfft", y, n=8)), n=8)),
    Case("rfft-irfft-6", (((2, 6), N),), lambda p, dt, x: p("irfft", p("rfft", x, n=6), n=6)),
    # N-d FFTs: a 2-d convolution by zero-padded transforms; complex weights
    Case("rfftn", (((2, 4, 5), N), ((3, 2), N)),
         lambda p, dt, x, h: p("irfftn", p("mul", p("rfftn", x, s=(6, 6)), p("rfftn", h, s=(6, 6))), s=(6, 6))),
    Case("rfftn-irfftn", (((3, 5, 7), N),), lambda p, dt, x: p("irfftn", p("rfftn", x, s=(5, 7)), s=(5, 7))),
    Case("rfftn-complex", (((4, 5, 2), N), ((4, 8), N)),
         lambda p, dt, w, x: p("irfftn", p("mul", p("rfftn", x, s=(4, 8)), p("complex", w, conj=True)), s=(4, 8))),
    # linear algebra
    Case("solve_triangular", (((3, 3), "upper"), ((2, 3, 2), N)),
         lambda p, dt, a, b: p("solve_triangular", a, b, upper=True)),
    Case("solve_triangular-lower", (((2, 3, 3), "lower"), ((3, 2), N)),
         lambda p, dt, a, b: p("solve_triangular", a, b, upper=False)),
    Case("solve_triangular-unit", (((2, 3, 3), N), ((3, 2), N)),
         lambda p, dt, a, b: p("solve_triangular", a, b, upper=False, unit=True)),
    Case("checked", (((3, 3), "lower"), ((3, 2), N)),
         lambda p, dt, a, b: p("checked", p("solve_triangular", a, b, upper=False, checked=True))),
    Case("solve", (((2, 3, 3), "wellcond"), ((3, 2), N)), lambda p, dt, a, b: p("solve", a, b)),
    Case("cholesky", (((3, 3), "spd"),), lambda p, dt, a: p("cholesky", a)),
    Case("cho_solve", (((2, 3, 3), "spd"), ((3, 2), N)), lambda p, dt, a, b: p("cho_solve", p("cholesky", a), b)),
    Case("slogdet", (((2, 3, 3), "wellcond"),), lambda p, dt, a: p("slogdet", a)),
    _cg_case("none"),
    _cg_case("jacobi"),
    _slq_case(),
    _pivchol_case(),
    Case("take", (((2, 5, 3), N),), lambda p, dt, x: p("take", x, idx=(4, 0, 4, 2)), refused=("tvm",)),
    Case("put", (((2, 4, 3), N),), lambda p, dt, x: p("put", x, idx=(4, 0, 4, 2), n=6), refused=("tvm",)),
    Case("take-tensor", (((2, 5, 3), N), ((4,), "index5")), lambda p, dt, x, i: p("take", x, i), refused=("tvm",)),
    Case("put-tensor", (((2, 4, 3), N), ((4,), "index5")), lambda p, dt, x, i: p("put", x, i, n=6),
         refused=("tvm",)),
    # sparse arguments (TVM takes dense arrays only)
    Case("spmm", (((5, 4), "sparse"), ((4, 3), N)), lambda p, dt, s, x: p("spmm", s, x), refused=("tvm",)),
    Case("spmm-t", (((5, 4), "sparse"), ((5, 3), N)), lambda p, dt, s, x: p("spmm", s, x, t=True),
         refused=("tvm",)),
    Case("sparse_dense", (((5, 4), "sparse"),), lambda p, dt, s: p("sparse_dense", s, t=True), refused=("tvm",)),
    Case("sparse_diagonal", (((5, 5), "sparse_square"),), lambda p, dt, s: p("sparse_diagonal", s),
         refused=("tvm",)),
    Case("sparse_solve", (((5, 5), "sparse_square"), ((5, 2), N)),
         lambda p, dt, s, b: p("sparse_solve", s, b, t=True), refused=("tvm",)),
    Case("sparse_logdet", (((5, 5), "sparse_square"),), lambda p, dt, s: p("sparse_logdet", s),
         refused=("tvm",)),
    Case("tridiag_solve", (((4,), N), ((5,), "dominant"), ((4,), N), ((5, 2), N)),
         lambda p, dt, lo, d, up, b: p("tridiag_solve", lo, d, up, b), refused=("tvm",)),
    Case("tridiag_logdet", (((6,), N), ((7,), "dominant"), ((6,), N)),
         lambda p, dt, lo, d, up: p("tridiag_logdet", lo, d, up), refused=("tvm",)),
    _cg_pivchol_case(),
    # the chunk recurrence (delta rule): P broadcast over a batch; a single step; P with a batch of H's
    Case("linrec", (((4, 3, 3), N), ((2, 4, 3, 2), N)), lambda p, dt, a, h: p("linrec", p("scale", a, c=0.5), h)),
    # matrix functions (TVM refuses them by name); eigenvectors' signs are the backend's, so the case
    # rebuilds V diag(λ) Vᵀ from the packed result
    Case("eigh", (((2, 3, 3), "spd"),),
         lambda p, dt, a: (lambda e: p("matmul", p("mul", p("slice", e, axis=-2, start=1, stop=4),
                                                    p("slice", e, axis=-2, start=0, stop=1)),
                                        p("swap", p("slice", e, axis=-2, start=1, stop=4))))(p("eigh", a)),
         refused=("tvm",)),
    Case("expm", (((2, 3, 3), N),), lambda p, dt, a: p("expm", p("scale", a, c=2.0)), refused=("tvm",)),
    Case("invroot_newton", (((2, 4, 4), "spd"),),
         lambda p, dt, a: p("invroot_newton", a, root=4, eps=0.0, tol=1e-12 if dt == "float64" else 1e-5, maxiter=60),
         refused=("tvm",), tol={"float32": 1e-4, "float64": 1e-9}),
    # kernel operators: ARD lengthscales, and one lengthscale with a Matern kernel
    *[Case(f"kernel_apply-{fam}", (((5, 3), N), ((4, 3), N), ((4, 2), N), ((3 if fam == "rbf" else 1,), P), ((1,), P)),
           lambda p, dt, x, y, v, ls, s, fam=fam: p("kernel_apply", x, y, v, ls, s, family=fam, tile=2))
      for fam in ("rbf", "matern12", "matern32", "matern52")],
    *[Case(f"kernel_matrix-{fam}", (((5, 3), N), ((4, 3), N), ((3 if fam == "rbf" else 1,), P), ((1,), P)),
           lambda p, dt, x, y, ls, s, fam=fam: p("kernel_matrix", x, y, ls, s, family=fam, tile=2))
      for fam in ("rbf", "matern12", "matern32", "matern52")],
    Case("linrec-one-step", (((1, 2, 2), N), ((1, 2, 3), N)), lambda p, dt, a, h: p("linrec", a, h)),
]
CASE_IDS = [c.name for c in CASES]


class _Prims:
    """p(prim, *operands, **attrs): adds a primitive node to a graph."""

    def __init__(self, graph):
        self.graph = graph

    def __call__(self, prim, *ops, **attrs):
        return self.graph.add(prim, ops, attrs)


def case_graph(cases, dtype):
    """One primitive graph, export `c<i>` for case i; and the arguments of each export."""
    g = Graph(PRIM_REGISTRY, dims=DimTable(), meta={"file": "<primitives>", "signatures": {}})
    p = _Prims(g)
    inputs = {}
    rng = np.random.default_rng(0)
    for i, case in enumerate(cases):
        name = f"c{i}"
        sig, args = [], []
        for j, (shape, draw) in enumerate(case.args):
            a = f"x{i}_{j}"
            dt = "int64" if draw.startswith("index") else dtype
            extra = {"layout": "sparse"} if draw.startswith("sparse") else {}
            if extra:
                g.meta.setdefault("sparse", []).append(a)
            args.append(g.add("arg", (), {"name": a, "shape": shape, "dtype": dt, "role": "input", **extra}))
            sig.append((a, shape, dt, "input"))
            inputs.setdefault(name, {})[a] = DRAWS[draw](rng, shape).astype(dt)
        g.exports[name] = case.build(p, dtype, *args)
        g.meta["signatures"][name] = sig
    return g, inputs


def _kinds(g: Graph) -> set:
    out = set()
    for v in g.live():
        n = g[v]
        out.add(n.kind)
        body = n.attrs.get("body")
        if body is not None:
            out |= _kinds(body.graph)
    return out


def test_every_primitive_has_a_case():
    g, _ = case_graph(CASES, "float64")
    missing = sorted(set(PRIMS) - _kinds(g))
    assert not missing, f"primitives without a conformance case: {missing}"
    unary = {g[v].attrs["fn"] for v in g.live() if g[v].kind == "unary"}
    assert unary == set(UNARY), f"unary functions without a case: {sorted(set(UNARY) - unary)}"


_MODULES: dict = {}


def _compiled(backend: str, dtype: str):
    """(module, graph, inputs, reference values) of every case the backend runs, compiled once."""
    key = (backend, dtype)
    if key not in _MODULES:
        cases = [c for c in CASES if backend not in c.refused]
        g, inputs = case_graph(cases, dtype)
        be = backends.get(backend)
        be.check(g)
        src = be.generate(g)
        be.check_source(src, g)
        mod = be.load(src, g)
        names = {c.name: f"c{i}" for i, c in enumerate(cases)}
        _MODULES[key] = (mod, g, inputs, names)
    return _MODULES[key]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_primitive_on_backend(case, backend, dtype):
    """The backend's code for the case computes what the interpreter does, in the same dtype; a
    backend that lacks the capability (TVM: cg's loop) refuses it, naming the primitive."""
    if backend in case.refused:
        g, _ = case_graph([case], dtype)
        be = backends.get(backend)
        with pytest.raises(BackendError, match=f"primitive '{case.name.split('-')[0]}'"):
            be.generate(g)
        return
    mod, g, inputs, names = _compiled(backend, dtype)
    export = names[case.name]
    args = inputs[export]
    want = interpret(g, export, args)
    out = getattr(mod, export)(**to_backend(backend, args))
    tol = (case.tol or {}).get(dtype)
    # the tolerance of the result's dtype (a `cast` case's result is in the other one)
    assert_matches(out, want.astype(np.float64), str(want.dtype), tol, what=f"{case.name} on {backend}")
    assert str(getattr(out, "dtype", "")).replace("torch.", "") == str(want.dtype)


def test_the_interpreter_evaluates_the_numpy_meaning():
    """Not vacuous: the interpreter computes each primitive's numpy meaning, with dims bound."""
    by_name = {c.name: c for c in CASES}
    g, inputs = case_graph([by_name[c] for c in ("matmul", "const-favor", "cg-jacobi")], "float64")
    (x, y), (z,), (b, a) = (inputs[e].values() for e in ("c0", "c1", "c2"))
    np.testing.assert_array_equal(interpret(g, "c0", inputs["c0"]), x @ y)
    np.testing.assert_array_equal(interpret(g, "c1", inputs["c1"]), z @ orthogonal_features(6, 4, 2).T)
    np.testing.assert_allclose(interpret(g, "c2", inputs["c2"]), np.linalg.solve(a, b), rtol=1e-8)


@pytest.mark.parametrize("kind,i,src", CATALOGUE, ids=CATALOGUE_IDS)
def test_interpreter_agrees_with_the_dense_reference(kind, i, src):
    """Lowering cross-check: the lowered program, interpreted, computes the operator graph's meaning."""
    import opdsl
    prog = opdsl.compile(src, backend="numpy", dtype="float64")
    for name in prog.functions:
        args = random_inputs(prog.graph, name, seed=0)
        assert_matches(interpret(prog.primitive, name, args), reference(prog, name, args), "float64",
                       what=name)
        assert_matches(call(prog, name, args), interpret(prog.primitive, name, args), "float64", what=name)

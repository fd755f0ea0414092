"""Sparse arguments (issue 18, opdsl/kinds/sparse.py) and integer index tensors (select(idx, n)):
every framework's own sparse formats against scipy.sparse references, gradients in the sparse
values, CG and splu solves, the CallErrors of wrong layouts, and never the dense matrix where a
framework can avoid it."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg
import torch

import opdsl
from opdsl.errors import CallError
from tests.harness import assert_error_at

SRC = """dim m = {m}
dim n = {n}
input S : [m, n] sparse
input d : [m]
input x : [n, 2]
input y : [m, 3]
export a = S @ x
export b = S.T @ y
export c = (diag(d) @ S) @ x
export e = (S.T @ S + 2 * eye(n)) @ x
"""


def _matrix(m, n, density=0.2, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return scipy.sparse.random_array((m, n), density=density, rng=rng, data_sampler=rng.standard_normal,
                                     dtype=dtype).tocsr()


def _reference(s, d, x, y):
    n = s.shape[1]
    return {"a": s @ x, "b": s.T @ y, "c": (scipy.sparse.diags_array(d) @ s) @ x,
            "e": (s.T @ s + 2 * scipy.sparse.eye_array(n)) @ x}


def _formats(backend, s):
    """The sparse formats each framework takes, made from the scipy matrix s."""
    if backend == "numpy":
        return {"csr": s.tocsr(), "csc": s.tocsc(), "coo": s.tocoo(), "matrix": scipy.sparse.csr_matrix(s)}
    if backend == "torch":
        coo = s.tocoo()
        t_coo = torch.sparse_coo_tensor(np.vstack([coo.row, coo.col]), coo.data, s.shape)
        return {"coo": t_coo, "coo-coalesced": t_coo.coalesce(), "csr": t_coo.to_sparse_csr()}
    import jax
    from jax.experimental import sparse as jsparse
    with jax.enable_x64(True):           # float64 values stay float64
        return {"bcoo": jsparse.BCOO.from_scipy_sparse(s)}


def _dense_args(backend, **arrays):
    from opdsl.cli import to_backend
    return to_backend(backend, arrays)


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
def test_products_in_every_format_against_scipy(backend):
    m, n = 40, 30
    s = _matrix(m, n)
    rng = np.random.default_rng(1)
    d, x, y = rng.standard_normal(m), rng.standard_normal((n, 2)), rng.standard_normal((m, 3))
    prog = opdsl.compile(SRC.format(m=m, n=n), backend=backend, dtype="float64")
    want = _reference(s, d, x, y)
    for fmt, arg in _formats(backend, s).items():
        dense = _dense_args(backend, d=d, x=x, y=y)
        for name in want:
            out = prog[name](S=arg, **{k: v for k, v in dense.items() if k in prog[name].params})
            np.testing.assert_allclose(np.asarray(out), want[name], rtol=1e-10, atol=1e-12, err_msg=f"{fmt} {name}")


SOLVE = """dim n = {n}
input P : [n, n] sparse psd
input A : [n, n] sparse
input x : [n, 2]
export cg = inv(P) @ x
export lu = inv(A) @ x
export lu_t = inv(A).T @ x
export shifted = inv(P + 0.5 * eye(n)) @ x
export ld = logdet(A)
"""


def _laplacian(n, seed=0):
    """A graph Laplacian (symmetric, diagonally dominant) plus I: positive definite."""
    w = _matrix(n, n, density=4.0 / n, seed=seed)
    w = abs(w + w.T)
    return (scipy.sparse.diags_array(np.asarray(w.sum(axis=1)).ravel()) - w + scipy.sparse.eye_array(n)).tocsr()


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
def test_cg_and_direct_solves_against_spsolve(backend):
    n = 200
    p = _laplacian(n)
    a = (_matrix(n, n, density=0.05, seed=3) + 4 * scipy.sparse.eye_array(n)).tocsr()
    x = np.random.default_rng(2).standard_normal((n, 2))
    prog = opdsl.compile(SOLVE.format(n=n), backend=backend, dtype="float64")
    from opdsl.cli import to_backend
    args = to_backend(backend, {"P": p, "A": a, "x": x})
    want = {"cg": scipy.sparse.linalg.spsolve(p.tocsc(), x), "lu": scipy.sparse.linalg.spsolve(a.tocsc(), x),
            "lu_t": scipy.sparse.linalg.spsolve(a.T.tocsc(), x),
            "shifted": scipy.sparse.linalg.spsolve((p + 0.5 * scipy.sparse.eye_array(n)).tocsc(), x),
            "ld": np.linalg.slogdet(a.toarray())[1]}
    for name, ref in want.items():
        out = prog[name](**{k: v for k, v in args.items() if k in prog[name].params})
        np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-6, atol=1e-8, err_msg=name)
    text = prog.explain()
    assert "conjugate gradients preconditioned by S's diagonal" in text
    assert "scipy.sparse.linalg.splu" in text


def test_a_large_sparse_solve_never_forms_the_matrix():
    """n = 40,000: the dense matrix would be 12.8 GB; every value the program holds is O(n)."""
    n = 40_000
    prog = opdsl.compile(f"dim n = {n}\ninput P : [n, n] sparse psd\ninput x : [n, 2]\n"
                         "export cg = inv(P) @ x\nexport shifted = inv(P + 0.5 * eye(n)) @ x", backend="numpy",
                         dtype="float64")
    g = prog.primitive
    biggest = max(int(np.prod([g.dims.value(s) for s in g.type(v).shape])) for v in g.live()
                  if g[v].attrs.get("layout") != "sparse")        # P itself: its nonzeros only
    assert biggest <= 16 * n
    p = _laplacian(n)
    x = np.random.default_rng(0).standard_normal((n, 2))
    out = prog["cg"](P=p, x=x)
    assert np.linalg.norm(p @ out - x) <= 1e-6 * np.linalg.norm(x)
    out = prog["shifted"](P=p, x=x)
    assert np.linalg.norm(p @ out + 0.5 * out - x) <= 1e-6 * np.linalg.norm(x)


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_torch_gradients_in_the_sparse_values(layout):
    """d/d(values) of S @ x, Sᵀ @ y and inv(P) @ x (CG, implicit) against dense autograd at the stored
    entries; the gradient has S's own pattern (a sparse tensor), never the dense m x n."""
    m, n = 12, 9
    s = _matrix(m, n, density=0.3, seed=4)
    p = _laplacian(n, seed=5)
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((n, 2)), rng.standard_normal((m, 2))
    src = (f"dim m = {m}\ndim n = {n}\ninput S : [m, n] sparse\ninput P : [n, n] sparse psd\ninput x : [n, 2]\n"
           "input y : [m, 2]\nexport f = S @ x\nexport g = S.T @ y\nexport h = inv(P) @ x")
    prog = opdsl.compile(src, backend="torch", dtype="float64")

    def sparse_leaf(mat):
        coo = mat.tocoo()
        t = torch.sparse_coo_tensor(np.vstack([coo.row, coo.col]), coo.data, mat.shape).coalesce()
        return (t if layout == "coo" else t.to_sparse_csr()).requires_grad_()

    for name, mat, arg in (("f", s, "S"), ("g", s, "S"), ("h", p, "P")):
        leaf = sparse_leaf(mat)
        xt = torch.tensor(x if name != "g" else y, requires_grad=True)
        out = prog[name](**{arg: leaf, ("y" if name == "g" else "x"): xt})
        w = torch.from_numpy(rng.standard_normal(tuple(out.shape)))
        gs, gx = torch.autograd.grad((out * w).sum(), [leaf, xt])
        assert gs.layout == leaf.layout and gs._nnz() == leaf._nnz()
        dense = torch.tensor(mat.toarray(), requires_grad=True)
        xd = xt.detach().clone().requires_grad_()
        ref = {"f": lambda: dense @ xd, "g": lambda: dense.T @ xd, "h": lambda: torch.linalg.solve(dense, xd)}[name]()
        gd, gxd = torch.autograd.grad((ref * w).sum(), [dense, xd])
        mask = torch.tensor(mat.toarray() != 0)
        np.testing.assert_allclose(gs.to_dense().numpy(), (gd * mask).numpy(), rtol=1e-6, atol=1e-8, err_msg=name)
        np.testing.assert_allclose(gx.numpy(), gxd.numpy(), rtol=1e-6, atol=1e-8, err_msg=name)


def test_jax_gradients_in_the_bcoo_values():
    import jax
    import jax.numpy as jnp
    from jax.experimental import sparse as jsparse
    m, n = 10, 7
    s = _matrix(m, n, density=0.3, seed=7)
    x = np.random.default_rng(8).standard_normal((n, 2))
    prog = opdsl.compile(f"dim m = {m}\ndim n = {n}\ninput S : [m, n] sparse\ninput x : [n, 2]\n"
                         "export f = S.T @ (S @ x)", backend="jax", dtype="float64")
    with jax.enable_x64(True):
        bcoo = jsparse.BCOO.from_scipy_sparse(s)
        xj = jnp.asarray(x)

        def loss(data):
            return prog["f"](S=jsparse.BCOO((data, bcoo.indices), shape=bcoo.shape), x=xj).sum()
        grad = np.asarray(jax.grad(loss)(bcoo.data))
    dense = torch.tensor(s.toarray(), requires_grad=True)
    (dense.T @ (dense @ torch.tensor(x))).sum().backward()
    idx = np.asarray(bcoo.indices)
    np.testing.assert_allclose(grad, dense.grad.numpy()[idx[:, 0], idx[:, 1]], rtol=1e-8)


@pytest.mark.parametrize("backend,wrong,expect", [
    ("numpy", lambda s: s.toarray(), "takes a scipy.sparse matrix, got a dense numpy.ndarray"),
    ("torch", lambda s: torch.tensor(s.toarray()), "takes a torch sparse COO or CSR tensor, got a dense torch.Tensor"),
    ("torch", lambda s: torch.tensor(s.toarray()).to_sparse_csc(), "got a torch.Tensor of layout sparse_csc"),
    ("torch", lambda s: torch.tensor(s.toarray()).to_sparse_bsr((1, 1)), "got a torch.Tensor of layout sparse_bsr"),
    ("jax", lambda s: _dense_args("jax", s=s.toarray())["s"], "takes a jax.experimental.sparse.BCOO, got a dense"),
])
def test_a_dense_tensor_or_a_wrong_layout_is_a_call_error(backend, wrong, expect):
    s = _matrix(4, 3)
    prog = opdsl.compile("input S : [4, 3] sparse\ninput x : [3, 2]\nexport y = S @ x", backend=backend,
                         dtype="float64")
    x = _dense_args(backend, x=np.ones((3, 2)))["x"]
    with pytest.raises(CallError) as e:
        prog["y"](S=wrong(s), x=x)
    assert "argument 'S' is declared `[4, 3] sparse`" in str(e.value) and expect in str(e.value), str(e.value)
    # a sparse matrix of the wrong shape or dtype: the ordinary checks
    with pytest.raises(CallError, match="has shape"):
        prog["y"](S=_formats(backend, _matrix(5, 3))[next(iter(_formats(backend, s)))], x=x)


@pytest.mark.parametrize("src,message,at", [
    ("param S : [3, 3] sparse", "only an `input` can be sparse", "sparse"),
    ("input S : [3] sparse", "a sparse input is a matrix [m, n]", "sparse"),
    ("input S : [3, 3] float16 sparse", "a sparse input is float32 or float64", "sparse"),
    ("input S : [3, 3] sparse\nexport y = S", "export y is an operator [3, 3]; exports are tensors", "S"),
    ("input S : [3, 3] sparse\ninput W : [3, 3]\nexport y = tT(S)", "", "tT"),
    ("input S : [3, 3] spares", "unknown dtype or property 'spares'", "spares"),
])
def test_sparse_declarations_errors(src, message, at):
    if message == "":
        with pytest.raises(opdsl.OpdslError):
            opdsl.compile(src)
        return
    assert_error_at(src, message, at)


def test_jit_traces_a_sparse_argument_and_keys_it_apart_from_a_dense_one():
    @opdsl.jit
    def f(S, x):
        return S.T @ (S @ x)

    s = _matrix(6, 5, density=0.4, seed=9)
    x = torch.randn(5, 2, dtype=torch.float64)
    st = torch.tensor(s.toarray()).to_sparse_csr()
    want = torch.tensor(s.toarray()).T @ (torch.tensor(s.toarray()) @ x)
    torch.testing.assert_close(f(st, x), want)
    assert "spmm" in {f.program(st, x).primitive[v].kind for v in f.program(st, x).primitive.live()}
    dense = torch.tensor(s.toarray())
    torch.testing.assert_close(f(dense, x), want)         # the same shape, dense: another program
    assert f.cache_size == 2
    assert "spmm" not in {f.program(dense, x).primitive[v].kind for v in f.program(dense, x).primitive.live()}


# ---- integer index tensors: select(idx, n) --------------------------------------------------------

SELECT = """dim n = 6
input idx : [4] int64
input x : [2, n, 3]
input y : [4, 2]
export p = select(idx, n) @ x
export t = select(idx, n).T @ y
"""


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
def test_runtime_indices_gather_and_scatter_add(backend):
    rng = np.random.default_rng(0)
    idx = np.array([5, 0, 5, 2])              # a repeated index accumulates in the transpose
    x, y = rng.standard_normal((2, 6, 3)), rng.standard_normal((4, 2))
    prog = opdsl.compile(SELECT, backend=backend, dtype="float64")
    args = _dense_args(backend, idx=idx, x=x, y=y)
    np.testing.assert_allclose(np.asarray(prog["p"](idx=args["idx"], x=args["x"])), x[:, idx, :])
    want = np.zeros((6, 2))
    np.add.at(want, idx, y)
    np.testing.assert_allclose(np.asarray(prog["t"](idx=args["idx"], y=args["y"])), want)
    for bad in ([0, 6, 1, 1], [0, -1, 2, 2]):       # never a wrapped or clamped row
        with pytest.raises(CallError, match=f"index {bad[1]} is out of range"):
            prog["p"](idx=_dense_args(backend, idx=np.array(bad))["idx"], x=args["x"])
        with pytest.raises(CallError, match=f"index {bad[1]} is out of range"):
            prog["t"](idx=_dense_args(backend, idx=np.array(bad))["idx"], y=args["y"])


def test_runtime_indices_on_tvm_are_refused_by_name():
    pytest.importorskip("tvm")
    with pytest.raises(opdsl.errors.BackendError, match="primitive 'take'"):
        opdsl.compile(SELECT, backend="tvm")


@pytest.mark.parametrize("src,message,at", [
    ("input idx : [3] int64\ninput x : [3, 2]\nexport y = x + idx", "holds indices and cannot be computed with", "x +"),
    ("input i : [3] int32\nexport y = diag(i) @ ones", "holds indices", "diag"),
    ("param idx : [3] int64", "an int64 tensor holds indices: it is an `input` without properties", "idx"),
    ("input idx : [3] float32\ninput x : [5, 2]\nexport y = select(idx, 5) @ x",
     "select's indices are an integer tensor [k] (int32 or int64) or a list, got a float32 tensor", "idx, 5"),
    ("input idx : [3, 2] int64\ninput x : [5, 2]\nexport y = select(idx, 5) @ x", "select's index tensor must have rank 1",
     "idx, 5"),
])
def test_index_tensor_errors(src, message, at):
    assert_error_at(src, message, at)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_graph_example_label_propagation(backend):
    """examples/graph.op on two noisy clusters of 1,500 nodes each (n = 3,000), 5 labels per cluster:
    the scores equal scipy's spsolve of (L + 0.1 I) F = Y, and label propagation recovers the clusters."""
    rng = np.random.default_rng(0)
    n, half = 3000, 1500
    cluster = np.repeat([0, 1], half)
    rows, cols = rng.integers(0, n, 40 * n), rng.integers(0, n, 40 * n)
    keep = (cluster[rows] == cluster[cols]) | (rng.uniform(size=rows.size) < 0.02)   # few edges across
    w = scipy.sparse.coo_array((np.ones(keep.sum()), (rows[keep], cols[keep])), shape=(n, n)).tocsr()
    w = ((w + w.T) > 0).astype(np.float64)
    w.setdiag(0)
    w.eliminate_zeros()
    lap = (scipy.sparse.diags_array(np.asarray(w.sum(axis=1)).ravel()) - w).tocsr()
    y = np.zeros((n, 2))
    for c in (0, 1):
        y[rng.choice(np.flatnonzero(cluster == c), 5, replace=False), c] = 1.0
    prog = opdsl.compile_file("examples/graph.op", backend=backend, dtype="float64")
    from opdsl.cli import to_backend
    args = to_backend(backend, {"L": lap, "W": w, "Y": y})
    scores = np.asarray(prog["scores"](L=args["L"], Y=args["Y"]))
    want = scipy.sparse.linalg.spsolve((lap + 0.1 * scipy.sparse.eye_array(n)).tocsc(), y)
    np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-7 * np.abs(want).max())
    assert (scores.argmax(axis=1) == cluster).mean() > 0.95
    np.testing.assert_allclose(np.asarray(prog["spread"](W=args["W"], Y=args["Y"])), w @ y)

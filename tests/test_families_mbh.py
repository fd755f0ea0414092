"""Monarch, butterfly and Householder-product kinds: conventions pinned with dense examples,
compiled code against the dense reference, and the lowering shapes the benchmarks rely on."""
import numpy as np
import pytest

import opdsl
from opdsl.cli import check_program
from opdsl.errors import ShapeError, TypeError_
from opdsl.kinds import REGISTRY
from opdsl.kinds.blockdiag import block_diag
from opdsl.kinds.butterfly import butterfly_dense, stage_matrix
from opdsl.kinds.householder import HH_BLOCK, householder_dense
from opdsl.kinds.monarch import monarch_dense, perm_matrix

from .harness import call, run_against_dense

BACKENDS = ["numpy", "torch"]


def run(src, backend, dtype="float64", export="y", **inputs):
    return call(opdsl.compile(src, backend=backend, dtype=dtype), export, inputs)


def against_dense(src, backend, dtype):
    return run_against_dense(src, backend, dtype, seed=3)


# ---- Monarch ---------------------------------------------------------------

def dao_monarch(x, w1, w2):
    """numpy port of Dao et al.'s blockdiag_butterfly_multiply_reference (version 2), x [batch, n].
    w1 = R [k, q, p], w2 = L [l, s, r]."""
    batch, n = x.shape
    k, q, p = w1.shape
    l, s, r = w2.shape
    out1 = np.einsum("kqp,bkp->bkq", w1, x.reshape(batch, k, p))
    out1 = out1.reshape(batch, r, l).transpose(0, 2, 1)          # 'b (r l) -> b l r'
    out2 = np.einsum("lsr,blr->bsl", w2, out1)
    return out2.reshape(batch, s * l)                             # 'b s l -> b (s l)'


def test_monarch_small_dense_example():
    """The b = 2 example of docs/families_monarch_butterfly_householder.md."""
    L = np.array([[[1, 2], [3, 4]], [[5, 6], [7, 8]]], float)
    R = np.array([[[1, 0], [0, 2]], [[0, 3], [4, 0]]], float)
    assert np.array_equal(perm_matrix(2, 2), np.eye(4)[[0, 2, 1, 3]])
    want = np.array([[1, 0, 0, 6], [0, 10, 24, 0], [3, 0, 0, 12], [0, 14, 32, 0]], float)
    assert np.array_equal(monarch_dense(L, R), want)
    # square form: P L Pᵀ R with P = perm(b, b), every factor materialized here
    P = perm_matrix(2, 2)
    assert np.array_equal(P @ block_diag(list(L)) @ P.T @ block_diag(list(R)), want)
    for be in BACKENDS:
        got = run("input L : [2, 2, 2]\ninput R : [2, 2, 2]\ninput x : [4, 4]\nexport y = monarch(L, R) @ x",
                  be, L=L, R=R, x=np.eye(4))
        assert np.array_equal(got, want)


def test_monarch_entry_formula_square():
    """M[s*b + l, k*b + p] = L[l, s, k] R[k, l, p] for L, R : [b, b, b]."""
    rng = np.random.default_rng(0)
    b = 3
    L, R = rng.standard_normal((2, b, b, b))
    M = monarch_dense(L, R)
    for s, l, k, p in np.ndindex(b, b, b, b):
        assert M[s * b + l, k * b + p] == pytest.approx(L[l, s, k] * R[k, l, p])


@pytest.mark.parametrize("lshape,rshape", [((3, 3, 3), (3, 3, 3)), ((2, 3, 6), (4, 3, 5)),
                                           ((3, 2, 4), (6, 2, 3)), ((4, 5, 2), (2, 4, 3))])
def test_monarch_matches_dao_reference(lshape, rshape):
    rng = np.random.default_rng(1)
    L, R = rng.standard_normal(lshape), rng.standard_normal(rshape)
    n = rshape[0] * rshape[2]
    x = rng.standard_normal((5, n))
    M = monarch_dense(L, R)
    assert np.allclose(x @ M.T, dao_monarch(x, R, L))
    src = (f"input L : [{', '.join(map(str, lshape))}]\ninput R : [{', '.join(map(str, rshape))}]\n"
           f"input x : [{n}, 5]\nexport y = monarch(L, R) @ x")
    for be in BACKENDS:
        assert np.allclose(run(src, be, L=L, R=R, x=x.T), M @ x.T)


def test_monarch_equals_perm_blockdiag_composition():
    """monarch(L, R) = perm(s, l) blockdiag(L) perm(l, r) blockdiag(R), through the other kinds."""
    rng = np.random.default_rng(2)
    L, R, x = rng.standard_normal((2, 3, 6)), rng.standard_normal((4, 3, 5)), rng.standard_normal((20, 2))
    src = ("input L : [2, 3, 6]\ninput R : [4, 3, 5]\ninput x : [20, 2]\n"
           "export y = monarch(L, R) @ x\n"
           "export z = (perm(3, 2) @ blockdiag(L) @ perm(2, 6) @ blockdiag(R)) @ x")
    for be in BACKENDS:
        prog = opdsl.compile(src, backend=be, dtype="float64")
        args = {"L": L, "R": R, "x": x}
        assert np.allclose(call(prog, "y", args), call(prog, "z", args))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_monarch_against_dense(backend, dtype):
    against_dense("dim b = 5\ninput L : [b, b, b]\ninput R : [b, b, b]\ninput x : [2, b * b, 3]\n"
                  "export y = monarch(L, R) @ x\nexport z = monarch(L, R).T @ x\n"
                  "export w = (monarch(L, R).T @ monarch(L, R) + 2 * monarch(R, L)) @ x", backend, dtype)
    against_dense("input L : [4, 5, 2]\ninput R : [2, 4, 3]\ninput x : [6, 3]\ninput u : [20, 3]\n"
                  "export y = monarch(L, R) @ x\nexport z = monarch(L, R).T @ u", backend, dtype)


def test_monarch_lowering_is_two_matmuls():
    prog = opdsl.compile("dim b = 8\ninput L : [b, b, b]\ninput R : [b, b, b]\ninput x : [b * b, 16]\n"
                         "export y = monarch(L, R) @ x", backend="torch")
    kinds = [n.kind for n in prog.primitive.nodes()]
    assert kinds.count("matmul") == 2 and "einsum" not in kinds
    assert not any(n.kind in ("eye", "zeros") for n in prog.primitive.nodes())   # no matrix built


def test_monarch_shape_errors():
    with pytest.raises(ShapeError) as e:
        opdsl.compile("input L : [2, 3, 5]\ninput R : [4, 3, 5]\ninput x : [20, 2]\nexport y = monarch(L, R) @ x")
    assert "l*r must equal k*q" in e.value.hint
    with pytest.raises(ShapeError):
        opdsl.compile("input L : [3, 3]\ninput R : [3, 3, 3]\ninput x : [9, 2]\nexport y = monarch(L, R) @ x")
    with pytest.raises(TypeError_):
        opdsl.compile("input L : [3, 3, 3]\ninput x : [9, 2]\nexport y = monarch(L, eye(9)) @ x")


# ---- butterfly -------------------------------------------------------------

def test_butterfly_4x4_dense_example():
    """The n = 4 example of the docs: B = B_1 B_0, stage 0 pairs (0,1),(2,3), stage 1 pairs (0,2),(1,3)."""
    T = np.arange(1.0, 17.0).reshape(2, 2, 2, 2)
    (a0, b0), (c0, d0) = T[0, 0]
    (a1, b1), (c1, d1) = T[0, 1]
    (e0, f0), (g0, h0) = T[1, 0]
    (e1, f1), (g1, h1) = T[1, 1]
    B0 = np.array([[a0, b0, 0, 0], [c0, d0, 0, 0], [0, 0, a1, b1], [0, 0, c1, d1]])
    B1 = np.array([[e0, 0, f0, 0], [0, e1, 0, f1], [g0, 0, h0, 0], [0, g1, 0, h1]])
    assert np.array_equal(stage_matrix(T, 0), B0) and np.array_equal(stage_matrix(T, 1), B1)
    assert np.array_equal(butterfly_dense(T), B1 @ B0)
    for be in BACKENDS:
        got = run("input T : [2, 2, 2, 2]\ninput x : [4, 4]\nexport y = butterfly(T) @ x", be, T=T, x=np.eye(4))
        assert np.allclose(got, B1 @ B0)


@pytest.mark.parametrize("levels", [1, 2, 3, 4, 5, 6, 7])
def test_butterfly_dense_is_product_of_stages(levels):
    rng = np.random.default_rng(levels)
    T = rng.standard_normal((levels, 2 ** (levels - 1), 2, 2))
    want = np.eye(2 ** levels)
    for s in range(levels):
        want = stage_matrix(T, s) @ want
    assert np.allclose(butterfly_dense(T), want)


@pytest.mark.parametrize("levels", [3, 6])
def test_butterfly_hadamard(levels):
    """Every twiddle [[1, 1], [1, -1]] gives the Sylvester-Hadamard matrix H2 ⊗ ... ⊗ H2."""
    n = 2 ** levels
    T = np.broadcast_to(np.array([[1.0, 1.0], [1.0, -1.0]]), (levels, n // 2, 2, 2)).copy()
    H = np.array([[1.0]])
    for _ in range(levels):
        H = np.kron(H, np.array([[1.0, 1.0], [1.0, -1.0]]))
    src = f"input T : [{levels}, {n // 2}, 2, 2]\ninput x : [{n}, {n}]\nexport y = butterfly(T) @ x"
    for be in BACKENDS:
        assert np.allclose(run(src, be, T=T, x=np.eye(n)), H)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("levels", [1, 2, 3, 5, 6, 7])
def test_butterfly_against_dense(backend, dtype, levels):
    n = 2 ** levels
    against_dense(f"input T : [{levels}, {n // 2}, 2, 2]\ninput x : [{n}, 3]\ninput u : [2, {n}, 2]\n"
                  "export y = butterfly(T) @ x\nexport z = butterfly(T).T @ u\n"
                  "export w = (butterfly(T).T @ butterfly(T) - butterfly(T)) @ x", backend, dtype)


def test_butterfly_lowering_regroups_stages():
    """x meets two batched matmuls (Monarch form), never log2(n) stage passes."""
    prog = opdsl.compile("input T : [10, 512, 2, 2]\ninput x : [1024, 8]\nexport y = butterfly(T) @ x",
                         backend="torch")
    g = prog.primitive
    x = next(n.id for n in g.nodes() if n.kind == "arg" and n.attrs["name"] == "x")
    touched = {x}
    for v in g.live():
        if any(o in touched for o in g[v].operands):
            touched.add(v)
    kinds = [g[v].kind for v in touched]
    assert kinds.count("matmul") == 2 and "einsum" not in kinds
    shapes = sorted(tuple(int(d) for d in g[o].type.shape) for v in touched if g[v].kind == "matmul"
                    for o in g[v].operands if o not in touched)
    assert shapes == [(32, 32, 32), (32, 32, 32)]


def test_butterfly_shape_errors():
    for shape in ("[3, 3, 2, 2]", "[2, 4, 2, 2]", "[3, 4, 2, 3]"):
        with pytest.raises(ShapeError):
            opdsl.compile(f"input T : {shape}\ninput x : [8, 2]\nexport y = butterfly(T) @ x")
    with pytest.raises(ShapeError) as e:
        opdsl.compile("dim h\ninput T : [3, h, 2, 2]\ninput x : [2 * h, 2]\nexport y = butterfly(T) @ x")
    assert "concrete" in str(e.value)


# ---- Householder products -------------------------------------------------

def test_householder_small_dense_example():
    """The docs example: v1 = (1, 1), v2 = (0, 1): H = H1 H2 = [[0, 1], [-1, 0]], Hᵀ = H2 H1."""
    V = np.array([[1.0, 0.0], [1.0, 1.0]])
    H = np.array([[0.0, 1.0], [-1.0, 0.0]])
    assert np.allclose(householder_dense(V), H)
    assert np.allclose(householder_dense(V, transposed=True), H.T)
    src = "input V : [2, 2]\ninput x : [2, 2]\nexport y = householder(V) @ x\nexport z = householder(V).T @ x"
    for be in BACKENDS:
        assert np.allclose(run(src, be, V=V, x=np.eye(2)), H)
        assert np.allclose(run(src, be, export="z", V=V, x=np.eye(2)), H.T)


def test_householder_dense_is_product_of_reflectors():
    rng = np.random.default_rng(4)
    V = rng.standard_normal((9, 5))
    want = np.eye(9)
    for i in range(5):
        v = V[:, i]
        want = want @ (np.eye(9) - 2 * np.outer(v, v) / (v @ v))
    assert np.allclose(householder_dense(V), want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("k", [1, 7, HH_BLOCK, 2 * HH_BLOCK + 5])
def test_householder_against_dense(backend, dtype, k):
    against_dense(f"dim n = 40\ninput V : [n, {k}]\ninput x : [n, 3]\ninput u : [2, n, 2]\n"
                  "export y = householder(V) @ x\nexport z = householder(V).T @ u", backend, dtype)


def test_householder_transpose_is_reversed_columns():
    rng = np.random.default_rng(5)
    V, x = rng.standard_normal((30, 70)), rng.standard_normal((30, 4))
    src = "input V : [30, 70]\ninput W : [30, 70]\ninput x : [30, 4]\n" \
          "export y = householder(V).T @ x\nexport z = householder(W) @ x"
    for be in BACKENDS:
        prog = opdsl.compile(src, backend=be, dtype="float64")
        y = call(prog, "y", {"V": V, "x": x})
        assert np.allclose(y, call(prog, "z", {"W": np.ascontiguousarray(V[:, ::-1]), "x": x}))
        assert np.allclose(y, householder_dense(V).T @ x)


def test_householder_orthogonal_float32():
    """‖HᵀH − I‖ (largest entry) ≤ 1e-4 in float32 at n = k = 1024 (the benchmark reports n = 4096)."""
    import torch
    n = 1024
    prog = opdsl.compile(f"dim c\ninput V : [{n}, {n}]\ninput x : [{n}, c]\n"
                         "export y = householder(V).T @ householder(V) @ x\n"
                         "export z = householder(V) @ x", backend="torch", dtype="float32")
    assert "orthogonal" in prog.graph.type(prog.graph[prog.graph.exports["z"]].operands[0]).props
    V = torch.randn(n, n, generator=torch.Generator().manual_seed(0))
    eye = torch.eye(n)
    Q = prog.z(V=V, x=eye)                                  # H, float32
    assert float((Q.T @ Q - eye).abs().max()) <= 1e-4
    assert float((Q @ Q.T - eye).abs().max()) <= 1e-4
    some = eye[:, ::8]                                      # Hᵀ(H e_j) = e_j through the compiled transpose
    assert float((prog.y(V=V, x=some) - some).abs().max()) <= 1e-4


def test_householder_lowering_is_blocked():
    k = 3 * HH_BLOCK + 1
    prog = opdsl.compile(f"dim n\ninput V : [n, {k}]\ninput x : [n, 8]\nexport y = householder(V) @ x",
                         backend="torch")
    kinds = [n.kind for n in prog.primitive.nodes()]
    assert kinds.count("solve_triangular") == 4          # ceil(k / HH_BLOCK) blocks, not k reflectors
    assert "torch.linalg.solve_triangular" in prog.source


def test_householder_needs_concrete_k():
    with pytest.raises(ShapeError) as e:
        opdsl.compile("dim n\ndim k\ninput V : [n, k]\ninput x : [n, 2]\nexport y = householder(V) @ x")
    assert "reflectors" in str(e.value)


# ---- catalogue pieces: samples and example files -----------------------------

@pytest.mark.parametrize("name", ["monarch", "butterfly", "householder"])
def test_samples(name):
    for n in (4, 8, 9):
        sample = REGISTRY[name].sample(n, "q")
        if sample is None:
            continue
        decls, expr = sample
        against_dense(f"{decls}\ninput x : [{n}, 3]\nexport y = ({expr}) @ x", "torch", "float64")


@pytest.mark.parametrize("path,dims", [("examples/monarch.op", {"b": 6}),
                                       ("examples/butterfly.op", {"logn": 5, "half": 16}),
                                       ("examples/householder.op", {"n": 50, "k": 70})])
@pytest.mark.parametrize("backend", BACKENDS)
def test_example_files(path, dims, backend):
    for d in (dims, None) if backend == "torch" and path.endswith("monarch.op") else (dims,):
        prog = opdsl.compile_file(path, backend=backend, dims=d)
        rows = check_program(prog)
        assert rows and all(ok for *_, ok in rows), rows


@pytest.mark.parametrize("backend", BACKENDS)
def test_householder_rows_spelled_differently(backend):
    """V's rows are `n`, the tensor it meets has 5 rows (after perm): the same size, spelled apart."""
    against_dense("dim n = 5\ninput V : [n, 3]\ninput x : [n, 2]\n"
                  "export y = (householder(V) @ perm(1, 5)) @ x\n"
                  "export z = (householder(V).T @ perm(5, 1)) @ x", backend, "float64")

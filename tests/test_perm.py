"""The stride permutation convention L(mn, m) (SPIRAL), pinned with dense examples."""
import numpy as np

import opdsl
from opdsl.reference import dense_eval


def dense_of(src, **inputs):
    prog = opdsl.compile(src, backend="numpy", dtype="float64")
    return prog, dense_eval(prog.graph, prog.graph.exports["y"], inputs)


def test_L6_2_reads_at_stride_2():
    x = np.arange(6.0)
    prog, ref = dense_of("input x : [6]\nexport y = perm(2, 3) @ x", x=x)
    assert list(ref) == [0, 2, 4, 1, 3, 5]
    assert list(prog.y(x=x)) == [0, 2, 4, 1, 3, 5]


def test_transpose_is_inverse_stride():
    x = np.arange(12.0)
    prog = opdsl.compile("input x : [12]\nexport y = perm(4, 3).T @ perm(4, 3) @ x\nexport z = perm(3, 4) @ perm(4, 3) @ x",
                         backend="numpy", dtype="float64")
    assert np.array_equal(prog.y(x=x), x) and np.array_equal(prog.z(x=x), x)


def test_kron_commutation_identity():
    """A_m ⊗ B_n = L(mn, m) (B_n ⊗ A_m) L(mn, n) — the defining identity of the convention."""
    rng = np.random.default_rng(0)
    A, B, x = rng.standard_normal((3, 3)), rng.standard_normal((4, 4)), rng.standard_normal((12, 2))
    prog = opdsl.compile("input A : [3, 3]\ninput B : [4, 4]\ninput x : [12, 2]\n"
                         "export y = perm(3, 4) @ kron(B, A) @ perm(4, 3) @ x", backend="numpy", dtype="float64")
    assert np.allclose(prog.y(A=A, B=B, x=x), np.kron(A, B) @ x)

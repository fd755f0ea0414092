"""The Python API contract of docs/architecture.md."""
import numpy as np
import torch

import opdsl

SRC = """
dim n = 8
dim k
input x : [n, k]
param W : [n, n] = eye
param d : [n] = ones
export first = W @ x
export second = (diag(d) + W.T) @ x
"""


def test_compile_and_call():
    prog = opdsl.compile(SRC, backend="torch", dims={"n": 6}, dtype="float64")
    assert prog.functions == ["first", "second"]
    x, W, d = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 6, dtype=torch.float64), \
        torch.randn(6, dtype=torch.float64)
    assert torch.allclose(prog["first"](x=x, W=W), W @ x)
    assert torch.allclose(prog.second(x=x, W=W, d=d), (torch.diag(d) + W.T) @ x)
    assert isinstance(prog.source, str) and "def second(*, x, W, d):" in prog.source


def test_compile_file_numpy_backend():
    prog = opdsl.compile_file("examples/blockdiag.op", backend="numpy", dims={"nb": 4, "p": 3})
    W = np.random.default_rng(0).standard_normal((4, 3, 3)).astype(np.float32)
    x = np.ones((12, 2), np.float32)
    y = prog.apply(x=x, W=W)
    ref = np.concatenate([W[i] @ x[3 * i:3 * i + 3] for i in range(4)])
    assert np.allclose(y, ref, atol=1e-5)


def test_free_dims_bind_per_call():
    prog = opdsl.compile(SRC)
    W = torch.eye(8)
    for k in (1, 5):
        assert prog.first(x=torch.ones(8, k), W=W).shape == (8, k)


def test_batched_and_vector_application():
    prog = opdsl.compile("dim n = 4\ninput W : [n, n]\ninput v : [n]\ninput X : [2, 3, n, 5]\n"
                         "export a = W @ v\nexport b = W @ X")
    W = torch.randn(4, 4)
    v, X = torch.randn(4), torch.randn(2, 3, 4, 5)
    assert torch.allclose(prog.a(W=W, v=v), W @ v, atol=1e-6)
    assert torch.allclose(prog.b(W=W, X=X), W @ X, atol=1e-6)


def test_explain_is_available():
    assert "first" in opdsl.compile(SRC).explain()

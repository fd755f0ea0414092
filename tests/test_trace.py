"""@opdsl.jit: the tracer builds the same IR as the .op frontend, for every kind of the catalogue.

Every catalogue example (opdsl.kinds.REGISTRY[*].examples) is turned into a
Python function automatically (tests/harness.py, python_version): its `let`/`export` expressions are evaluated as
Python with `opdsl.<constructor>` functions, traced by @opdsl.jit and compared
with the dense reference of the .op program.  A new kind is covered the moment
it registers an example.
"""
import inspect
import re

import numpy as np
import pytest
import torch

import opdsl
from opdsl.kinds import CONSTRUCTORS
from opdsl.reference import dense_eval

from .harness import CATALOGUE, CATALOGUE_IDS, assert_matches, python_version, torch_inputs


# ---- every kind through the decorator -------------------------------------------------

@pytest.mark.parametrize("kind,i,src", CATALOGUE, ids=CATALOGUE_IDS)
def test_catalogue_through_jit(kind, i, src, dtype="float32"):
    """float32 here; float64 values and gradients in test_gradients.test_jit_gradients."""
    fn, g, inputs = python_version(src)
    f = opdsl.jit(fn, backend="torch")
    out = f(**torch_inputs(inputs, dtype))
    assert set(out) == set(g.exports)
    for name, root in g.exports.items():
        assert_matches(out[name], dense_eval(g, root, inputs), dtype)


def test_every_constructor_is_an_opdsl_function():
    for name in CONSTRUCTORS:
        fn = getattr(opdsl, name)
        assert callable(fn) and name in dir(opdsl)
        if isinstance(fn, opdsl.trace.ConstructorModule):     # opdsl.trace: the module and trace(A)
            assert fn.__name__ == f"opdsl.{name}"
            continue
        assert fn.__name__ == name and f"`{name}` constructor" in fn.__doc__
    with pytest.raises(AttributeError):
        opdsl.not_a_constructor


def test_same_ir_as_the_op_frontend():
    """The traced function and the .op program lower to the same statements."""
    src = ("input x : [16, 3]\ninput A : [4, 4]\ninput B : [4, 4]\ninput d : [16]\ninput U : [16, 2]\n"
           "input V : [16, 2]\nexport f = (kron(A, B).T + diag(d) - 0.5 * lowrank(U, V)) @ x")

    @opdsl.jit
    def f(x, A, B, d, U, V):
        return (opdsl.kron(A, B).T + opdsl.diag(d) - 0.5 * opdsl.lowrank(U, V)) @ x

    args = [torch.randn(*s) for s in ((16, 3), (4, 4), (4, 4), (16,), (16, 2), (16, 2))]

    def body(source):
        fn = source[source.index("def f("):]
        return [ln for ln in fn.splitlines() if ln.startswith("    ") and not ln.strip().startswith(("#", '"""'))]

    assert body(f.program(*args).source) == body(opdsl.compile(src).source)
    assert f.program(*args).optimized.to_text() == opdsl.compile(src).optimized.to_text()


# ---- the cache ------------------------------------------------------------------------

def test_compiles_once_per_signature():
    calls = []

    @opdsl.jit
    def f(W, x):
        calls.append(1)
        return W @ x

    W, x = torch.randn(3, 4), torch.randn(4, 2)
    for _ in range(3):
        f(W, x)
    assert len(calls) == 1 and f.cache_size == 1
    f(W, torch.randn(4, 5))                         # new shape
    f(W.double(), torch.randn(4, 2).double())       # new dtype
    f(W, x=x)                                       # keywords: the same signature
    assert len(calls) == 3 and f.cache_size == 3
    torch.testing.assert_close(f(W, x), W @ x)


def test_static_arguments_are_part_of_the_signature():
    @opdsl.jit
    def f(x, h, causal):
        return opdsl.conv(h, causal=causal) @ x

    x, h = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    a, b = f(x, h, True), f(x, h, False)
    assert f.cache_size == 2 and not torch.allclose(a, b)
    lower = np.array([[h[i - j].item() if j <= i else 0.0 for j in range(8)] for i in range(8)])  # causal
    np.testing.assert_allclose(a.numpy(), lower @ x.numpy(), atol=1e-10)


def test_branching_on_shapes_is_static():
    @opdsl.jit
    def f(x, d):
        if x.shape[0] > 4 and d.ndim == 1:
            return 2 * (opdsl.diag(d) @ x)
        return opdsl.diag(d) @ x

    x, d = torch.randn(6, 2), torch.randn(6)
    torch.testing.assert_close(f(x, d), 2 * d[:, None] * x)


def test_lists_of_tensors_dicts_and_tuples():
    @opdsl.jit
    def f(factors, x):
        return {"y": opdsl.kron(*factors) @ x, "z": opdsl.kron(*factors).T @ x}

    A, B, x = torch.randn(2, 2), torch.randn(3, 3), torch.randn(6, 1)
    out = f([A, B], x)
    torch.testing.assert_close(out["y"], torch.kron(A, B) @ x)
    torch.testing.assert_close(out["z"], torch.kron(A, B).T @ x)

    @opdsl.jit
    def g(W, x):
        return W @ x, W.T @ (W @ x)

    W, x = torch.randn(3, 4), torch.randn(4, 2)
    y, z = g(W, x)
    torch.testing.assert_close(y, W @ x)
    torch.testing.assert_close(z, W.T @ W @ x)


def test_jit_calls_inline_inside_another_trace():
    @opdsl.jit
    def inner(A, x):
        return A @ x

    @opdsl.jit
    def outer(A, B, x):
        return inner(A, B @ x)

    A, B, x = torch.randn(3, 3), torch.randn(3, 3), torch.randn(3, 2)
    torch.testing.assert_close(outer(A, B, x), A @ B @ x)
    assert inner.cache_size == 0


def test_other_backends():
    @opdsl.jit(backend="numpy")
    def f(U, V, x):
        return opdsl.lowrank(U, V) @ x

    U, V, x = np.random.randn(5, 2), np.random.randn(4, 2), np.random.randn(4, 3)
    np.testing.assert_allclose(f(U, V, x), U @ V.T @ x, atol=1e-12)


def test_jax_backend():
    jnp = pytest.importorskip("jax.numpy")

    @opdsl.jit(backend="jax")
    def f(L, R, x):
        return opdsl.monarch(L, R) @ x

    L, R, x = (np.random.randn(*s).astype("float32") for s in ((2, 2, 2), (2, 2, 2), (4, 3)))
    out = f(jnp.asarray(L), jnp.asarray(R), jnp.asarray(x))
    g = opdsl.compile("input L : [2, 2, 2]\ninput R : [2, 2, 2]\ninput x : [4, 3]\nexport y = monarch(L, R) @ x")
    np.testing.assert_allclose(np.asarray(out), dense_eval(g.graph, g.graph.exports["y"],
                                                           {"L": L, "R": R, "x": x}), atol=1e-5)


# ---- errors point at the user's line ----------------------------------------------------

def _line_of(fn, text):
    lines, start = inspect.getsourcelines(fn)
    return start + next(i for i, ln in enumerate(lines) if text in ln)


@pytest.mark.parametrize("body,message", [
    ("if x:\n        return W @ x\n    return x", "Python control flow"),
    ("while W @ x:\n        pass\n    return x", "Python control flow"),
    ("return W @ x if (W @ x) > 0 else x", "comparing"),
    ("return W @ x[0]", "indexing"),
    ("return W @ x * float(W @ x)", "converting to a number"),
    ("return (W @ x).sum()", "has no attribute .sum"),
    ("return torch.relu(W @ x)", "torch.relu was called on a traced value"),
    ("return W @ CAPTURED", "not an argument of the traced function"),
    ("return opdsl.kron(W, 2) @ x", "expected an operator, got the number 2"),
    ("return opdsl.diag(W) @ x", "must have rank 1"),
    ("return opdsl.lowrank(W, W)", "returned an operator"),
    ("return W @ W", "cannot apply an operator [3, 4] to a tensor [3, 4]"),
    ("return opdsl.kron(W, W, bad=1) @ x", "has no option 'bad'"),
    ("return np.ones(3) @ (W @ x)", "not an argument of the traced function"),
])
def test_errors_are_clear_and_located(body, message):
    ns = {"opdsl": opdsl, "torch": torch, "np": np, "CAPTURED": torch.randn(4, 2)}
    src = "def f(W, x):\n    " + body + "\n"
    exec(compile(src, "user_code.py", "exec"), ns)
    import linecache
    linecache.cache["user_code.py"] = (len(src), None, src.splitlines(True), "user_code.py")
    opdsl.trace._TEXTS.pop("user_code.py", None)
    f = opdsl.jit(ns["f"])
    W, x = torch.randn(3, 4), torch.randn(4, 2)
    with pytest.raises(opdsl.OpdslError) as e:
        f(W, x)
    text = str(e.value)
    assert message in text
    assert re.search(r"user_code\.py:2:\d+", text), text     # the user's line, with the source quoted
    assert src.splitlines()[1].strip() in text


def test_returning_a_non_tensor_points_at_the_function():
    @opdsl.jit
    def f(W, x):
        return 3

    with pytest.raises(opdsl.OpdslError, match="returned int, not a traced tensor") as e:
        f(torch.randn(3, 4), torch.randn(4, 2))
    assert f"test_trace.py:{_line_of(f.fn, 'def f(W, x)')}:" in str(e.value)


def test_constructor_outside_a_trace():
    with pytest.raises(opdsl.OpdslError, match="only while a function decorated with @opdsl.jit") as e:
        opdsl.eye(3)
    assert "test_trace.py" in str(e.value)


def test_shape_errors_name_the_line_and_the_operands():
    @opdsl.jit
    def f(A, x):
        y = A @ x
        return A @ y

    with pytest.raises(opdsl.errors.ShapeError) as e:
        f(torch.randn(3, 4), torch.randn(4, 2))
    assert f"test_trace.py:{_line_of(f.fn, 'return A @ y')}:" in str(e.value)
    assert "cannot apply an operator [3, 4]" in str(e.value)


def test_arguments_must_fit_the_backend():
    @opdsl.jit
    def f(A, x):
        return A @ x

    with pytest.raises(opdsl.OpdslError, match="torch backend takes torch tensors"):
        f(np.ones((2, 2)), np.ones((2, 1)))
    # integer tensors are indices (select's): computing with them is an error at the use
    with pytest.raises(opdsl.OpdslError, match="int64 tensor holds indices") as e:
        f(torch.ones(2, 2, dtype=torch.int64), torch.ones(2, 1, dtype=torch.int64))
    assert f"test_trace.py:{_line_of(f.fn, 'return A @ x')}:" in str(e.value)
    with pytest.raises(opdsl.OpdslError, match="dtype int16"):
        f(torch.ones(2, 2, dtype=torch.int16), torch.ones(2, 1))
    with pytest.raises(opdsl.OpdslError, match="argument 'x' is a dict .* static part of the signature"):
        f(torch.ones(2, 2), {"a": 1})
    with pytest.raises(opdsl.OpdslError, match="missing a required argument"):
        f(torch.ones(2, 2))


def test_generated_code_comments_point_at_python_lines():
    @opdsl.jit
    def layer(x, d, U, V):
        A = opdsl.diag(d) + opdsl.lowrank(U, V)
        return A @ x

    args = torch.randn(6, 2), torch.randn(6), torch.randn(6, 2), torch.randn(6, 2)
    src = layer.program(*args).source
    assert f"test_trace.py:{_line_of(layer.fn, 'A = opdsl.diag')}  A = opdsl.diag(d) + opdsl.lowrank(U, V)" in src
    assert "def layer(*, x, d, U, V):" in src
    torch.testing.assert_close(layer(*args), (torch.diag(args[1]) + args[2] @ args[3].T) @ args[0])

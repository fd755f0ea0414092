"""Validated calls (docs/reliability.md, "Calls"): generated functions check argument names,
shapes against the declared dims (binding free dims consistently), dtypes and devices, and
raise a CallError naming the argument, the expected shape in source terms and the shape received.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import opdsl
from opdsl.errors import CallError, DimError

from .harness import BACKENDS


SRC = """
dim n = 4
dim k
dim m = 2 * k
input x : [n, k]
input A : [n, n]
input B : [m, n] float64
export y = A @ x
export z = B @ x
"""


def arrays(backend, **arrs):
    from opdsl.cli import to_backend
    return to_backend(backend, arrs)


@pytest.fixture(scope="module", params=BACKENDS)
def prog(request):
    return opdsl.compile(SRC, backend=request.param, filename="v.op")


def call_error(fn, **kwargs) -> str:
    with pytest.raises(CallError) as e:
        fn(**kwargs)
    return e.value.message


def good(backend, k=3):
    """Arguments of z."""
    return dict(x=np.ones((4, k), np.float32), B=np.ones((2 * k, 4)))


def test_names(prog):
    b = prog.backend_name
    msg = call_error(prog.y, **arrays(b, x=np.ones((4, 3), np.float32)))
    assert "missing A" in msg
    msg = call_error(prog.y, **arrays(b, x=np.ones((4, 3), np.float32), A=np.eye(4, dtype=np.float32),
                                      W=np.eye(4, dtype=np.float32)))
    assert "unexpected W" in msg
    with pytest.raises(CallError) as e:
        prog["nope"]
    assert "exports: y, z" in e.value.hint


def test_shapes_in_source_terms(prog):
    b = prog.backend_name
    msg = call_error(prog.y, **arrays(b, x=np.ones((4, 3), np.float32), A=np.eye(5, dtype=np.float32)))
    assert msg == "y(): argument 'A' has shape [5, 5], expected [n, n] with n = 4"
    msg = call_error(prog.y, **arrays(b, x=np.ones((4,), np.float32), A=np.eye(4, dtype=np.float32)))
    assert msg == "y(): argument 'x' has shape [4], expected [n, k]"
    msg = call_error(prog.y, **arrays(b, x=np.ones((5, 3), np.float32), A=np.eye(4, dtype=np.float32)))
    assert msg.startswith("y(): argument 'x' has shape [5, 3], expected [n, k] with ")
    assert "n = 4" in msg and "k = 3" in msg


def test_free_dims_bind_consistently(prog):
    """k is bound by x; B must then have 2k rows (a derived dim), whatever backend."""
    b = prog.backend_name
    args = good(b, k=3)
    out = prog.z(**arrays(b, **args))
    np.testing.assert_allclose(np.asarray(out), np.ones((6, 4)) @ np.ones((4, 3)))
    args["B"] = np.ones((5, 4))
    msg = call_error(prog.z, **arrays(b, **args))
    assert msg == "z(): argument 'B' has shape [5, 4], expected [m, n] with m = 6, n = 4"
    out = prog.z(**arrays(b, **good(b, k=5)))       # another k: bound again at each call
    assert tuple(out.shape) == (10, 5)


def test_dtypes(prog):
    b = prog.backend_name
    msg = call_error(prog.y, **arrays(b, x=np.ones((4, 3)), A=np.eye(4, dtype=np.float32)))
    assert msg == "y(): argument 'x' has dtype float64, expected float32"
    args = good(b)
    args["B"] = args["B"].astype(np.float32)
    msg = call_error(prog.z, **arrays(b, **args))
    assert msg.startswith("z(): argument 'B' has dtype") and msg.endswith("expected float64")


def test_not_an_array(prog):
    msg = call_error(prog.y, x=[[1.0] * 3] * 4, A=np.eye(4, dtype=np.float32))
    assert msg.startswith("y(): argument 'x' has shape list, expected [n, k]")


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "tvm"])
def test_derived_and_solved_dims(backend):
    """A free dim seen only inside expressions is solved from the shape; derived dims must be integers."""
    src = "dim n\ndim h = n / 2\ninput x : [2 * n + 1, 3]\ninput W : [h, n]\ninput v : [n]\n" \
          "export y = 2 * x\nexport w = W @ v"
    p = opdsl.compile(src, backend=backend)
    out = p.y(**arrays(backend, x=np.ones((9, 3), np.float32)))
    assert tuple(out.shape) == (9, 3)
    msg = call_error(p.y, **arrays(backend, x=np.ones((8, 3), np.float32)))
    assert msg.startswith("y(): argument 'x' has shape [8, 3], expected [2*n + 1, 3]")
    out = p.w(**arrays(backend, W=np.ones((3, 6), np.float32), v=np.ones((6,), np.float32)))
    assert tuple(out.shape) == (3,)
    msg = call_error(p.w, **arrays(backend, W=np.ones((3, 7), np.float32), v=np.ones((7,), np.float32)))
    assert msg == "w(): dim h = n/2 is not an integer with n = 7"
    msg = call_error(p.w, **arrays(backend, W=np.ones((3, 6), np.float32), v=np.ones((4,), np.float32)))
    assert msg == "w(): argument 'v' has shape [4], expected [n] with n = 6"


def test_unresolvable_free_dim_is_a_compile_error():
    with pytest.raises(DimError) as e:
        opdsl.compile("dim a\ndim b\ninput x : [a * b, 3]\nexport y = 2 * x", backend="numpy", filename="f.op")
    assert "a, b cannot be found from the arguments' shapes" in e.value.message
    assert (e.value.span.line, e.value.span.column) == (1, 5)


def test_torch_devices():
    """All arguments on one device: `meta` tensors stand for another device without a GPU."""
    p = opdsl.compile(SRC, backend="torch")
    x = torch.ones(4, 3)
    a_meta = torch.eye(4, device="meta")
    msg = call_error(p.y, x=x, A=a_meta)
    assert msg == "y(): argument 'A' is on meta, but 'x' is on cpu; all arguments must be on one device"
    if torch.cuda.is_available():
        msg = call_error(p.y, x=x, A=torch.eye(4).cuda())
        assert "argument 'A' is on cuda:0, but 'x' is on cpu" in msg
        y = p.y(x=x.cuda(), A=torch.eye(4).cuda())
        assert y.device.type == "cuda"


def test_checks_come_before_the_body():
    """Every check precedes the first computing statement: a bad call fails before any work."""
    for backend in BACKENDS:
        if backend == "tvm":
            continue
        p = opdsl.compile(SRC, backend=backend)
        for name in ("y", "z"):
            lines = p.source.split(f"\ndef {name}(")[1].split("\n\n\n")[0].splitlines()
            first_body = next(i for i, line in enumerate(lines) if line.strip().startswith("# "))
            checks = [i for i, line in enumerate(lines) if "_error(" in line or "_check_arg(" in line]
            assert checks and max(checks) < first_body, (backend, name)

"""The torch backend's compile=True (backends/torch_compile.py): every export through
torch.compile(fullgraph=True) — no graph break in the generated code — with the same results and
the same argument errors."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import opdsl  # noqa: E402
from opdsl.errors import CallError  # noqa: E402
from opdsl.reference import random_inputs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("example", ["kron.op", "diag_lowrank.op", "attention.op", "retnet.op", "conv.op"])
def test_exports_compile_without_graph_breaks_and_agree(example):
    src = (ROOT / "examples" / example).read_text()
    fast = opdsl.compile(src, backend="torch", compile=True)
    plain = opdsl.compile(src, backend="torch")
    for name in fast.functions:
        inputs = {k: torch.as_tensor(v) for k, v in random_inputs(fast.graph, name, seed=0).items()}
        with warnings.catch_warnings():
            # our fallback's warning would mean torch.compile failed (a graph break under fullgraph)
            warnings.filterwarnings("error", message="opdsl: torch.compile")
            got = fast[name](**inputs)
        want = plain[name](**inputs)
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5), (example, name, float((got - want).abs().max()))


def test_argument_errors_and_gradients_as_without_compile():
    src = (ROOT / "examples" / "diag_lowrank.op").read_text()
    prog = opdsl.compile(src, backend="torch", compile=True)
    inputs = {k: torch.as_tensor(v) for k, v in random_inputs(prog.graph, "apply", seed=0).items()}
    bad = dict(inputs, x=torch.randn(inputs["x"].shape[0] - 1, 3))
    with pytest.raises(CallError, match="argument 'x' has shape"):
        prog.apply(**bad)
    U = inputs["U"].clone().requires_grad_()
    prog.apply(**dict(inputs, U=U)).sum().backward()
    U0 = inputs["U"].clone().requires_grad_()
    opdsl.compile(src, backend="torch").apply(**dict(inputs, U=U0)).sum().backward()
    assert torch.allclose(U.grad, U0.grad, rtol=1e-4, atol=1e-4)


def test_the_option_is_the_torch_backends():
    from opdsl.errors import BackendError
    with pytest.raises(BackendError, match="takes no options"):
        opdsl.compile("input x : [2, 2]\nexport y = x @ x\n", backend="numpy", compile=True)


def test_an_export_torch_compile_cannot_run_runs_without_it_after_one_warning():
    # a sparse argument: Dynamo cannot trace it, so the export runs eagerly; retrying the trace at
    # every call cost 6x the product itself
    import scipy.sparse
    src = "dim n = 50\ninput S : [n, n] sparse\ninput X : [n, 3]\nexport y = S @ X\n"
    fast = opdsl.compile(src, backend="torch", compile=True)
    plain = opdsl.compile(src, backend="torch")
    args = fast._backend.from_numpy({"S": scipy.sparse.random(50, 50, density=0.1, random_state=0, format="csr",
                                                              dtype="float32"),
                                     "X": torch.randn(50, 3).numpy()})
    with pytest.warns(RuntimeWarning, match="runs without it"):
        got = fast.y(**args)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = fast.y(**args)
    want = plain.y(**args)
    assert torch.allclose(got, want) and torch.allclose(again, want)

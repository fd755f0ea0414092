"""opdsl.torch.Module: a compiled export as an nn.Module, on every kind of the catalogue.

Every catalogue example becomes a layer automatically (`as_layer`): the inputs
an operator is built from become `param`s, the rest stay inputs of forward.
The module's output and its gradients (params and inputs) are compared with
the dense reference.  Then the nn.Module contract on examples/layer.op:
optimizers, state_dict, .to(device/dtype), deepcopy/pickle, torch.compile.
"""
import copy
import io

import numpy as np
import pytest
import torch

import opdsl
from opdsl.reference import DOMAINS, input_domains
import opdsl.torch
from opdsl.errors import CallError
from opdsl.reference import dense_eval

from .harness import (CATALOGUE, CATALOGUE_IDS, all_inputs, as_layer, as_numpy_grad, check_directional, directions,
                      gradient_estimate, torch_inputs)

LAYER = "examples/layer.op"


@pytest.fixture(autouse=True)
def _flush_denormals():
    torch.set_flush_denormal(True)     # see test_gradients.py
    yield
    torch.set_flush_denormal(False)


@pytest.mark.parametrize("kind,i,src", CATALOGUE, ids=CATALOGUE_IDS)
def test_catalogue_as_module(kind, i, src):
    layer_src, data, dims = as_layer(src)
    for export in opdsl.compile(layer_src, backend="numpy").functions:
        m = opdsl.torch.Module.from_source(layer_src, export, dims=dims, dtype="float64", generator=0)
        g = m.program.graph
        assert set(m.param_names) <= data and all(isinstance(p, torch.nn.Parameter) for p in m.parameters())
        domains = {g[v].attrs["name"]: d for v, d in input_domains(g, export).items()}
        with torch.no_grad():          # a decay in (0, 1], a positive lengthscale: as the kind declares
            for k, p in m.named_parameters():
                if k in domains:
                    p.copy_(torch.from_numpy(DOMAINS[domains[k]](p.numpy())))
        values = {k: p.detach().numpy() for k, p in m.named_parameters()}
        inputs = {k: v for k, v in all_inputs(g).items() if k in m.input_names}
        xs = torch_inputs(inputs, "float64", grad=True)        # sparse: CSR; indices: no gradient
        out = m(**xs)
        ref = dense_eval(g, g.exports[export], {**inputs, **values})
        np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-9, atol=1e-9 * max(1, np.abs(ref).max()))
        if not out.requires_grad:
            continue
        v, w = directions({**inputs, **values}, tuple(out.shape), seed=3, g=g)
        names = list(m.param_names) + [k for k, t in xs.items() if t.requires_grad]
        leaves = list(m.parameters()) + [t for t in xs.values() if t.requires_grad]
        grads = torch.autograd.grad((out * torch.from_numpy(w)).sum(), leaves, allow_unused=True)
        grads = {a: as_numpy_grad(gr, {**inputs, **values}[a]) for a, gr in zip(names, grads)}
        check_directional(grads, g, g.exports[export], {**inputs, **values}, v, w,
                          gradient_estimate(g, g.exports[export]))


# ---- the nn.Module contract on examples/layer.op -----------------------------------------

def small(**kw):
    return opdsl.torch.Module.from_file(LAYER, dims={"b": 4}, **kw)


def test_params_are_created_with_the_declared_initializer():
    m = opdsl.torch.Module.from_file(LAYER, generator=0)
    assert m.param_names == ("L", "R") and m.input_names == ("x",)
    for p in m.parameters():
        assert isinstance(p, torch.nn.Parameter) and p.shape == (16, 16, 16) and p.requires_grad
        assert abs(p.std().item() - 0.25) < 0.02 and abs(p.mean().item()) < 0.02
    same, other = opdsl.torch.Module.from_file(LAYER, generator=0), opdsl.torch.Module.from_file(LAYER, generator=1)
    assert torch.equal(same.L, m.L) and not torch.equal(other.L, m.L)
    assert torch.equal(m.program.init(0)["R"], m.R)      # the same generated init_params


def test_forward_matches_dense_and_trains():
    torch.manual_seed(0)
    m = small()
    x = torch.randn(8, 16)
    g = m.program.graph
    ref = dense_eval(g, g.exports["apply"], {"x": x.numpy(), "L": m.L.detach().numpy(), "R": m.R.detach().numpy()})
    np.testing.assert_allclose(m(x).detach().numpy(), ref, atol=1e-5)
    torch.testing.assert_close(m(x), m(x=x))
    target = torch.randn(8, 16)
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.mse_loss(m(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_state_dict_round_trip():
    a, b = small(generator=0), small(generator=1)
    assert set(a.state_dict()) == {"L", "R"}
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 16)
    torch.testing.assert_close(a(x), b(x))
    with pytest.raises(RuntimeError):
        b.load_state_dict({"L": a.L.detach()})


def test_to_dtype_and_device_recompile():
    m = small(generator=0)
    x = torch.randn(5, 16)
    y32 = m(x)
    m.double()
    assert m.L.dtype == torch.float64 and m.program.dtype == "float64"
    y64 = m(x.double())
    assert y64.dtype == torch.float64
    torch.testing.assert_close(y64.float(), y32, atol=1e-5, rtol=1e-5)
    m.to(torch.float32).to("cpu")
    assert m(x).dtype == torch.float32
    with pytest.raises(CallError, match="dtype"):
        m(x.double())


def test_deepcopy_and_pickle():
    m = small(generator=0)
    x = torch.randn(2, 16)
    c = copy.deepcopy(m)
    torch.testing.assert_close(c(x), m(x))
    with torch.no_grad():
        c.L.add_(1.0)
    assert not torch.allclose(c(x), m(x))
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    torch.testing.assert_close(torch.load(buf, weights_only=False)(x), m(x))


def test_torch_compile():
    m = small(generator=0)
    x = torch.randn(4, 16)
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    y = compiled(x)
    torch.testing.assert_close(y, m(x))
    y.square().sum().backward()
    g = m.L.grad.clone()
    m.zero_grad()
    m(x).square().sum().backward()
    torch.testing.assert_close(g, m.L.grad)


def test_inside_a_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), small(), torch.nn.Linear(16, 1))
    n = sum(p.numel() for p in model.parameters())
    assert n == 8 * 16 + 16 + 2 * 4 ** 3 + 16 + 1
    assert model(torch.randn(5, 8)).shape == (5, 1)
    assert "examples/layer.op: apply(x); params L, R" in repr(model)


def test_from_program_and_other_backends():
    prog = opdsl.compile_file(LAYER, dims={"b": 4})
    m = opdsl.torch.Module(prog, generator=0)
    assert m.program is prog
    jprog = opdsl.compile_file(LAYER, backend="numpy", dims={"b": 4})
    m2 = opdsl.torch.Module.from_program(jprog, generator=0)   # recompiled for torch
    torch.testing.assert_close(m2.L, m.L)
    assert m2.program.backend_name == "torch"


def test_errors():
    with pytest.raises(CallError, match="no export named 'nope'"):
        opdsl.torch.Module.from_file(LAYER, "nope")
    with pytest.raises(opdsl.OpdslError, match="free dim"):
        opdsl.torch.Module.from_source("dim n\ninput x : [n]\nparam d : [n]\nexport y = diag(d) @ x")
    with pytest.raises(opdsl.OpdslError, match="cannot read"):
        opdsl.torch.Module.from_file("no/such.op")
    with pytest.raises(opdsl.OpdslError, match="shadow"):
        opdsl.torch.Module.from_source("input x : [3]\nparam train : [3]\nexport y = diag(train) @ x")
    m = small()
    with pytest.raises(CallError, match="takes 1 inputs"):
        m(torch.randn(2, 16), torch.randn(2, 16))
    with pytest.raises(CallError, match="shape"):
        m(torch.randn(2, 15))


def test_training_example_runs_and_writes_its_plot(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "loss.png"
    r = subprocess.run([sys.executable, str(root / "examples" / "train_structured.py"), "--quick", "--out", str(out)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = {ln.split()[0]: ln.split() for ln in r.stdout.splitlines() if ln.startswith(("dense", "monarch"))}
    assert int(rows["dense"][2]) == 256 * 256 + 256 and int(rows["monarch"][2]) == 2 * 16 ** 3 + 256
    assert float(rows["monarch"][3]) > 0                       # step time in ms
    assert "monarch" in r.stderr                               # the tqdm progress bar



def test_a_layer_class_is_named_away_from_the_params():
    """Export w with a param W: the layer class is WLayer, not W (it shadowed the param's name)."""
    prog = opdsl.compile("param W : [3, 3]\ninput x : [3, 2]\nexport w = W @ x", backend="torch")
    assert "class WLayer(torch.nn.Module)" in prog.source

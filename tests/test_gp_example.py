"""examples/gp.op (the exact GP marginal log-likelihood, posterior mean and variance) against numpy
(np.linalg.solve, slogdet, the kernels written out) in float64 on numpy and torch, its gradient by
torch.autograd.gradcheck, and examples/train_gp.py's quick mode in a subprocess (it fits, and its JSON
says so)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import opdsl

from .harness import call
from .test_kernel import gpytorch_kernel

ROOT = Path(__file__).resolve().parent.parent
GP_OP = ROOT / "examples" / "gp.op"
FAMILIES = ("rbf", "matern12", "matern32", "matern52")


def gp_source(family: str) -> str:
    """gp.op with its kernel family replaced (the file's comment says a one-word change is the Matérn prior)."""
    text = GP_OP.read_text()
    assert text.count("rbf,") == 3                   # K, Ksx, Kss: all three must change together
    return text.replace("rbf,", f"{family},")


def gp_reference(family, X, y, Xs, ls, s, noise):
    """(log p(y | X), posterior mean [m, 1], posterior variance [m]) by dense numpy linear algebra."""
    K = gpytorch_kernel(family, X, X, ls, s) + np.diag(noise)
    Ksx = gpytorch_kernel(family, Xs, X, ls, s)
    sign, logdet = np.linalg.slogdet(K)
    assert sign > 0
    mll = -0.5 * (y.T @ np.linalg.solve(K, y)).item() - 0.5 * logdet - 0.5 * len(X) * math.log(2 * math.pi)
    var = np.diag(gpytorch_kernel(family, Xs, Xs, ls, s)) - np.einsum("ij,ji->i", Ksx, np.linalg.solve(K, Ksx.T))
    return mll, Ksx @ np.linalg.solve(K, y), var


def gp_data(n: int, m: int, d: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, (n, d))
    return {"X": X, "y": np.sin(2 * X[:, :1]) + 0.1 * rng.standard_normal((n, 1)), "Xs": rng.uniform(-2.5, 2.5, (m, d)),
            "lengthscale": rng.uniform(0.4, 1.5, d), "outputscale": np.array([1.7]),
            "noise": rng.uniform(0.01, 0.1, n)}      # per point: exercises the [n] noise vector


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_exports_match_numpy(backend, family):
    """One compiled program (n, m, d free) at two sizes, ARD lengthscales in d = 2 and d = 1."""
    prog = opdsl.compile(gp_source(family), backend=backend, dtype="float64", filename=str(GP_OP))
    for n, m, d, seed in ((40, 9, 2, 0), (13, 5, 1, 1)):
        a = gp_data(n, m, d, seed)
        s = a["outputscale"][0]
        mll, mean, var = gp_reference(family, a["X"], a["y"], a["Xs"], a["lengthscale"], s, a["noise"])
        hyper = {k: a[k] for k in ("X", "lengthscale", "outputscale", "noise")}
        out = call(prog, "mll", {**hyper, "y": a["y"]})
        assert out.shape == () and out == pytest.approx(mll, rel=1e-10)
        got_mean = call(prog, "mean", {**hyper, "y": a["y"], "Xs": a["Xs"]})
        np.testing.assert_allclose(got_mean, mean, rtol=1e-9, atol=1e-12)
        got_var = call(prog, "var", {**hyper, "Xs": a["Xs"]})
        np.testing.assert_allclose(got_var, var, rtol=1e-8, atol=1e-12)
        assert (got_var > 0).all() and (got_var <= s).all()      # the posterior variance is below the prior's


def test_mll_gradient_torch():
    """The gradient that train_gp.py follows: d mll / d(lengthscale, outputscale, noise, X) by gradcheck."""
    import torch

    prog = opdsl.compile_file(GP_OP, backend="torch", dtype="float64")
    a = {k: torch.tensor(v, requires_grad=k != "y") for k, v in gp_data(8, 3, 2, seed=2).items() if k != "Xs"}
    names = ("X", "lengthscale", "outputscale", "noise")
    assert torch.autograd.gradcheck(lambda *t: prog.mll(y=a["y"], **dict(zip(names, t))), [a[k] for k in names])


def test_train_gp_quick(tmp_path):
    """train_gp.py --quick fits the toy problem: loss down, noise within 3x of the truth, JSON and plot written."""
    out, png = tmp_path / "gp.json", tmp_path / "gp.png"
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "train_gp.py"), "--quick", "--out", str(out),
                        "--plot", str(png)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(out.read_text())
    assert res["ok"] and len(res["checks"]) == 2 and all(res["checks"].values()), res["checks"]
    assert res["n"] == 100 and len(res["losses"]) == res["steps"] + 1
    assert res["final_loss"] < res["initial_loss"] - 0.5         # from about 0.94 to about 0.13 per point
    assert 1 / 3 < res["noise"] / res["true_noise"] < 3
    assert 0.2 < res["lengthscale"] < 2 and 0.3 < res["outputscale"] < 3   # sin(3x): unit variance, ℓ near 0.6
    assert res["final_nll"] == pytest.approx(res["final_loss"] * res["n"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "lengthscale" in r.stdout and "check: noise within 3x" in r.stdout
